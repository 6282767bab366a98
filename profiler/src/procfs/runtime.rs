//! Runtime awareness: which language runtime and which allocator a process runs, and the
//! memory ceilings they were given, read from /proc/PID/cmdline, /proc/PID/environ and
//! /proc/PID/maps. A JVM started with `-Xmx2g` that has touched 50 MiB will grow its heap
//! towards 2 GiB under load; what a capture observed says nothing about that, its settings do.
//!
//! Every read is bounded: cmdline and environ at [`MAX_ARGS_BYTES`] each (a process can have
//! megabytes of both), maps streamed one line at a time and at most [`MAX_MAPPINGS_READ`]
//! lines. A file that cannot be read (EACCES for another user's environ, ESRCH/ENOENT when the
//! process went away) is named in [`RuntimeFacts::unknown`] with why: the facts it would have
//! given are unknown, never zero, and nothing here panics.
//!
//! What is detected, and from what:
//! - JVM: argv[0] named `java`, or `libjvm.so` mapped. Its heap ceiling from `-Xmx` or
//!   `-XX:MaxHeapSize` (the last one wins, in the JVM's own order: `JAVA_TOOL_OPTIONS`, then
//!   `JDK_JAVA_OPTIONS` and the command line for the `java` launcher, then `_JAVA_OPTIONS`),
//!   else `-XX:MaxRAMPercentage` of the memory limit.
//! - Go: `GOMEMLIMIT` or `GOGC` in the environment (only Go reads them; the binary itself is
//!   not inspected).
//! - Allocators: `libjemalloc`, `libmimalloc` or `libtcmalloc` mapped; for static builds the
//!   environment variables only that allocator reads (`MALLOC_CONF`/`_RJEM_MALLOC_CONF`,
//!   `MIMALLOC_*`, `TCMALLOC_*`); otherwise glibc malloc when `libc.so.6` is mapped. An
//!   allocator linked into the binary with no such variable set is not seen.
//! - glibc's arena bound: `MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`.

use std::{fs::File, io::Read as _, ops::ControlFlow, path::Path};

use thiserror::Error;

use super::{
    lines::{for_each_line, Limits, ReadBudget, Skip, Skips},
    parse_maps_line, proc_path, reserved_and_threads, MAX_MAPPINGS_READ,
};

/// Most of /proc/PID/cmdline and of /proc/PID/environ read: JVM options come first on the
/// command line, and environments are a few KiB; the rest is cut and said to be.
pub const MAX_ARGS_BYTES: u64 = 64 * 1024;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RuntimeError {
    #[error("`{0}` is not a JVM size (digits with an optional k, m, g or t)")]
    JavaSize(String),
    #[error("`{0}` is not a Go size (digits with an optional B, KiB, MiB, GiB or TiB, or off)")]
    GoSize(String),
    #[error("`{0}` is not a percentage")]
    Percentage(String),
    #[error("`{0}` is not a count")]
    Count(String),
    #[error("/proc/PID/{file} could not be read ({})", reason.label())]
    Unreadable { file: &'static str, reason: Skip },
    #[error("/proc/PID/{file} is longer than {cap} and was read in part")]
    Cut { file: &'static str, cap: String },
}

/// An allocator, as detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    Glibc,
    Jemalloc,
    Mimalloc,
    Tcmalloc,
}

/// A value a process was given, and where it was found (`-Xmx2g on the command line`).
#[derive(Clone, Debug, PartialEq)]
pub struct Setting<T> {
    pub value: T,
    pub from: String,
}

/// A JVM's heap settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JvmFacts {
    /// How the JVM was recognised.
    pub detected_from: String,
    /// `-Xmx` / `-XX:MaxHeapSize`, in bytes.
    pub max_heap: Option<Setting<u64>>,
    /// `-XX:MaxRAMPercentage` (used by the JVM only without a max heap).
    pub max_ram_percentage: Option<Setting<f64>>,
}

impl JvmFacts {
    /// The heap ceiling in force: the max heap, else MaxRAMPercentage of `memory_limit` (the
    /// cgroup's limit, which a container JVM sizes from). None when neither is known.
    pub fn heap_ceiling(&self, memory_limit: Option<u64>) -> Option<u64> {
        if let Some(max_heap) = &self.max_heap {
            return Some(max_heap.value);
        }
        let percentage = self.max_ram_percentage.as_ref()?.value;
        Some((memory_limit? as f64 * percentage / 100.0) as u64)
    }
}

/// A Go program's memory settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GoFacts {
    pub detected_from: String,
    /// `GOMEMLIMIT` in bytes; a value of None means `off` (the same as unset).
    pub memory_limit: Option<Setting<Option<u64>>>,
    /// `GOGC=off`: the heap is only collected when it reaches GOMEMLIMIT.
    pub gc_off: bool,
}

/// What one process runs, as far as its /proc files tell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuntimeFacts {
    /// argv[0]'s file name (empty when the command line was not read or is empty).
    pub command: String,
    pub jvm: Option<JvmFacts>,
    pub go: Option<GoFacts>,
    pub allocator: Option<Setting<Allocator>>,
    /// glibc's arena bound, where set.
    pub arena_max: Option<Setting<u64>>,
    pub threads: Option<u64>,
    /// What could not be read or parsed: the facts above are partial.
    pub unknown: Vec<RuntimeError>,
}

impl RuntimeFacts {
    /// Whether the command line could be read (the process was there and readable).
    pub fn cmdline_read(&self) -> bool {
        !self.unknown.iter().any(|err| {
            matches!(
                err,
                RuntimeError::Unreadable {
                    file: "cmdline",
                    ..
                }
            )
        })
    }
}

/// Libraries found in a process's mappings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    pub libc: bool,
    pub libjvm: bool,
    pub jemalloc: Option<String>,
    pub mimalloc: Option<String>,
    pub tcmalloc: Option<String>,
}

impl Mapped {
    /// Takes one /proc/PID/maps line.
    pub fn line(&mut self, line: &str) {
        let Ok(mapping) = parse_maps_line(line) else {
            return;
        };
        let path = mapping.path.trim_end_matches(" (deleted)");
        let name = path.rsplit('/').next().unwrap_or(path);
        let is_library = |prefix: &str| name.starts_with(prefix) && name.contains(".so");
        if name == "libc.so.6" {
            self.libc = true;
        } else if name == "libjvm.so" {
            self.libjvm = true;
        } else if is_library("libjemalloc") {
            self.jemalloc.get_or_insert_with(|| name.to_owned());
        } else if is_library("libmimalloc") {
            self.mimalloc.get_or_insert_with(|| name.to_owned());
        } else if is_library("libtcmalloc") {
            self.tcmalloc.get_or_insert_with(|| name.to_owned());
        }
    }
}

/// Reads what process `pid` runs from /proc under `root`. Never fails: what could not be read
/// is listed in [`RuntimeFacts::unknown`].
pub fn read_runtime(root: &Path, pid: u32) -> RuntimeFacts {
    let mut unknown = Vec::new();
    let mut read = |file: &'static str| match read_nul_separated(root, pid, file) {
        Ok((items, cut)) => {
            if cut {
                unknown.push(RuntimeError::Cut {
                    file,
                    cap: crate::units::format_bytes(MAX_ARGS_BYTES),
                });
            }
            Some(items)
        }
        Err(err) => {
            unknown.push(err);
            None
        }
    };
    let argv = read("cmdline");
    let env = read("environ");
    let mapped = read_mapped(root, pid).map_err(|err| unknown.push(err)).ok();
    let mut skips = Skips::default();
    let threads = reserved_and_threads(root, pid, &mut skips)
        .map(|(_, threads)| threads)
        .ok();
    let mut facts = runtime_of(
        argv.as_deref().unwrap_or_default(),
        env.as_deref().unwrap_or_default(),
        mapped.as_ref(),
    );
    facts.threads = threads;
    unknown.append(&mut facts.unknown);
    facts.unknown = unknown;
    facts
}

/// [`read_runtime`] from the texts already read: `argv` and `env` as NUL-separated items,
/// `mapped` None when the maps were not read.
pub fn runtime_of(argv: &[String], env: &[String], mapped: Option<&Mapped>) -> RuntimeFacts {
    let env = Environment::of(env);
    let command = argv
        .first()
        .map(|arg0| arg0.rsplit('/').next().unwrap_or(arg0).to_owned())
        .unwrap_or_default();
    let mut unknown = Vec::new();
    let launcher = command == "java";
    let jvm_from = match (launcher, mapped.is_some_and(|m| m.libjvm)) {
        (true, true) => Some("argv[0] is java, libjvm.so mapped"),
        (true, false) => Some("argv[0] is java"),
        (false, true) => Some("libjvm.so mapped"),
        (false, false) => None,
    };
    let jvm = jvm_from.map(|from| jvm_facts(from, launcher, argv, &env, &mut unknown));
    let go = go_facts(&env, &mut unknown);
    let arena_max = arena_max(&env, &mut unknown);
    RuntimeFacts {
        command,
        jvm,
        go,
        allocator: allocator(mapped, &env),
        arena_max,
        threads: None,
        unknown,
    }
}

/// The environment variables runtime detection reads (the rest is not kept).
#[derive(Debug, Default)]
struct Environment<'a> {
    java_tool_options: Option<&'a str>,
    jdk_java_options: Option<&'a str>,
    java_options: Option<&'a str>,
    gomemlimit: Option<&'a str>,
    gogc: Option<&'a str>,
    malloc_arena_max: Option<&'a str>,
    glibc_tunables: Option<&'a str>,
    /// The first jemalloc, mimalloc or tcmalloc variable set, by name.
    jemalloc_var: Option<&'a str>,
    mimalloc_var: Option<&'a str>,
    tcmalloc_var: Option<&'a str>,
}

impl<'a> Environment<'a> {
    fn of(vars: &'a [String]) -> Self {
        let mut env = Self::default();
        for var in vars {
            let Some((name, value)) = var.split_once('=') else {
                continue;
            };
            let slot = match name {
                "JAVA_TOOL_OPTIONS" => &mut env.java_tool_options,
                "JDK_JAVA_OPTIONS" => &mut env.jdk_java_options,
                "_JAVA_OPTIONS" => &mut env.java_options,
                "GOMEMLIMIT" => &mut env.gomemlimit,
                "GOGC" => &mut env.gogc,
                "MALLOC_ARENA_MAX" => &mut env.malloc_arena_max,
                "GLIBC_TUNABLES" => &mut env.glibc_tunables,
                // jemalloc reads MALLOC_CONF (unprefixed builds) and _RJEM_MALLOC_CONF (the
                // prefixed build of Rust's tikv-jemallocator); glibc reads neither.
                "MALLOC_CONF" | "_RJEM_MALLOC_CONF" => {
                    env.jemalloc_var.get_or_insert(name);
                    continue;
                }
                _ if name.starts_with("MIMALLOC_") => {
                    env.mimalloc_var.get_or_insert(name);
                    continue;
                }
                _ if name.starts_with("TCMALLOC_") => {
                    env.tcmalloc_var.get_or_insert(name);
                    continue;
                }
                _ => continue,
            };
            *slot = Some(value);
        }
        env
    }
}

/// The JVM's options in the order it applies them (later ones win): JAVA_TOOL_OPTIONS, then
/// for the `java` launcher JDK_JAVA_OPTIONS and the command line up to the main class, then
/// _JAVA_OPTIONS. Each with where it came from.
fn jvm_options<'a>(
    launcher: bool,
    argv: &'a [String],
    env: &Environment<'a>,
) -> Vec<(&'a str, &'static str)> {
    let words = |text: Option<&'a str>, from: &'static str| {
        text.into_iter()
            .flat_map(str::split_whitespace)
            .map(move |word| (word, from))
    };
    let mut options: Vec<(&str, &str)> =
        words(env.java_tool_options, "in JAVA_TOOL_OPTIONS").collect();
    if launcher {
        options.extend(words(env.jdk_java_options, "in JDK_JAVA_OPTIONS"));
        options.extend(
            launcher_options(argv.get(1..).unwrap_or_default())
                .map(|option| (option, "on the command line")),
        );
    }
    options.extend(words(env.java_options, "in _JAVA_OPTIONS"));
    options
}

/// The `java` launcher's own options: everything before the main class, `-jar FILE` or
/// `-m MODULE`; what follows belongs to the program (`java -jar app.jar -Xmx4g` gives the
/// program, not the JVM, `-Xmx4g`).
fn launcher_options(args: &[String]) -> impl Iterator<Item = &str> {
    // Launcher options whose value is the next argument.
    const TAKES_VALUE: [&str; 12] = [
        "-cp",
        "-classpath",
        "--class-path",
        "-p",
        "--module-path",
        "--upgrade-module-path",
        "--add-modules",
        "--add-reads",
        "--add-exports",
        "--add-opens",
        "--limit-modules",
        "--patch-module",
    ];
    let mut skip_value = false;
    let mut done = false;
    args.iter().map(String::as_str).filter(move |arg| {
        if done {
            return false;
        }
        if skip_value {
            skip_value = false;
            return false;
        }
        if matches!(*arg, "-jar" | "-m" | "--module") || !arg.starts_with('-') {
            done = true;
            return false;
        }
        skip_value = TAKES_VALUE.contains(arg);
        !skip_value
    })
}

fn jvm_facts(
    detected_from: &str,
    launcher: bool,
    argv: &[String],
    env: &Environment<'_>,
    unknown: &mut Vec<RuntimeError>,
) -> JvmFacts {
    let mut facts = JvmFacts {
        detected_from: detected_from.to_owned(),
        ..JvmFacts::default()
    };
    for (option, from) in jvm_options(launcher, argv, env) {
        let size = option
            .strip_prefix("-Xmx")
            .or_else(|| option.strip_prefix("-XX:MaxHeapSize="));
        if let Some(size) = size {
            match parse_java_size(size) {
                Ok(bytes) => {
                    facts.max_heap = Some(Setting {
                        value: bytes,
                        from: format!("{option} {from}"),
                    });
                }
                Err(err) => unknown.push(err),
            }
        } else if let Some(percent) = option.strip_prefix("-XX:MaxRAMPercentage=") {
            match parse_percentage(percent) {
                Ok(value) => {
                    facts.max_ram_percentage = Some(Setting {
                        value,
                        from: format!("{option} {from}"),
                    });
                }
                Err(err) => unknown.push(err),
            }
        }
    }
    facts
}

fn go_facts(env: &Environment<'_>, unknown: &mut Vec<RuntimeError>) -> Option<GoFacts> {
    let detected_from = match (env.gomemlimit, env.gogc) {
        (Some(_), _) => "GOMEMLIMIT in the environment",
        (None, Some(_)) => "GOGC in the environment",
        (None, None) => return None,
    };
    let memory_limit = env.gomemlimit.and_then(|text| match parse_go_size(text) {
        Ok(bytes) => Some(Setting {
            value: bytes,
            from: format!("GOMEMLIMIT={text} in the environment"),
        }),
        Err(err) => {
            unknown.push(err);
            None
        }
    });
    Some(GoFacts {
        detected_from: detected_from.to_owned(),
        memory_limit,
        gc_off: env.gogc.is_some_and(|gogc| gogc.trim() == "off"),
    })
}

fn arena_max(env: &Environment<'_>, unknown: &mut Vec<RuntimeError>) -> Option<Setting<u64>> {
    // glibc applies the tunable first and MALLOC_ARENA_MAX over it.
    let tunable = env.glibc_tunables.and_then(|tunables| {
        tunables
            .split(':')
            .find_map(|pair| pair.strip_prefix("glibc.malloc.arena_max="))
    });
    let (text, from) = match (env.malloc_arena_max, tunable) {
        (Some(text), _) => (text, format!("MALLOC_ARENA_MAX={text}")),
        (None, Some(text)) => (
            text,
            format!("glibc.malloc.arena_max={text} in GLIBC_TUNABLES"),
        ),
        (None, None) => return None,
    };
    match text.trim().parse::<u64>() {
        Ok(value) => Some(Setting { value, from }),
        Err(_) => {
            unknown.push(RuntimeError::Count(text.to_owned()));
            None
        }
    }
}

/// The allocator: a library mapped names it; without one, a variable only that allocator
/// reads hints at a static build; otherwise glibc malloc when libc.so.6 is mapped.
fn allocator(mapped: Option<&Mapped>, env: &Environment<'_>) -> Option<Setting<Allocator>> {
    let found = |value, from: String| Some(Setting { value, from });
    if let Some(mapped) = mapped {
        let libraries = [
            (Allocator::Jemalloc, &mapped.jemalloc),
            (Allocator::Mimalloc, &mapped.mimalloc),
            (Allocator::Tcmalloc, &mapped.tcmalloc),
        ];
        for (kind, library) in libraries {
            if let Some(name) = library {
                return found(kind, format!("{name} mapped"));
            }
        }
    }
    let hints = [
        (Allocator::Jemalloc, env.jemalloc_var),
        (Allocator::Mimalloc, env.mimalloc_var),
        (Allocator::Tcmalloc, env.tcmalloc_var),
    ];
    for (kind, var) in hints {
        if let Some(var) = var {
            return found(
                kind,
                format!("{var} in the environment, which only this allocator reads (a static build; no library mapped)"),
            );
        }
    }
    mapped.filter(|m| m.libc).and_then(|_| {
        found(
            Allocator::Glibc,
            "libc.so.6 mapped, no other allocator mapped or configured; one linked into the binary is not seen".to_owned(),
        )
    })
}

/// A HotSpot size: digits and an optional k, m, g or t (either case); no suffix is bytes.
pub fn parse_java_size(text: &str) -> Result<u64, RuntimeError> {
    let bad = || RuntimeError::JavaSize(text.to_owned());
    let (digits, shift) = match text.char_indices().last() {
        Some((at, unit)) if unit.is_ascii_alphabetic() => {
            let shift = match unit.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                _ => return Err(bad()),
            };
            (&text[..at], shift)
        }
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let value: u64 = digits.parse().map_err(|_| bad())?;
    value.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// A Go byte count as `GOMEMLIMIT` takes it: digits and an optional B, KiB, MiB, GiB or TiB
/// (case-sensitive, as Go reads it), or `off` (None: no limit).
pub fn parse_go_size(text: &str) -> Result<Option<u64>, RuntimeError> {
    let bad = || RuntimeError::GoSize(text.to_owned());
    if text == "off" {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return Err(bad()),
    };
    let value: u64 = digits.parse().map_err(|_| bad())?;
    value.checked_mul(1u64 << shift).map(Some).ok_or_else(bad)
}

/// A percentage as `-XX:MaxRAMPercentage` takes it: 0 to 100, decimals allowed.
pub fn parse_percentage(text: &str) -> Result<f64, RuntimeError> {
    text.parse::<f64>()
        .ok()
        .filter(|value| (0.0..=100.0).contains(value))
        .ok_or_else(|| RuntimeError::Percentage(text.to_owned()))
}

/// The first [`MAX_ARGS_BYTES`] of a NUL-separated /proc/PID file as strings, and whether the
/// file was longer (its last, partial item is then dropped).
fn read_nul_separated(
    root: &Path,
    pid: u32,
    file: &'static str,
) -> Result<(Vec<String>, bool), RuntimeError> {
    let mut bytes = Vec::new();
    File::open(proc_path(root, Some(pid), file))
        .and_then(|handle| handle.take(MAX_ARGS_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|err| RuntimeError::Unreadable {
            file,
            reason: Skip::from_io(&err),
        })?;
    let cut = bytes.len() as u64 > MAX_ARGS_BYTES;
    bytes.truncate(MAX_ARGS_BYTES as usize);
    let mut items: Vec<String> = bytes
        .split(|&b| b == 0)
        .map(|item| String::from_utf8_lossy(item).into_owned())
        .collect();
    // A complete file ends in a NUL (an empty last item); a cut one in a partial item.
    if cut || items.last().is_some_and(String::is_empty) {
        items.pop();
    }
    Ok((items, cut))
}

/// The libraries of /proc/PID/maps, streamed under [`MAX_MAPPINGS_READ`] lines.
fn read_mapped(root: &Path, pid: u32) -> Result<Mapped, RuntimeError> {
    let mut mapped = Mapped::default();
    let limits = Limits {
        max_lines: MAX_MAPPINGS_READ,
        ..Limits::default()
    };
    let result = for_each_line(
        &proc_path(root, Some(pid), "maps"),
        limits,
        &mut ReadBudget::unlimited(),
        |line| {
            mapped.line(line);
            ControlFlow::Continue(())
        },
    );
    match result {
        Ok(()) => Ok(mapped),
        // Past the cap: what was read still names libraries (they are mapped early, low).
        Err(Skip::FileCap) => Ok(mapped),
        Err(reason) => Err(RuntimeError::Unreadable {
            file: "maps",
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn java_sizes_take_kmgt_in_either_case() {
        assert_eq!(parse_java_size("2g"), Ok(2 << 30));
        assert_eq!(parse_java_size("2G"), Ok(2 << 30));
        assert_eq!(parse_java_size("512m"), Ok(512 << 20));
        assert_eq!(parse_java_size("512M"), Ok(512 << 20));
        assert_eq!(parse_java_size("64k"), Ok(64 << 10));
        assert_eq!(parse_java_size("1t"), Ok(1 << 40));
        assert_eq!(parse_java_size("1048576"), Ok(1 << 20));
        for bad in ["", "g", "2x", "1.5g", "-1g", "2gb", "99999999999999999999"] {
            assert!(parse_java_size(bad).is_err(), "{bad}");
        }
        assert!(parse_java_size("99999999999t").is_err(), "overflow");
    }

    #[test]
    fn go_sizes_take_binary_units_or_off() {
        assert_eq!(parse_go_size("1GiB"), Ok(Some(1 << 30)));
        assert_eq!(parse_go_size("750MiB"), Ok(Some(750 << 20)));
        assert_eq!(parse_go_size("64KiB"), Ok(Some(64 << 10)));
        assert_eq!(parse_go_size("2TiB"), Ok(Some(2 << 40)));
        assert_eq!(parse_go_size("1000B"), Ok(Some(1000)));
        assert_eq!(parse_go_size("1000"), Ok(Some(1000)));
        assert_eq!(parse_go_size("off"), Ok(None));
        for bad in ["", "1gib", "1GB", "1G", "1.5GiB", "-1MiB", "OFF", "MiB"] {
            assert!(parse_go_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentages_are_zero_to_a_hundred() {
        assert_eq!(parse_percentage("75"), Ok(75.0));
        assert_eq!(parse_percentage("12.5"), Ok(12.5));
        assert!(parse_percentage("150").is_err());
        assert!(parse_percentage("x").is_err());
    }

    #[test]
    fn the_jvm_takes_its_options_in_order_up_to_the_main_class() {
        let argv = strings(&[
            "/usr/bin/java",
            "-cp",
            "-Xmx9g",
            "-Xms1g",
            "-Xmx2G",
            "-jar",
            "app.jar",
            "-Xmx64g",
        ]);
        let facts = runtime_of(&argv, &[], None);
        let jvm = facts.jvm.expect("a JVM");
        assert_eq!(jvm.detected_from, "argv[0] is java");
        let heap = jvm.max_heap.expect("a max heap");
        // -Xmx9g is the class path's value, -Xmx64g the program's argument.
        assert_eq!(heap.value, 2 << 30);
        assert_eq!(heap.from, "-Xmx2G on the command line");
        // _JAVA_OPTIONS comes after the command line; JAVA_TOOL_OPTIONS before it.
        let env = strings(&[
            "JAVA_TOOL_OPTIONS=-Xmx8g",
            "_JAVA_OPTIONS=-XX:MaxHeapSize=3g",
        ]);
        let jvm = runtime_of(&argv, &env, None).jvm.expect("a JVM");
        assert_eq!(jvm.max_heap.map(|h| h.value), Some(3 << 30));
        let jvm = runtime_of(&strings(&["java", "Main"]), &env[..1], None)
            .jvm
            .expect("a JVM");
        let heap = jvm.max_heap.expect("from the environment");
        assert_eq!(
            (heap.value, heap.from.as_str()),
            (8 << 30, "-Xmx8g in JAVA_TOOL_OPTIONS")
        );
    }

    #[test]
    fn max_ram_percentage_sizes_the_heap_from_the_limit() {
        let env = strings(&["JDK_JAVA_OPTIONS=-XX:MaxRAMPercentage=75.0 -Xss1m"]);
        let jvm = runtime_of(&strings(&["java", "Main"]), &env, None)
            .jvm
            .expect("a JVM");
        assert_eq!(jvm.max_ram_percentage.as_ref().map(|p| p.value), Some(75.0));
        assert_eq!(jvm.heap_ceiling(Some(1 << 30)), Some(768 << 20));
        assert_eq!(jvm.heap_ceiling(None), None);
        // An embedded JVM (libjvm.so mapped, another launcher): its argv are not JVM options,
        // and JDK_JAVA_OPTIONS is read by the java launcher only.
        let mapped = Mapped {
            libjvm: true,
            libc: true,
            ..Mapped::default()
        };
        let facts = runtime_of(&strings(&["elasticsearch", "-Xmx4g"]), &env, Some(&mapped));
        let jvm = facts.jvm.expect("a JVM");
        assert_eq!(jvm.detected_from, "libjvm.so mapped");
        assert_eq!((jvm.max_heap, jvm.max_ram_percentage), (None, None));
        assert_eq!(facts.allocator.map(|a| a.value), Some(Allocator::Glibc));
    }

    #[test]
    fn a_bad_size_is_unknown_not_zero() {
        let facts = runtime_of(&strings(&["java", "-Xmxlots", "Main"]), &[], None);
        assert_eq!(facts.jvm.expect("a JVM").max_heap, None);
        assert_eq!(
            facts.unknown,
            vec![RuntimeError::JavaSize("lots".to_owned())]
        );
        let facts = runtime_of(&[], &strings(&["GOMEMLIMIT=2GB"]), None);
        let go = facts.go.expect("Go");
        assert_eq!(go.memory_limit, None);
        assert!(matches!(facts.unknown[0], RuntimeError::GoSize(_)));
    }

    #[test]
    fn go_settings_come_from_the_environment() {
        let env = strings(&["PATH=/bin", "GOMEMLIMIT=1GiB", "GOGC=off"]);
        let go = runtime_of(&strings(&["/app/server"]), &env, None)
            .go
            .expect("Go");
        assert_eq!(go.detected_from, "GOMEMLIMIT in the environment");
        let limit = go.memory_limit.expect("a limit");
        assert_eq!(limit.value, Some(1 << 30));
        assert_eq!(limit.from, "GOMEMLIMIT=1GiB in the environment");
        assert!(go.gc_off);
        let go = runtime_of(&[], &strings(&["GOMEMLIMIT=off"]), None)
            .go
            .expect("Go");
        assert_eq!(go.memory_limit.map(|l| l.value), Some(None));
        assert!(runtime_of(&[], &strings(&["HOME=/"]), None).go.is_none());
    }

    #[test]
    fn allocators_from_mappings_then_environment_then_libc() {
        let mut mapped = Mapped::default();
        for line in [
            "7f00-7f10 r-xp 0 fe:01 12 /usr/lib/x86_64-linux-gnu/libc.so.6",
            "7f20-7f30 r-xp 0 fe:01 13 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            "7f40-7f50 r-xp 0 fe:01 14 /opt/jdk/lib/server/libjvm.so (deleted)",
            "garbage",
        ] {
            mapped.line(line);
        }
        assert!(mapped.libc && mapped.libjvm);
        let facts = runtime_of(&strings(&["svc"]), &[], Some(&mapped));
        let allocator = facts.allocator.expect("an allocator");
        assert_eq!(allocator.value, Allocator::Jemalloc);
        assert_eq!(allocator.from, "libjemalloc.so.2 mapped");
        assert!(facts.jvm.is_some());

        let libc_only = Mapped {
            libc: true,
            ..Mapped::default()
        };
        let glibc = runtime_of(&[], &[], Some(&libc_only))
            .allocator
            .expect("glibc");
        assert_eq!(glibc.value, Allocator::Glibc);
        // A static jemalloc (Rust's tikv-jemallocator) with its configuration variable set.
        let env = strings(&["_RJEM_MALLOC_CONF=background_thread:true"]);
        let hinted = runtime_of(&[], &env, Some(&libc_only))
            .allocator
            .expect("jemalloc");
        assert_eq!(hinted.value, Allocator::Jemalloc);
        assert!(hinted
            .from
            .starts_with("_RJEM_MALLOC_CONF in the environment"));
        let env = strings(&["MIMALLOC_ARENA_EAGER_COMMIT=1"]);
        assert_eq!(
            runtime_of(&[], &env, None).allocator.map(|a| a.value),
            Some(Allocator::Mimalloc)
        );
        // Nothing mapped, nothing set: unknown, not glibc.
        assert_eq!(runtime_of(&[], &[], None).allocator, None);
    }

    #[test]
    fn arena_max_from_its_variable_or_the_tunable() {
        let facts = runtime_of(&[], &strings(&["MALLOC_ARENA_MAX=2"]), None);
        assert_eq!(facts.arena_max.map(|a| a.value), Some(2));
        let env =
            strings(&["GLIBC_TUNABLES=glibc.malloc.trim_threshold=1:glibc.malloc.arena_max=4"]);
        let arena = runtime_of(&[], &env, None).arena_max.expect("the tunable");
        assert_eq!(arena.value, 4);
        assert!(arena.from.contains("GLIBC_TUNABLES"));
        let facts = runtime_of(&[], &strings(&["MALLOC_ARENA_MAX=many"]), None);
        assert_eq!(facts.arena_max, None);
        assert_eq!(facts.unknown, vec![RuntimeError::Count("many".to_owned())]);
    }

    #[test]
    fn reads_are_bounded_and_unreadable_files_are_unknown() {
        let root = std::env::temp_dir().join(format!("headroom-runtime-{}", std::process::id()));
        std::fs::create_dir_all(root.join("proc/9")).expect("fixture");
        std::fs::write(
            root.join("proc/9/cmdline"),
            b"/opt/jdk/bin/java\0-Xmx2g\0Main\0",
        )
        .expect("fixture");
        // An environment longer than the cap: read in part, and said to be.
        let mut environ = b"GOMEMLIMIT=512MiB\0".to_vec();
        environ.extend(std::iter::repeat_n(b'x', MAX_ARGS_BYTES as usize + 10));
        std::fs::write(root.join("proc/9/environ"), &environ).expect("fixture");
        std::fs::write(
            root.join("proc/9/maps"),
            "1000-2000 r-xp 0 fe:01 5 /usr/lib/libc.so.6\n",
        )
        .expect("fixture");
        std::fs::write(root.join("proc/9/status"), "VmSize:\t8 kB\nThreads:\t12\n")
            .expect("fixture");
        let facts = read_runtime(&root, 9);
        assert_eq!(facts.command, "java");
        assert_eq!(
            facts
                .jvm
                .as_ref()
                .and_then(|j| j.max_heap.as_ref())
                .map(|h| h.value),
            Some(2 << 30)
        );
        assert_eq!(
            facts
                .go
                .clone()
                .and_then(|g| g.memory_limit)
                .and_then(|l| l.value),
            Some(512 << 20)
        );
        assert_eq!(facts.threads, Some(12));
        assert_eq!(
            facts.allocator.as_ref().map(|a| a.value),
            Some(Allocator::Glibc)
        );
        assert!(matches!(
            facts.unknown[..],
            [RuntimeError::Cut {
                file: "environ",
                ..
            }]
        ));
        assert!(facts.cmdline_read());

        // A process that went away: every file is unknown, with why, and nothing is zero.
        let gone = read_runtime(&root, 10);
        assert!(!gone.cmdline_read());
        assert_eq!(
            (gone.jvm, gone.go, gone.allocator, gone.threads),
            (None, None, None, None)
        );
        assert_eq!(gone.unknown.len(), 3);
        assert!(gone.unknown.iter().all(|err| matches!(
            err,
            RuntimeError::Unreadable {
                reason: Skip::Gone,
                ..
            }
        )));
        assert_eq!(
            gone.unknown[1].to_string(),
            "/proc/PID/environ could not be read (gone)"
        );
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn another_users_environ_is_unknown_not_a_panic() {
        // Real /proc: pid 1's environ needs CAP_SYS_PTRACE over it; unprivileged that is
        // EACCES, as root it reads. Either way, no panic and a named outcome.
        let facts = read_runtime(Path::new("/"), 1);
        let environ_unknown = facts.unknown.iter().any(|err| {
            matches!(
                err,
                RuntimeError::Unreadable {
                    file: "environ",
                    reason: Skip::Permission
                }
            )
        });
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(root || environ_unknown, "{:?}", facts.unknown);
    }
}
