//! The workloads of `overhead` and `stressors` (and the page-fault storm's target, which
//! `sampling` applies to captures): four stress-ng stressors, measured by stress-ng's own
//! bogo-ops per second, and a redis-server on loopback under redis-benchmark, measured in
//! requests per second.

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use super::common::Beside;

/// How long each stress-ng run of `overhead` and `stressors` lasts.
pub(super) const STRESS_SECONDS: u64 = 5;

/// One workload of `overhead` and `stressors`.
pub(super) struct Workload {
    pub(super) name: &'static str,
    /// A column heading for it.
    pub(super) short: &'static str,
    /// stress-ng's arguments; empty for redis-server under redis-benchmark.
    pub(super) args: &'static [&'static str],
    /// The target (issue 8; issue 14 for the pure storm and the exec storm): at most this
    /// fraction of throughput lost with the agent.
    pub(super) target_loss: f64,
}

pub(super) const WORKLOADS: [Workload; 7] = [
    Workload {
        name: "stress-ng --vm (page-fault storm)",
        short: "--vm",
        args: &["--vm", "1", "--vm-bytes", "256M"],
        target_loss: 0.05,
    },
    // The hard case (issue 14): every iteration maps 64 MiB afresh, writes each page once with
    // non-temporal stores (so the faults, not the writes, are the work) and unmaps it.
    Workload {
        name: "stress-ng --vm write64nt (pure page-fault storm)",
        short: "pure faults",
        args: &["--vm", "1", "--vm-bytes", "64M", "--vm-method", "write64nt"],
        target_loss: 0.03,
    },
    // Process start and exit paths (issue 14): fork, exec and exit as fast as they go.
    Workload {
        name: "stress-ng --exec (fork+exec+exit storm)",
        short: "--exec",
        args: &["--exec", "1"],
        target_loss: 0.03,
    },
    Workload {
        name: "stress-ng --mmap",
        short: "--mmap",
        args: &["--mmap", "1", "--mmap-bytes", "4M"],
        target_loss: 0.05,
    },
    Workload {
        name: "stress-ng --pthread (thread churn)",
        short: "--pthread",
        args: &["--pthread", "2"],
        target_loss: 0.05,
    },
    Workload {
        name: "stress-ng --brk",
        short: "--brk",
        args: &["--brk", "1"],
        target_loss: 0.05,
    },
    Workload {
        name: "redis-server under redis-benchmark",
        short: "redis",
        args: &[],
        target_loss: 0.01,
    },
];

/// Stressors stress-ng refuses to run as root ("unsupported"): run as nobody, with its
/// temporary files in the temporary directory.
const UNPRIVILEGED_STRESSORS: [&str; 1] = ["--exec"];

/// Runs one stress-ng stressor and returns its bogo-ops per second (real time).
fn stress(args: &[&str], seconds: u64) -> Result<f64> {
    let temp = std::env::temp_dir();
    let yaml = temp.join(format!("headroom-bench-{}.yaml", std::process::id()));
    let mut command = if args.iter().any(|arg| UNPRIVILEGED_STRESSORS.contains(arg)) {
        let mut setpriv = Command::new("setpriv");
        setpriv
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "stress-ng",
            ])
            .arg("--temp-path")
            .arg(&temp);
        setpriv
    } else {
        Command::new("stress-ng")
    };
    let status = command
        .args(args)
        .args(["--timeout", &format!("{seconds}s"), "--metrics", "--yaml"])
        .arg(&yaml)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running stress-ng")?;
    if !status.success() {
        bail!("stress-ng {args:?} failed with {status}");
    }
    let text = std::fs::read_to_string(&yaml).context("reading stress-ng's metrics")?;
    let _ = std::fs::remove_file(&yaml);
    text.lines()
        .find_map(|line| line.trim().strip_prefix("bogo-ops-per-second-real-time:"))
        .and_then(|value| value.trim().parse().ok())
        .context("stress-ng printed no bogo-ops-per-second-real-time")
}

/// Runs redis-benchmark against a redis-server on loopback; requests per second (SET and GET).
fn redis(port: u16) -> Result<f64> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "--csv"])
        .args(["-n", "200000", "-c", "20", "-d", "1024", "-t", "set,get"])
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rates: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
            (fields.first().is_some_and(|f| *f == "SET" || *f == "GET"))
                .then(|| fields.get(1)?.parse().ok())
                .flatten()
        })
        .collect();
    if rates.len() != 2 {
        bail!("redis-benchmark printed no SET/GET rates: {text}");
    }
    Ok(rates.iter().sum::<f64>() / 2.0)
}

/// A redis-server on loopback for `redis`, stopped on drop.
pub(super) fn start_redis(port: u16) -> Result<Beside> {
    let server = Beside(Some(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?,
    ));
    thread::sleep(Duration::from_secs(1));
    Ok(server)
}

/// Runs one workload of [`WORKLOADS`]; its operations per second.
pub(super) fn run_workload(args: &[&str], redis_port: u16) -> Result<f64> {
    if args.is_empty() {
        redis(redis_port)
    } else {
        stress(args, STRESS_SECONDS)
    }
}
