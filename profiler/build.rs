//! Builds the eBPF object (profiler-ebpf) for bpfel-unknown-none with aya-build, so that a plain
//! `cargo build` produces a `headroom` binary with its probes embedded.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("profiler crate has no parent directory"))?
        .join("profiler-ebpf");
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    // aya-build reruns on changes under root_dir, which includes the nested common crate.
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "profiler-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed; run `cargo xtask setup` to install bpf-linker, \
         llvm-22-dev and rust-src for the nightly toolchain",
    )
}
