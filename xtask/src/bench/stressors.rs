//! Part `stressors`: the agent under load, and what each of its BPF programs costs per event.
//! One release agent runs throughout, beside an idle redis-server; each round runs, in
//! rotating order, an idle interval and each workload of `overhead`. Around each run the
//! agent's CPU time and RSS are read from `/proc`, and its `/metrics` (the kernel's BPF
//! run-time statistics per program) scraped before and after: the difference in run time
//! over the difference in runs is the program's nanoseconds per event.

use std::{
    fmt::Write as _,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{
    common::{
        containers_tracked, cpu_seconds, http_get, start_agent, status_bytes, workloads_dir,
        IDLE_CPU_TARGET, IDLE_SECONDS, MIB, RSS_TARGET_MIB,
    },
    median, rotating, rounds, verdict,
    workloads::{run_workload, start_redis, Workload, STRESS_SECONDS, WORKLOADS},
};

const STRESSORS_PORT: u16 = 19_558;
const STRESSORS_REDIS_PORT: u16 = 19_559;
/// Between a run and the scrape after it: one agent tick (1 s) and a margin, so that its BPF
/// counters include the whole run.
const AFTER_RUN: Duration = Duration::from_millis(1_500);

/// One counter per program from a Prometheus text page: `NAME{program="X"} VALUE` lines.
fn per_program(metrics: &str, name: &str) -> std::collections::BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once('}')?;
            let program = labels
                .split(',')
                .find_map(|label| label.trim().strip_prefix("program=\""))?
                .strip_suffix('"')?;
            Some((program.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// What one run under the agent cost it.
struct StressorSample {
    /// The workload's own operations per second (None at idle).
    rate: Option<f64>,
    /// The agent's CPU time over the run (utime + stime), in seconds.
    cpu_time: f64,
    rss: u64,
    /// The agent's peak RSS during the run (VmHWM, reset just before).
    hwm: u64,
    /// Per program: kernel run time (s) and runs over the run.
    bpf: std::collections::BTreeMap<String, (f64, f64)>,
    seconds: f64,
}

/// One run at idle (`workload` None) or of a workload, measured on the agent `pid`.
fn stressor_sample(pid: u32, workload: Option<&Workload>) -> Result<StressorSample> {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the agent's VmHWM (/proc/{pid}/clear_refs)"))?;
    let scrape =
        || http_get(STRESSORS_PORT, "/metrics").context("the agent's /metrics did not answer");
    let before = scrape()?;
    let cpu_before = cpu_seconds(pid)?;
    let started = Instant::now();
    let rate = match workload {
        None => {
            thread::sleep(Duration::from_secs(IDLE_SECONDS));
            None
        }
        Some(workload) => Some(run_workload(workload.args, STRESSORS_REDIS_PORT)?),
    };
    let seconds = started.elapsed().as_secs_f64();
    let cpu_time = cpu_seconds(pid)? - cpu_before;
    let rss = status_bytes(pid, "VmRSS")?;
    let hwm = status_bytes(pid, "VmHWM")?;
    thread::sleep(AFTER_RUN);
    let after = scrape()?;
    let counters = |page: &str| {
        (
            per_program(page, "headroom_agent_bpf_run_seconds_total"),
            per_program(page, "headroom_agent_bpf_runs_total"),
        )
    };
    let (time_before, runs_before) = counters(&before);
    let (time_after, runs_after) = counters(&after);
    let bpf = time_after
        .iter()
        .map(|(program, time)| {
            let time_then = time_before.get(program).copied().unwrap_or(0.0);
            let runs_now = runs_after.get(program).copied().unwrap_or(0.0);
            let runs_then = runs_before.get(program).copied().unwrap_or(0.0);
            (
                program.clone(),
                ((time - time_then).max(0.0), (runs_now - runs_then).max(0.0)),
            )
        })
        .collect();
    Ok(StressorSample {
        rate,
        cpu_time,
        rss,
        hwm,
        bpf,
        seconds,
    })
}

/// A count in few characters: 12, 45.1 k, 1.23 M.
fn short_count(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// What a scenario is called in the section: idle, or the workload's name.
fn scenario_name(scenario: Option<&Workload>) -> &'static str {
    scenario.map_or("idle", |w| w.name)
}

/// Part: on one agent run, the agent's CPU and RSS at idle and under each workload of
/// `overhead`, and each BPF program's nanoseconds per event from the kernel's BPF stats.
pub(super) fn stressors(headroom: &Path, target: &Path, machine: &str) -> Result<String> {
    let rounds = rounds(3);
    let scenarios: Vec<Option<&Workload>> = std::iter::once(None)
        .chain(WORKLOADS.iter().map(Some))
        .collect();
    let (samples, tracked) = measure(headroom, target, rounds, &scenarios)?;
    let (table, rows) = load_table(&scenarios, &samples);
    let probes = probe_table(&scenarios, &samples);
    let verdicts = verdict_lines(&rows, rounds, tracked);
    Ok(format!(
        "## Agent under load, and probe cost\n\n\
         This part (`stressors`) measures both issue-8 items on one agent run: the agent's CPU \
         and RSS under each stressor, and each BPF program's cost from the kernel's BPF stats.\n\n\
         On {machine}, {rounds} rounds, medians. One release agent (`headroom agent --metadata \
         none --socket \"\"`, 1 s interval, the host's own cgroups only) runs throughout, beside \
         an idle redis-server on loopback. Each round runs, in rotating order, {IDLE_SECONDS} s \
         of idling and each workload of the overhead section as it runs there (stress-ng for \
         {STRESS_SECONDS} s; redis-benchmark, 200000 SET and GET requests of 1 KiB, 20 \
         clients). Agent CPU is its `/proc/PID/stat` utime + stime over the run divided by the \
         run's wall time, as the median of the rounds and as all rounds' CPU time over all \
         their wall time (the kernel counts it in 10 ms clock ticks: one tick over a 5 s run \
         is 0.2 % of a core, so a median of 0 means less than that); VmRSS is read when the run ends; VmHWM is reset before each run \
         (`echo 5 > /proc/PID/clear_refs`) so that it is the peak during that run, and the \
         highest of the rounds is shown. The last column is the kernel time spent in headroom's \
         programs over the run's wall time: a cost the workloads pay, not in the agent's \
         CPU.\n\n{table}\n{verdicts}\n\
         ### Nanoseconds per event, by program\n\n\
         From the kernel's BPF run-time statistics, which the agent turns on while it runs and \
         exports as `headroom_agent_bpf_run_seconds_total{{program}}` and \
         `headroom_agent_bpf_runs_total{{program}}`: scraped from `/metrics` just before each \
         run and {:.1} s after it (the agent reads the kernel's figures once per tick), the \
         difference in run time divided by the difference in runs. Each cell is the median of \
         the rounds' nanoseconds per run, and in brackets the median number of runs in one run \
         of that workload; \"-\" means the program never ran. The kernel's figures include \
         its own clock reads around each run, which exist only while statistics are on. The \
         agent loads no syscall tracepoints (captures do); `mark_victim` runs only on OOM \
         kills.\n\n{probes}\n\
         Reproduce: `sudo cargo xtask bench --only stressors` (HEADROOM_BENCH_ROUNDS=N for more \
         rounds).\n",
        AFTER_RUN.as_secs_f64(),
    ))
}

/// Runs the scenarios `rounds` times in rotating order on one fresh agent, beside an idle
/// redis-server: each scenario's samples, and how many cgroups the agent tracked at the end.
fn measure(
    headroom: &Path,
    target: &Path,
    rounds: usize,
    scenarios: &[Option<&Workload>],
) -> Result<(Vec<Vec<StressorSample>>, u64)> {
    let workloads = workloads_dir(target)?;
    let log = workloads.join("bench-agent-stressors.log");
    let redis_server = start_redis(STRESSORS_REDIS_PORT)?;
    let (agent, pid) = start_agent(headroom, STRESSORS_PORT, &log)?;
    // Start-up (seeding every process already running) is not idle.
    thread::sleep(Duration::from_secs(5));
    let samples = rotating(rounds, scenarios.len(), |round, index| {
        let scenario = scenarios[index];
        let sample = stressor_sample(pid, scenario)
            .with_context(|| format!("(the agent's log: {})", log.display()))?;
        eprintln!(
            "[bench] stressors round {}/{rounds}, {}: agent CPU {:.3} cores, VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            round + 1,
            scenario_name(scenario),
            sample.cpu_time / sample.seconds,
            sample.rss as f64 / MIB,
            sample.hwm as f64 / MIB,
        );
        Ok(sample)
    })?;
    let metrics = http_get(STRESSORS_PORT, "/metrics").unwrap_or_default();
    let tracked = containers_tracked(&metrics);
    drop(agent);
    drop(redis_server);
    Ok((samples, tracked))
}

/// One scenario's agent figures, for the verdicts.
struct Load<'a> {
    scenario: Option<&'a Workload>,
    /// Agent CPU in cores: the median of the rounds, and all rounds together.
    cpu: f64,
    all_rounds: f64,
    /// The highest VmHWM of the rounds.
    hwm: u64,
}

/// The section's main table, one row per scenario, and each row's figures.
fn load_table<'a>(
    scenarios: &[Option<&'a Workload>],
    samples: &[Vec<StressorSample>],
) -> (String, Vec<Load<'a>>) {
    let mut table = String::from(
        "| while | workload ops/s (median) | agent CPU, median of the rounds | agent CPU, all rounds together | agent VmRSS after the run | agent VmHWM during the run (highest) | time in headroom's BPF programs |\n|---|---|---|---|---|---|---|\n",
    );
    let cores = |cores: f64| format!("{cores:.4} cores ({:.2} %)", cores * 100.0);
    let mut rows = Vec::new();
    for (scenario, runs) in scenarios.iter().zip(samples) {
        let mut rates: Vec<f64> = runs.iter().filter_map(|s| s.rate).collect();
        let mut cpu: Vec<f64> = runs.iter().map(|s| s.cpu_time / s.seconds).collect();
        let all_rounds = runs.iter().map(|s| s.cpu_time).sum::<f64>()
            / runs
                .iter()
                .map(|s| s.seconds)
                .sum::<f64>()
                .max(f64::MIN_POSITIVE);
        let mut rss: Vec<f64> = runs.iter().map(|s| s.rss as f64).collect();
        let hwm = runs.iter().map(|s| s.hwm).max().unwrap_or(0);
        let mut bpf_share: Vec<f64> = runs
            .iter()
            .map(|s| s.bpf.values().map(|(time, _)| time).sum::<f64>() / s.seconds)
            .collect();
        let cpu = median(&mut cpu);
        let rate = if rates.is_empty() {
            "—".to_owned()
        } else {
            format!("{:.0}", median(&mut rates))
        };
        let _ = writeln!(
            table,
            "| {} | {rate} | {} | {} | {:.1} MiB | {:.1} MiB | {} |",
            scenario_name(*scenario),
            cores(cpu),
            cores(all_rounds),
            median(&mut rss) / MIB,
            hwm as f64 / MIB,
            cores(median(&mut bpf_share)),
        );
        rows.push(Load {
            scenario: *scenario,
            cpu,
            all_rounds,
            hwm,
        });
    }
    (table, rows)
}

/// Nanoseconds per event of each program (rows) in each scenario (columns), with the median
/// number of events per run.
fn probe_table(scenarios: &[Option<&Workload>], samples: &[Vec<StressorSample>]) -> String {
    let programs: std::collections::BTreeSet<&String> = samples
        .iter()
        .flatten()
        .flat_map(|s| s.bpf.keys())
        .collect();
    let mut probes = String::from("| program |");
    let mut rule = String::from("|---|");
    for scenario in scenarios {
        let _ = write!(probes, " {} |", scenario.map_or("idle", |w| w.short));
        rule.push_str("---|");
    }
    let _ = writeln!(probes, "\n{rule}");
    for program in &programs {
        let _ = write!(probes, "| `{program}` |");
        for runs in samples {
            let mut per_event: Vec<f64> = runs
                .iter()
                .filter_map(|s| s.bpf.get(*program))
                .filter(|(_, count)| *count > 0.0)
                .map(|(time, count)| time / count * 1e9)
                .collect();
            let mut counts: Vec<f64> = runs
                .iter()
                .map(|s| s.bpf.get(*program).map_or(0.0, |(_, count)| *count))
                .collect();
            if per_event.is_empty() {
                probes.push_str(" - |");
            } else {
                let _ = write!(
                    probes,
                    " {:.0} ns ({}) |",
                    median(&mut per_event),
                    short_count(median(&mut counts))
                );
            }
        }
        probes.push('\n');
    }
    probes
}

/// The idle CPU and RSS targets, and the highest CPU under load (which has no target).
fn verdict_lines(rows: &[Load], rounds: usize, tracked: u64) -> String {
    let mut verdicts = String::new();
    if let Some(idle) = rows.first() {
        let _ = writeln!(
            verdicts,
            "- Idle agent CPU at most {:.1} % of a core: {:.3} % (median of {rounds} idle runs of \
             {IDLE_SECONDS} s; {:.3} % over all of them; {tracked} cgroup{} tracked): **{}**.",
            IDLE_CPU_TARGET * 100.0,
            idle.cpu * 100.0,
            idle.all_rounds * 100.0,
            if tracked == 1 { "" } else { "s" },
            verdict(idle.cpu.max(idle.all_rounds) <= IDLE_CPU_TARGET)
        );
    }
    if let Some(highest) = rows.iter().max_by_key(|row| row.hwm) {
        let peak = highest.hwm as f64 / MIB;
        let _ = writeln!(
            verdicts,
            "- Agent RSS at most {RSS_TARGET_MIB:.0} MiB (the target is set for 500 containers; \
             this run tracks {tracked} cgroup{}, the footprint section has 500): highest VmHWM \
             {peak:.1} MiB, while {}: **{}**.",
            if tracked == 1 { "" } else { "s" },
            scenario_name(highest.scenario),
            verdict(peak <= RSS_TARGET_MIB)
        );
    }
    if let Some(busiest) = rows
        .iter()
        .skip(1)
        .max_by(|a, b| a.all_rounds.total_cmp(&b.all_rounds))
    {
        let cpu = busiest.all_rounds;
        let _ = writeln!(
            verdicts,
            "- Agent CPU under load has no issue-8 target: its highest (all rounds together) is \
             {:.2} % of a core ({cpu:.4} cores), while {}.",
            cpu * 100.0,
            scenario_name(busiest.scenario)
        );
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_per_program_counters() {
        let page = "\
# TYPE headroom_agent_bpf_runs_total counter
headroom_agent_bpf_runs_total{program=\"rss_stat\"} 190557
headroom_agent_bpf_runs_total{program=\"task_newtask\"} 2e3
headroom_agent_bpf_run_seconds_total{program=\"rss_stat\"} 0.07
";
        let runs = per_program(page, "headroom_agent_bpf_runs_total");
        assert_eq!(runs.len(), 2);
        assert_eq!(runs["rss_stat"], 190557.0);
        assert_eq!(runs["task_newtask"], 2000.0);
        let time = per_program(page, "headroom_agent_bpf_run_seconds_total");
        assert_eq!(time["rss_stat"], 0.07);
    }

    #[test]
    fn short_counts() {
        assert_eq!(short_count(12.0), "12");
        assert_eq!(short_count(45_100.0), "45.1 k");
        assert_eq!(short_count(1_234_000.0), "1.23 M");
    }
}
