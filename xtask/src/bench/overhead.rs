//! Part `overhead`: the throughput each workload of [`WORKLOADS`] keeps with the headroom
//! agent attached, against nothing attached and against a bpftrace script that traces the same
//! events naively (one probe and one output record per event, no in-kernel aggregation). The
//! three configurations run in rotating order; the section gives medians and their ratios to
//! the run with nothing attached, judged against each workload's target.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use super::{
    common::{http_ready, Beside},
    medians, rotating, rounds, verdict,
    workloads::{run_workload, start_redis, Workload, STRESS_SECONDS, WORKLOADS},
};
use crate::setup;

/// The naive baseline: every event printed, nothing aggregated in the kernel.
const NAIVE_SCRIPT: &str = r#"
tracepoint:kmem:rss_stat { printf("rss %d %d %d\n", pid, args->member, args->size); }
tracepoint:syscalls:sys_enter_mmap { printf("mmap %d %d\n", pid, args->len); }
tracepoint:syscalls:sys_exit_mmap { printf("mmap_ret %d %d\n", pid, args->ret); }
tracepoint:syscalls:sys_enter_munmap { printf("munmap %d %d\n", pid, args->len); }
tracepoint:syscalls:sys_exit_brk { printf("brk %d %d\n", pid, args->ret); }
tracepoint:task:task_newtask { printf("newtask %d %d\n", pid, args->pid); }
tracepoint:sched:sched_process_exit { printf("exit %d\n", pid); }
"#;

const AGENT_PORT: u16 = 19_555;
const REDIS_PORT: u16 = 19_556;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    Baseline,
    Agent,
    Naive,
}

/// The configurations, in the order of the table's columns.
const CONFIGS: [Config; 3] = [Config::Baseline, Config::Agent, Config::Naive];

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "nothing attached",
            Config::Agent => "headroom agent",
            Config::Naive => "bpftrace naive",
        }
    }
}

/// Starts what `config` runs beside the workload (nothing, the agent, or bpftrace running
/// `script`), ready when this returns.
fn start(config: Config, headroom: &Path, script: &Path) -> Result<Beside> {
    match config {
        Config::Baseline => Ok(Beside(None)),
        Config::Agent => {
            let child = Command::new(headroom)
                .args(["agent", "--metadata", "none"])
                .args(["--listen", &format!("127.0.0.1:{AGENT_PORT}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting the headroom agent")?;
            let beside = Beside(Some(child));
            let deadline = Instant::now() + Duration::from_secs(30);
            while !http_ready(AGENT_PORT) {
                if Instant::now() > deadline {
                    bail!("the agent did not become ready");
                }
                thread::sleep(Duration::from_millis(50));
            }
            Ok(beside)
        }
        Config::Naive => {
            let child = Command::new("bpftrace")
                .args(["-o", "/dev/null"])
                .arg(script)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace")?;
            // bpftrace says nothing once its output goes to a file; attaching takes ~1-2 s.
            thread::sleep(Duration::from_secs(4));
            Ok(Beside(Some(child)))
        }
    }
}

/// One workload's row: its name, the median rate of each of [`CONFIGS`], its target loss.
type Row = (&'static str, Vec<f64>, f64);

/// Part 1: workload throughput with nothing, the agent, and naive bpftrace attached.
pub(super) fn overhead(headroom: &Path, machine: &str) -> Result<String> {
    setup::ensure_packages(&["bpftrace"])?;
    let script = std::env::temp_dir().join("headroom-naive.bt");
    std::fs::write(&script, NAIVE_SCRIPT).context("writing the bpftrace script")?;
    let rounds = rounds(3);
    let seconds = STRESS_SECONDS;

    let redis_server = start_redis(REDIS_PORT)?;
    let mut rows: Vec<Row> = Vec::new();
    for Workload {
        name,
        args,
        target_loss,
        ..
    } in WORKLOADS
    {
        let mut results = rotating(rounds, CONFIGS.len(), |_, index| {
            let config = CONFIGS[index];
            let beside = start(config, headroom, &script)?;
            let rate = run_workload(args, REDIS_PORT)?;
            drop(beside);
            eprintln!("[bench] {name} / {}: {rate:.0} per second", config.name());
            Ok(rate)
        })?;
        rows.push((name, medians(&mut results), target_loss));
    }
    drop(redis_server);

    let table = table(&rows);
    Ok(format!(
        "## Workload overhead\n\n\
         On {machine}, {rounds} rounds per configuration, medians. Each stress-ng run lasts \
         {seconds} s; redis-benchmark runs 200000 SET and GET requests of 1 KiB with 20 clients \
         on loopback.\n\n\
         Configurations alternate in rotating order (A B C, B C A, C A B, ...) so that drift \
         spreads over all three. *agent / nothing* is the throughput the workload keeps with the \
         headroom agent attached (1.000 = no cost); *naive / nothing* is the same for a bpftrace \
         script that prints one record per event of the same tracepoints (no in-kernel \
         aggregation): the baseline to beat.\n\n{table}\n\
         Reproduce: `sudo cargo xtask bench --only overhead` (HEADROOM_BENCH_ROUNDS=N for more \
         rounds).\n"
    ))
}

/// The section's table: each workload's medians, ratios and verdict.
fn table(rows: &[Row]) -> String {
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| workload | nothing attached | headroom agent | bpftrace naive | agent / nothing | naive / nothing | target (max loss) |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|");
    for (name, medians, target_loss) in rows {
        let agent_ratio = medians[1] / medians[0];
        let naive_ratio = medians[2] / medians[0];
        let verdict = verdict(1.0 - agent_ratio <= *target_loss);
        let _ = writeln!(
            table,
            "| {name} | {:.0}/s | {:.0}/s | {:.0}/s | {agent_ratio:.3} | {naive_ratio:.3} | {:.0} %: {verdict} |",
            medians[0],
            medians[1],
            medians[2],
            target_loss * 100.0
        );
    }
    table
}
