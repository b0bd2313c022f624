//! `cargo wave demo --subsystem mem`: turns the command line into the memory demo's options
//! (`wave_qemu::demo_mem`), runs it, prints the table, writes `--json` and `--plot`.

use std::time::Duration;

use wave_host_shim::mem::kv::KvLoadConfig;
use wave_host_shim::mem::run::{MemMode, MemRunConfig};
use wave_policy::mem::MemConfig;
use wave_qemu::demo_mem::{self, MemDemoOptions};
use wave_qemu::ExitCode;

use crate::cli::{Agent, DemoArgs};

/// The modes `--agent` names, in the order none, host, ipu (`linux` is the no-management
/// baseline: the kernel keeps everything in DRAM).
fn modes(agents: &[Agent]) -> Vec<MemMode> {
    let mut m: Vec<MemMode> = agents
        .iter()
        .map(|a| match a {
            Agent::Linux => MemMode::None,
            Agent::Host => MemMode::Host,
            Agent::Ipu => MemMode::Ipu,
        })
        .collect();
    m.sort_by_key(|m| *m as u8);
    m.dedup();
    m
}

fn fraction(name: &str, v: Option<f64>, default: f64) -> anyhow::Result<f64> {
    match v {
        None => Ok(default),
        Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
        Some(f) => anyhow::bail!("--{name} must be between 0 and 1 (got {f})"),
    }
}

pub fn options(args: &DemoArgs) -> anyhow::Result<MemDemoOptions> {
    let m = &args.mem;
    let (table_mib, kv_rate) = (m.table_mib.unwrap_or(1024), m.kv_rate.unwrap_or(100_000.0));
    wave_host_shim::mem::run::check_load(table_mib, kv_rate, m.mem_duration)
        .map_err(|e| anyhow::anyhow!("--table-mib/--kv-rate/--mem-duration: {e}"))?;
    let d = KvLoadConfig::default();
    let hot = fraction("hot-fraction", m.hot_fraction, d.hot_fraction)?;
    if hot == 0.0 {
        anyhow::bail!("--hot-fraction must be above 0");
    }
    let run = MemRunConfig {
        table_bytes: (table_mib as usize) << 20,
        duration: Duration::from_secs_f64(m.mem_duration),
        interval: Duration::from_millis(m.interval_ms),
        load: KvLoadConfig {
            rate_per_s: kv_rate,
            hot_fraction: hot,
            cold_fraction: fraction("cold-fraction", m.cold_fraction, d.cold_fraction)?,
            ..d
        },
        policy: MemConfig {
            intervals_per_minute: m.minute_intervals,
            slo_ppm_per_minute: m.slo_ppm,
            collapse_after: match m.collapse_after {
                0 => wave_host_shim::mem::run::COLLAPSE_NEVER,
                n => n,
            },
            ..MemRunConfig::default().policy
        },
        far_tier: !m.no_far_tier,
        pin: !m.no_pin,
        progress: true,
        ..MemRunConfig::default()
    };
    Ok(MemDemoOptions {
        modes: modes(&args.agent),
        run,
        ipu_cores: args.ipu_cores,
        spin_us: args.spin_us,
        gic: args.gic,
        echo: args.console,
    })
}

/// Runs the memory demo.
pub fn demo_mem(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let opts = options(&args)?;
    if opts.modes.contains(&MemMode::Ipu) && (opts.run.table_bytes >> 21) > 1024 {
        anyhow::bail!(
            "the IPU's memory agent manages at most 1024 regions (2 GiB); use --table-mib 2048 or less, or --agent linux,host"
        );
    }
    let image = if opts.modes.contains(&MemMode::Ipu) {
        wave_qemu::install::qemu()?;
        Some(wave_qemu::build_image(None)?)
    } else {
        None
    };
    let rounds = demo_mem::run_rounds(&opts, image.as_ref(), args.repeat)?;
    let runs = rounds.last().expect("at least one round");
    println!();
    if rounds.len() > 1 {
        println!("the last of {} rounds:", rounds.len());
    }
    print!("{}", demo_mem::table(runs));
    if rounds.len() > 1 {
        println!(
            "\nover {} interleaved rounds (GET p99 vs none: the median of the per-round ratios; target within 10%):",
            rounds.len()
        );
        print!("{}", demo_mem::repeat_table(&rounds));
    }
    if let Some(s) = demo_mem::scaling(&opts, runs) {
        print!("{s}");
    }
    let l = &opts.run.load;
    println!(
        "work: {} MiB table of 128-byte rows, hot set = newest {:.0}% of keys (Zipf {} by recency), {:.0}% PUTs, {}% cold reads, {:.0} ops/s open loop; SLO minute = {} intervals of {} ms",
        opts.run.table_bytes >> 20,
        l.hot_fraction * 100.0,
        l.theta,
        l.put_fraction * 100.0,
        l.cold_fraction * 100.0,
        l.rate_per_s,
        opts.run.policy.intervals_per_minute,
        opts.run.interval.as_millis()
    );
    if let Some(path) = &args.json {
        std::fs::write(path, demo_mem::json_rounds(&opts, &rounds))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("wave: results written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, demo_mem::plot(runs))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("wave: plot written to {}", path.display());
    }
    if rounds.iter().flatten().all(|r| r.ok()) {
        Ok(ExitCode::Pass)
    } else {
        println!(
            "wave: FAIL: a run saw a checksum failure, broke an invariant, or the firmware failed"
        );
        Ok(ExitCode::DemoFailed)
    }
}
