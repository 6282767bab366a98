//! Installs and checks what building headroom's eBPF programs needs. Idempotent: each step
//! says what it checks and skips what is already in place.
//!
//! The pieces (see shared TOOLCHAIN notes): Debian's llvm-22-dev, bpf-linker 0.13.0 built
//! against LLVM 22 (its default feature targets LLVM 23), and rust-src for the nightly
//! toolchain that builds the eBPF crate with `-Z build-std=core`. bpf-linker's LLVM must have
//! the same major version as the nightly rustc's, or linking fails in obscure ways.

use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

/// The toolchain aya-build uses for the eBPF crate (aya_build::Toolchain::default()).
const EBPF_TOOLCHAIN: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages: LLVM for bpf-linker; static libc and gcc for the test workloads; stress-ng,
/// redis-server and redis-tools for the tests that run real programs no one here wrote;
/// prometheus for the cluster-wide recommendation test against a real server; golang-go for
/// `go tool pprof`, the real client that reads the `--pprof` export in the stacks tests.
const APT_PACKAGES: [&str; 8] = [
    "llvm-22-dev",
    "libc6-dev",
    "gcc",
    "stress-ng",
    "redis-server",
    "redis-tools",
    "prometheus",
    "golang-go",
];

/// What setup found, for later steps.
pub struct Toolchain {
    pub ebpf_toolchain: String,
}

fn step(message: &str) {
    eprintln!("[setup] {message}");
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn output(command: &mut Command) -> Option<String> {
    let out = command.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_checked(command: &mut Command) -> Result<()> {
    let description = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {description}"))?;
    if !status.success() {
        bail!("{description} failed with {status}");
    }
    Ok(())
}

pub fn run() -> Result<Toolchain> {
    ensure_apt_packages()?;
    let rustc_llvm = ensure_ebpf_toolchain()?;
    ensure_bpf_linker(rustc_llvm)?;
    step("ready");
    Ok(Toolchain {
        ebpf_toolchain: EBPF_TOOLCHAIN.to_owned(),
    })
}

fn package_installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.trim() == "install ok installed")
}

fn ensure_apt_packages() -> Result<()> {
    ensure_packages(&APT_PACKAGES)
}

/// Installs the Debian packages that are missing (as root, apt-get update first).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            let installed = package_installed(package);
            if installed {
                step(&format!("{package}: already installed"));
            }
            !installed
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if output(Command::new("apt-get").arg("--version")).is_none() {
        bail!(
            "{list} missing and apt-get is not available: this setup targets Debian/Ubuntu. \
             Install LLVM 22 development files, gcc and static glibc with your package manager, \
             then rerun"
        );
    }
    if !is_root() {
        bail!("{list} missing, and installing them with apt-get needs root: rerun as root");
    }
    step(&format!(
        "{list}: installing with apt-get (apt-get update first)"
    ));
    run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Checks the eBPF toolchain and its rust-src; returns its LLVM major version.
fn ensure_ebpf_toolchain() -> Result<u32> {
    let verbose_version = output(
        Command::new("rustc").args([&format!("+{EBPF_TOOLCHAIN}"), "-vV"]),
    )
    .with_context(|| {
        format!(
            "the `{EBPF_TOOLCHAIN}` Rust toolchain is missing. It must be the one this machine \
                 image ships (1.97.0-nightly, LLVM 22): a newer nightly uses LLVM 23, which \
                 bpf-linker cannot match on Debian. Do not run `rustup update`"
        )
    })?;
    let llvm_major = llvm_major_of_rustc(&verbose_version).with_context(|| {
        format!("cannot read the LLVM version from `rustc +{EBPF_TOOLCHAIN} -vV`")
    })?;
    step(&format!("rustc +{EBPF_TOOLCHAIN}: LLVM {llvm_major}"));

    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        EBPF_TOOLCHAIN,
    ]))
    .unwrap_or_default();
    if installed.lines().any(|line| line.starts_with("rust-src")) {
        step(&format!("rust-src for {EBPF_TOOLCHAIN}: already installed"));
    } else {
        step(&format!("rust-src for {EBPF_TOOLCHAIN}: installing"));
        run_checked(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ]))?;
    }
    Ok(llvm_major)
}

fn llvm_major_of_rustc(verbose_version: &str) -> Option<u32> {
    verbose_version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|version| version.split('.').next())
        .and_then(|major| major.trim().parse().ok())
}

/// The LLVM major version a bpf-linker binary links against, from its libLLVM dependency.
fn llvm_major_of_bpf_linker() -> Option<u32> {
    let path = output(Command::new("sh").args(["-c", "command -v bpf-linker"]))?;
    let libraries = output(Command::new("ldd").arg(path.trim()))?;
    libraries.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("libLLVM")?;
        let digits: String = rest
            .trim_start_matches(['.', '-', 's', 'o'])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    })
}

fn bpf_linker_version() -> Option<String> {
    output(Command::new("bpf-linker").arg("--version"))
        .and_then(|text| text.split_whitespace().nth(1).map(str::to_owned))
}

fn ensure_bpf_linker(rustc_llvm: u32) -> Result<()> {
    let current = bpf_linker_version();
    let linked = llvm_major_of_bpf_linker();
    if current.as_deref() == Some(BPF_LINKER_VERSION) && linked == Some(rustc_llvm) {
        step(&format!(
            "bpf-linker {BPF_LINKER_VERSION} (LLVM {rustc_llvm}): already installed"
        ));
        return Ok(());
    }
    step(&format!(
        "bpf-linker: found {} linked to LLVM {}; installing {BPF_LINKER_VERSION} for LLVM {rustc_llvm} \
         (cargo install, about a minute)",
        current.as_deref().unwrap_or("none"),
        linked.map_or_else(|| "?".to_owned(), |major| major.to_string()),
    ));
    let llvm_prefix = format!("/usr/lib/llvm-{rustc_llvm}");
    if !std::path::Path::new(&llvm_prefix)
        .join("bin/llvm-config")
        .exists()
    {
        bail!(
            "{llvm_prefix}/bin/llvm-config is missing: bpf-linker must be built against LLVM \
             {rustc_llvm}, the version of rustc +{EBPF_TOOLCHAIN}; install llvm-{rustc_llvm}-dev"
        );
    }
    // Without LLVM_PREFIX the build picks /usr/bin/llvm-config (LLVM 14 on bookworm) and fails
    // at link time; the default feature targets LLVM 23, hence --no-default-features.
    run_checked(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--force"])
            .args(["--version", BPF_LINKER_VERSION, "--no-default-features"])
            .args(["--features", &format!("llvm-{rustc_llvm}")])
            .env("LLVM_PREFIX", &llvm_prefix),
    )?;
    match llvm_major_of_bpf_linker() {
        Some(major) if major == rustc_llvm => {
            step(&format!(
                "bpf-linker {BPF_LINKER_VERSION} (LLVM {major}): installed"
            ));
            Ok(())
        }
        other => bail!(
            "bpf-linker links LLVM {} but rustc +{EBPF_TOOLCHAIN} uses LLVM {rustc_llvm}; they \
             must match. Check that ~/.cargo/bin is first in PATH and libllvm{rustc_llvm} is \
             installed",
            other.map_or_else(|| "?".to_owned(), |major| major.to_string())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_major_from_rustc() {
        let text = "rustc 1.97.0-nightly\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major_of_rustc(text), Some(22));
        assert_eq!(llvm_major_of_rustc("rustc 1.0\n"), None);
    }
}
