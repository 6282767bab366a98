//! Streaming, capped reads of /proc and cgroup files that grow with what a tenant does
//! (/proc/PID/maps and smaps grow with its mappings, cgroup.procs and cgroup.threads with its
//! tasks). A whole-file read of one process's smaps with 65,530 mappings (the default
//! `vm.max_map_count`) is about 50 MB; the agent lives in a 56 MiB cgroup beside that tenant.
//! Here a file is read through a fixed 8 KiB buffer one line at a time, each line at most
//! [`Limits::max_line_bytes`], each file at most [`Limits::max_lines`] lines, and every line
//! is charged to a per-tick [`ReadBudget`]. What is not read is counted by [`Skip`] reason,
//! and the caller learns that its figure is incomplete instead of getting a silent partial sum.

use std::{
    fs::File,
    io::{self, BufRead as _, BufReader},
    ops::ControlFlow,
    path::Path,
};

/// Read buffer of one streamed file: the most a read holds at once, whatever the file's size.
const BUFFER_BYTES: usize = 8 * 1024;

/// Why (part of) a file was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// A line longer than [`Limits::max_line_bytes`] (skipped; the rest of the file is read).
    LineTooLong,
    /// The file had more than [`Limits::max_lines`] lines, or a process more mappings than the
    /// per-process cap: the rest was not read.
    FileCap,
    /// The tick's [`ReadBudget`] ran out: this file (or its rest) waits for a later tick.
    TickBudget,
    /// More processes or thread stacks than a container's cap.
    ProcessCap,
    /// EACCES / EPERM: the agent may not read it (a missing capability, or a hardened /proc).
    Permission,
    /// ENOENT / ESRCH: the process or cgroup went away while it was being read.
    Gone,
    /// Any other I/O error.
    Unreadable,
}

impl Skip {
    /// Every reason, in the order of [`Skips`]' counts.
    pub const ALL: [Skip; 7] = [
        Skip::LineTooLong,
        Skip::FileCap,
        Skip::TickBudget,
        Skip::ProcessCap,
        Skip::Permission,
        Skip::Gone,
        Skip::Unreadable,
    ];

    /// The `reason` label of `headroom_agent_reads_skipped_total`.
    pub fn label(self) -> &'static str {
        match self {
            Skip::LineTooLong => "line_too_long",
            Skip::FileCap => "file_cap",
            Skip::TickBudget => "tick_budget",
            Skip::ProcessCap => "process_cap",
            Skip::Permission => "permission",
            Skip::Gone => "gone",
            Skip::Unreadable => "unreadable",
        }
    }

    /// The reason an I/O error stands for.
    pub fn from_io(err: &io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => Skip::Permission,
            Some(libc::ENOENT | libc::ESRCH) => Skip::Gone,
            _ if err.kind() == io::ErrorKind::NotFound => Skip::Gone,
            _ if err.kind() == io::ErrorKind::PermissionDenied => Skip::Permission,
            _ => Skip::Unreadable,
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&s| s == self).unwrap_or(0)
    }
}

/// Counts of skipped reads by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skips([u64; Skip::ALL.len()]);

impl Skips {
    pub fn add(&mut self, reason: Skip) {
        self.0[reason.index()] += 1;
    }

    pub fn get(&self, reason: Skip) -> u64 {
        self.0[reason.index()]
    }

    /// Every reason with its count (zeros included), for the exporter.
    pub fn by_reason(&self) -> impl Iterator<Item = (Skip, u64)> + '_ {
        Skip::ALL.iter().map(|&reason| (reason, self.get(reason)))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Lines one tick may read from files that grow with a tenant, and what it skipped.
#[derive(Clone, Debug)]
pub struct ReadBudget {
    lines_left: u64,
    pub skips: Skips,
}

impl ReadBudget {
    pub fn new(lines: u64) -> Self {
        Self {
            lines_left: lines,
            skips: Skips::default(),
        }
    }

    /// A budget that never runs out (one-off reads outside the agent's tick).
    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    pub fn exhausted(&self) -> bool {
        self.lines_left == 0
    }

    pub fn lines_left(&self) -> u64 {
        self.lines_left
    }
}

/// Caps of one streamed file.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest line kept; longer ones are skipped whole (a maps path is at most PATH_MAX,
    /// 4096 bytes, plus about 80 bytes of fields).
    pub max_line_bytes: usize,
    /// Most lines read from the file.
    pub max_lines: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_bytes: 4096 + 256,
            max_lines: u64::MAX,
        }
    }
}

/// Reads `path` one line at a time (without its `\n`) into `each` until the file ends, `each`
/// breaks, or a cap or the budget stops it. `Ok(())`: everything `each` wanted was read.
/// `Err(reason)`: the file could not be opened or read, or was cut short; the reason is
/// counted in `budget.skips`. A line too long is skipped and counted, and reading goes on.
pub fn for_each_line(
    path: &Path,
    limits: Limits,
    budget: &mut ReadBudget,
    mut each: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<(), Skip> {
    let fail = |budget: &mut ReadBudget, reason: Skip| {
        budget.skips.add(reason);
        Err(reason)
    };
    if budget.exhausted() {
        return fail(budget, Skip::TickBudget);
    }
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) => return fail(budget, Skip::from_io(&err)),
    };
    let mut reader = BufReader::with_capacity(BUFFER_BYTES, file);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let mut overlong = false;
    let mut lines: u64 = 0;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return fail(budget, Skip::from_io(&err)),
        };
        let at_end = chunk.is_empty();
        let (piece, newline) = match chunk.iter().position(|&b| b == b'\n') {
            Some(end) => (&chunk[..end], true),
            None => (chunk, false),
        };
        if !overlong {
            if line.len() + piece.len() > limits.max_line_bytes {
                overlong = true;
                line.clear();
            } else {
                line.extend_from_slice(piece);
            }
        }
        let used = piece.len() + usize::from(newline);
        reader.consume(used);
        if !(newline || (at_end && (!line.is_empty() || overlong))) {
            if at_end {
                return Ok(());
            }
            continue;
        }
        // One whole line (or the unterminated last one).
        if lines >= limits.max_lines {
            return fail(budget, Skip::FileCap);
        }
        if budget.lines_left == 0 {
            return fail(budget, Skip::TickBudget);
        }
        lines += 1;
        budget.lines_left -= 1;
        if overlong {
            budget.skips.add(Skip::LineTooLong);
            overlong = false;
        } else {
            let text = String::from_utf8_lossy(&line);
            if each(&text).is_break() {
                return Ok(());
            }
        }
        line.clear();
        if at_end {
            return Ok(());
        }
    }
}

/// A small file (status, comm, stat, cgroup) read whole, but at most `max_bytes`: a file that
/// is larger is not what it should be and is refused with [`Skip::FileCap`].
pub fn read_small(path: &Path, max_bytes: u64, skips: &mut Skips) -> Result<String, Skip> {
    use std::io::Read as _;
    let result = File::open(path).and_then(|file| {
        let mut text = String::new();
        file.take(max_bytes + 1).read_to_string(&mut text)?;
        Ok(text)
    });
    let reason = match result {
        Ok(text) if text.len() as u64 <= max_bytes => return Ok(text),
        Ok(_) => Skip::FileCap,
        Err(err) => Skip::from_io(&err),
    };
    skips.add(reason);
    Err(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(tag: &str, text: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("headroom-lines-{tag}-{}", std::process::id()));
        std::fs::write(&path, text).expect("fixture");
        path
    }

    fn collect(
        path: &Path,
        limits: Limits,
        budget: &mut ReadBudget,
    ) -> (Vec<String>, Result<(), Skip>) {
        let mut seen = Vec::new();
        let result = for_each_line(path, limits, budget, |line| {
            seen.push(line.to_owned());
            ControlFlow::Continue(())
        });
        (seen, result)
    }

    #[test]
    fn lines_are_streamed_with_the_last_one_unterminated() {
        let path = fixture("plain", b"a\n\nbb\nccc");
        let mut budget = ReadBudget::unlimited();
        let (seen, result) = collect(&path, Limits::default(), &mut budget);
        assert_eq!(seen, ["a", "", "bb", "ccc"]);
        assert_eq!(result, Ok(()));
        assert_eq!(budget.skips.total(), 0);
        std::fs::remove_file(path).expect("cleanup");
    }

    #[test]
    fn a_long_line_is_skipped_and_counted_and_reading_goes_on() {
        // Longer than the 8 KiB buffer, so it spans several fills.
        let mut text = vec![b'x'; 20_000];
        text.extend_from_slice(b"\nshort\n");
        let path = fixture("long", &text);
        let mut budget = ReadBudget::unlimited();
        let limits = Limits {
            max_line_bytes: 100,
            ..Limits::default()
        };
        let (seen, result) = collect(&path, limits, &mut budget);
        assert_eq!(seen, ["short"]);
        assert_eq!(result, Ok(()));
        assert_eq!(budget.skips.get(Skip::LineTooLong), 1);
        std::fs::remove_file(path).expect("cleanup");
    }

    #[test]
    fn the_file_cap_and_the_tick_budget_cut_reads_short_with_their_reason() {
        let text: String = (0..100).map(|i| format!("{i}\n")).collect();
        let path = fixture("caps", text.as_bytes());
        let mut budget = ReadBudget::unlimited();
        let limits = Limits {
            max_lines: 10,
            ..Limits::default()
        };
        let (seen, result) = collect(&path, limits, &mut budget);
        assert_eq!((seen.len(), result), (10, Err(Skip::FileCap)));
        let mut budget = ReadBudget::new(25);
        let (seen, result) = collect(&path, Limits::default(), &mut budget);
        assert_eq!((seen.len(), result), (25, Err(Skip::TickBudget)));
        assert!(budget.exhausted());
        // An exhausted budget does not even open the next file.
        let (seen, result) = collect(Path::new("/nonexistent"), Limits::default(), &mut budget);
        assert_eq!((seen.len(), result), (0, Err(Skip::TickBudget)));
        assert_eq!(budget.skips.get(Skip::TickBudget), 2);
        std::fs::remove_file(path).expect("cleanup");
    }

    #[test]
    fn missing_files_are_gone_and_small_reads_are_capped() {
        let mut budget = ReadBudget::unlimited();
        let (_, result) = collect(Path::new("/nonexistent/x"), Limits::default(), &mut budget);
        assert_eq!(result, Err(Skip::Gone));
        let path = fixture("small", b"0123456789");
        let mut skips = Skips::default();
        assert_eq!(
            read_small(&path, 10, &mut skips).as_deref(),
            Ok("0123456789")
        );
        assert_eq!(read_small(&path, 9, &mut skips), Err(Skip::FileCap));
        assert_eq!(skips.get(Skip::FileCap), 1);
        assert_eq!(
            Skip::from_io(&io::Error::from_raw_os_error(libc::EACCES)),
            Skip::Permission
        );
        assert_eq!(
            Skip::from_io(&io::Error::from_raw_os_error(libc::ESRCH)),
            Skip::Gone
        );
        std::fs::remove_file(path).expect("cleanup");
    }
}
