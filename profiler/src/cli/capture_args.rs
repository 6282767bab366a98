//! `headroom capture`'s flags: what to watch, for how long, where the report goes, and how
//! stacks are sampled; and the target they name.

use std::{path::PathBuf, time::Duration};

use clap::{ArgGroup, Args};

use super::{Format, SizingArgs};
use crate::{
    attribution::{
        kubernetes::{parse_pod_name, KubernetesError},
        MetadataSource,
    },
    capture::{NodeOptions, TargetSpec},
    stacks::{naming::InternalFrames, StackSettings, Unwinding},
    units::{parse_bytes, parse_bytes_within, parse_duration},
};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["cgroup", "pid", "pod", "all", "command"])))]
pub struct CaptureArgs {
    /// Watch a pod through the Kubernetes API (KUBECONFIG, ~/.kube/config or in-cluster) and
    /// this node's cgroups: NAMESPACE/POD. With --container, one of its containers.
    #[arg(long, value_name = "NAMESPACE/POD")]
    pub pod: Option<String>,

    /// Watch every cgroup on the node; each is attributed to a container (with pod names
    /// from the Kubernetes API), a host service, or "unattributed" with the reason.
    #[arg(long)]
    pub all: bool,

    /// With --all: where pod names come from.
    #[arg(long, value_enum, default_value_t = MetadataSource::Auto,
          conflicts_with_all = ["cgroup", "pid", "pod", "command"])]
    pub metadata: MetadataSource,

    /// With --all: the node whose pods to watch (default: this host's name).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["cgroup", "pid", "pod", "command"])]
    pub node: Option<String>,

    /// Watch an existing cgroup, by its path as /proc/PID/cgroup shows it (after `0::`).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,

    /// Watch a running process and everything it forks from now on.
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,

    /// Stop after this long (e.g. 30s, 500ms, 5m, 1h); default: until the target exits or
    /// Ctrl-C.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Write the report to FILE ("-" for stdout). Default: stderr for a command (its stdout
    /// is its own), stdout otherwise.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Put this memory limit on the command's cgroup (e.g. 256Mi, 1Gi, 500M, 1048576), to see
    /// how it behaves, and is OOM-killed, under a limit.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes, conflicts_with_all = ["pid", "cgroup"])]
    pub memory_limit: Option<u64>,

    /// Most processes listed in the report; more are counted but not listed. 1 to 1000000.
    #[arg(long, default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_processes: u32,

    #[command(flatten)]
    pub sizing: SizingArgs,

    #[command(flatten)]
    pub stacks: StackArgs,

    /// Ring buffer for mapping, process and stack events: a power of two from 4Ki to 1Gi.
    /// Events that do not fit are counted in the report's `drops` (kernel totals stay exact).
    #[arg(long, value_name = "SIZE", default_value = "4Mi", value_parser = parse_ring_buffer)]
    pub ring_buffer: u32,

    /// With --pod or --cgroup: the running agent's socket to ask for the session (default
    /// /run/headroom/agent.sock when it exists; then no second copy of the probes is loaded).
    #[arg(long, value_name = "PATH", conflicts_with = "standalone")]
    pub agent_socket: Option<PathBuf>,

    /// Load the probes in this process even when an agent is running.
    #[arg(long)]
    pub standalone: bool,

    /// The command to run, and its arguments (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Stack sampling: which code made the memory.
#[derive(Args, Debug, Clone)]
pub struct StackArgs {
    /// Do not sample stacks (no sources by code path, no spike frames, no flame graph).
    #[arg(long, conflicts_with_all = ["flamegraph", "folded", "pprof"])]
    pub no_stacks: bool,

    /// Take one stack per this many bytes faulted in, per process (byte-weighted sampling).
    /// Smaller is finer and costs more. 64Ki to 1Gi.
    #[arg(long, value_name = "SIZE", default_value = "512Ki", value_parser = parse_sample_bytes)]
    pub sample_bytes: u64,

    /// Take a stack for every mmap or brk growth of at least this size. 4Ki to 1Ti.
    #[arg(long, value_name = "SIZE", default_value = "1Mi", value_parser = parse_threshold_bytes)]
    pub reservation_threshold: u64,

    /// How stacks are walked: frame-pointers (in the kernel, cheap; stops at code built
    /// without them, such as Debian's glibc) or eh-frame (copies 8 KiB of stack per sample
    /// and unwinds with .eh_frame in user space; complete, costs more).
    #[arg(long, value_enum, default_value_t = Unwinding::FramePointers, value_name = "HOW")]
    pub unwind: Unwinding,

    /// Distinct stacks kept (more are counted, not kept; so are stacks beyond 1Mi frames in
    /// all). 16 to 65536.
    #[arg(long, default_value_t = 8192, value_name = "N",
          value_parser = clap::value_parser!(u32).range(16..=crate::stacks::MAX_STACKS_LIMIT as i64))]
    pub max_stacks: u32,

    /// Frames that do not name a source, as comma-separated prefixes of module file names
    /// (libc.so) or function names (alloc::, serde_json::); `default` stands for the built-in
    /// list (allocators, libc, core/alloc/std, common collection and serialization crates).
    /// A source is named by the innermost frame outside the list. E.g. default,tokio::
    /// Runs the capture standalone (agent sessions use the built-in list).
    #[arg(long, value_name = "LIST", default_value = "default", value_parser = parse_internal_frames)]
    pub internal_frames: InternalFrames,

    /// Write a flame graph (SVG) of the sampled stacks, widths in bytes.
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,

    /// Write the sampled stacks in folded form (`frame;frame bytes`, for inferno, speedscope
    /// or flamegraph.pl).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<PathBuf>,

    /// Write the sampled stacks as a gzipped pprof profile (profile.proto) for `go tool pprof`,
    /// Pyroscope or Parca: sample types `faulted` (bytes faulted in, the default) and
    /// `reserved` (bytes of large mmap/brk), and the sample count. Written by a standalone
    /// capture: with --pod or --cgroup the probes are loaded here, not asked of the agent.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,
}

impl StackArgs {
    pub fn settings(&self) -> Option<StackSettings> {
        (!self.no_stacks).then_some(StackSettings {
            fault_sample_bytes: self.sample_bytes,
            reservation_threshold_bytes: self.reservation_threshold,
            unwinding: self.unwind,
            max_stacks: self.max_stacks as usize,
            internal_frames: self.internal_frames.clone(),
        })
    }
}

fn parse_internal_frames(text: &str) -> Result<InternalFrames, String> {
    InternalFrames::parse(text).map_err(|err| err.to_string())
}

fn parse_ring_buffer(text: &str) -> Result<u32, String> {
    let bytes = parse_bytes_within(text, 4 << 10, 1 << 30)?;
    if !bytes.is_power_of_two() {
        return Err(format!(
            "{text} is not a power of two (e.g. 64Ki, 4Mi, 16Mi)"
        ));
    }
    u32::try_from(bytes).map_err(|_| format!("{text} is too large"))
}

fn parse_sample_bytes(text: &str) -> Result<u64, String> {
    parse_bytes_within(text, 64 << 10, 1 << 30)
}

fn parse_threshold_bytes(text: &str) -> Result<u64, String> {
    parse_bytes_within(text, 4 << 10, 1 << 40)
}

impl CaptureArgs {
    /// The one target the flags name (clap's `target` group makes sure there is exactly one).
    pub(super) fn target(&self) -> Result<TargetSpec, KubernetesError> {
        if self.all {
            return Ok(TargetSpec::Node(NodeOptions {
                metadata: self.metadata,
                node: self.node.clone(),
            }));
        }
        if let Some(pod) = &self.pod {
            let (namespace, name) = parse_pod_name(pod)?;
            return Ok(TargetSpec::Pod {
                namespace,
                name,
                container: self.sizing.container.clone(),
            });
        }
        Ok(match (&self.cgroup, self.pid) {
            (Some(path), _) => TargetSpec::Cgroup(path.clone()),
            (None, Some(pid)) => TargetSpec::Pid(pid),
            (None, None) => TargetSpec::Command(self.command.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn capture_args(argv: &[&str]) -> Result<CaptureArgs, clap::Error> {
        let cli = Cli::try_parse_from(argv)?;
        match cli.command {
            Command::Capture(args) => Ok(args),
            Command::Recommend(_) | Command::Agent(_) => panic!("not a capture"),
        }
    }

    #[test]
    fn capture_takes_the_command_after_double_dash() {
        let args = capture_args(&[
            "headroom", "capture", "--format", "json", "--", "ls", "--format", "x",
        ])
        .expect("valid");
        assert_eq!(args.command, ["ls", "--format", "x"]);
        assert_eq!(args.format, Format::Json);
        assert_eq!(
            args.target().expect("target"),
            TargetSpec::Command(vec!["ls".into(), "--format".into(), "x".into()])
        );
    }

    #[test]
    fn the_command_must_follow_double_dash() {
        let err = capture_args(&["headroom", "capture", "ls", "-l"]).expect_err("no --");
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn exactly_one_target() {
        let err = capture_args(&["headroom", "capture"]).expect_err("no target");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = capture_args(&["headroom", "capture", "--pid", "1", "--cgroup", "/x"])
            .expect_err("two targets");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let err = capture_args(&["headroom", "capture", "--pid", "1", "--", "true"])
            .expect_err("two targets");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert_eq!(
            capture_args(&["headroom", "capture", "--cgroup", "/a/b"])
                .expect("valid")
                .target()
                .expect("target"),
            TargetSpec::Cgroup("/a/b".into())
        );
    }

    #[test]
    fn pod_and_node_targets() {
        let args = capture_args(&[
            "headroom",
            "capture",
            "--pod",
            "shop/web",
            "--container",
            "app",
        ])
        .expect("valid");
        assert_eq!(
            args.target().expect("target"),
            TargetSpec::Pod {
                namespace: "shop".into(),
                name: "web".into(),
                container: Some("app".into())
            }
        );
        let args = capture_args(&["headroom", "capture", "--pod", "web"]).expect("parses");
        assert!(args
            .target()
            .expect_err("no namespace")
            .to_string()
            .contains("NAMESPACE/POD"));
        let args =
            capture_args(&["headroom", "capture", "--all", "--metadata", "none"]).expect("valid");
        assert!(matches!(
            args.target(),
            Ok(TargetSpec::Node(NodeOptions {
                metadata: MetadataSource::None,
                ..
            }))
        ));
        assert!(
            Cli::try_parse_from(["headroom", "capture", "--metadata", "none", "--", "true"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["headroom", "capture", "--all", "--pid", "3"]).is_err());
    }

    #[test]
    fn bad_flags_are_rejected() {
        for argv in [
            &["headroom", "capture", "--max-processes", "0", "--", "true"][..],
            &["headroom", "capture", "--bogus", "--", "true"],
            &["headroom", "--log-level", "loud", "capture", "--", "true"],
            &["headroom", "capture", "--pid", "0"],
            &["headroom", "capture", "--duration", "0s", "--", "true"],
            &["headroom", "capture", "--duration", "10", "--", "true"],
            &["headroom", "capture", "--format", "xml", "--", "true"],
            &[
                "headroom",
                "capture",
                "--memory-limit",
                "12Qi",
                "--",
                "true",
            ],
            &["headroom", "capture", "--memory-limit", "1Gi", "--pid", "5"],
            &["headroom", "capture", "--max-stacks", "65537", "--", "true"],
            &[
                "headroom",
                "capture",
                "--internal-frames",
                "a,,b",
                "--",
                "true",
            ],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "accepted {argv:?}");
        }
    }

    #[test]
    fn sizes_parse_in_kubernetes_notation() {
        assert_eq!(parse_bytes("256Mi"), Ok(256 << 20));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("8388608"), Ok(8 << 20));
        assert!(parse_bytes("1Ki").expect_err("tiny").contains("below 4Mi"));
        assert!(parse_bytes("99999999999Ti")
            .expect_err("huge")
            .contains("too large"));
        assert!(parse_bytes("Mi").is_err());
    }
}
