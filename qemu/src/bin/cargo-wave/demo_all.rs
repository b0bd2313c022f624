//! `cargo wave demo --subsystem all`: options to [`wave_qemu::demo_all`], tables out, exit
//! code 0 only if every subsystem passed.

use std::time::Duration;

use wave_host_shim::engine::EngineConfig;
use wave_host_shim::net::load::PHASES;
use wave_qemu::demo_all::AllOptions;
use wave_qemu::ExitCode;

use crate::cli::DemoArgs;

/// The memory table and key-value rate, and the net workers, of an all-subsystems run unless
/// given: small enough that three workloads and QEMU share a 2-core machine.
const ALL_TABLE_MIB: u64 = 256;
const ALL_KV_RATE: f64 = 20_000.0;
const ALL_WORKERS: u32 = 4;

/// The options of every subsystem: `--duration` is every load's length (the memory run's
/// whole run, the net load's four phases together); the memory and net flags apply.
fn options(args: &DemoArgs, engine: EngineConfig) -> anyhow::Result<AllOptions> {
    if !(args.duration >= 0.4 && args.duration <= 2400.0) {
        anyhow::bail!(
            "--duration {} with --subsystem all: must be 0.4..=2400 seconds (each of the net load's four phases is a quarter of it)",
            args.duration
        );
    }
    let mut a = args.clone();
    a.mem.table_mib = Some(a.mem.table_mib.unwrap_or(ALL_TABLE_MIB));
    a.mem.kv_rate = Some(a.mem.kv_rate.unwrap_or(ALL_KV_RATE));
    a.mem.mem_duration = args.duration;
    a.workers = Some(a.workers.unwrap_or(ALL_WORKERS));
    a.phase_secs = args.duration / PHASES.len() as f64;
    let mem = crate::mem_demo::options(&a)?.run;
    if mem.table_bytes >> 21 > 1024 {
        anyhow::bail!(
            "the IPU's memory agent manages at most 1024 regions (2 GiB); use --table-mib 2048 or less"
        );
    }
    let net = crate::demo_net::options(&a)?.run;
    Ok(AllOptions {
        engine,
        mem,
        net,
        spin_us: args.spin_us,
        gic: args.gic,
        timeout: Duration::from_secs(180) + Duration::from_secs_f64(args.duration * 2.0),
        console: args.console,
        stats: args.stats,
    })
}

/// CPU seconds (user + system) of this process's reaped children (QEMU, once it has exited).
fn children_cpu_s() -> f64 {
    let Ok(u) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) else {
        return 0.0;
    };
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(u.user_time()) + secs(u.system_time())
}

/// Runs every subsystem at once, then each policy on the host for its CPU cost.
pub fn run(args: &DemoArgs, engine: EngineConfig) -> anyhow::Result<ExitCode> {
    let opts = options(args, engine)?;
    wave_qemu::install::qemu()?;
    let image = wave_qemu::build_image(None)?;
    let names: Vec<&str> = wave_qemu::demo_all::DEMOS.iter().map(|d| d.name).collect();
    eprintln!(
        "wave: demo: {} offloaded together, one IPU core each, for {:.1} s: sched {} policy at {} req/s on {} host CPUs; mem {} MiB table at {:.0} ops/s; net {} workers",
        names.join(" + "),
        opts.engine.duration.as_secs_f64(),
        opts.engine.policy.info.name,
        opts.engine.rate,
        opts.engine.cpus,
        opts.mem.table_bytes >> 20,
        opts.mem.load.rate_per_s,
        opts.net.workers
    );
    let before = children_cpu_s();
    let (mut reports, fw) = wave_qemu::demo_all::run_all(&opts, &image)?;
    let qemu_cpu_s = children_cpu_s() - before;
    wave_qemu::demo_all::measure_on_host(&opts, &mut reports)?;
    println!();
    print!("{}", wave_qemu::demo_all::tables(&reports, &fw));
    println!(
        "IPU emulation: QEMU took {qemu_cpu_s:.1} s of host CPU for its {} cores (on a real IPU, its own cores)",
        wave_qemu::demo_all::DEMOS.len() + 1
    );
    if wave_qemu::demo_all::passed(&reports, &fw) {
        Ok(ExitCode::Pass)
    } else {
        println!(
            "wave: FAIL: a subsystem lost requests, broke an invariant, or the firmware failed"
        );
        Ok(ExitCode::DemoFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn all(extra: &[&str]) -> anyhow::Result<AllOptions> {
        let argv = ["cargo-wave", "demo", "--subsystem", "all"];
        let cli = crate::cli::Cli::parse_from(argv.iter().chain(extra));
        let crate::cli::Cmd::Demo(d) = cli.cmd else {
            panic!()
        };
        options(&d, EngineConfig::default())
    }

    #[test]
    fn all_sizes_every_workload_small_and_to_one_duration() {
        let o = all(&["--duration", "4"]).unwrap();
        assert_eq!(o.mem.table_bytes, 256 << 20);
        assert_eq!(o.mem.load.rate_per_s, 20_000.0);
        assert_eq!(o.mem.duration, Duration::from_secs(4));
        assert_eq!(o.net.workers, 4);
        assert_eq!(o.net.load.phase_s * PHASES.len() as f64, 4.0);
        let o = all(&["--table-mib", "128", "--kv-rate", "5000", "--workers", "2"]).unwrap();
        assert_eq!(o.mem.table_bytes, 128 << 20);
        assert_eq!((o.mem.load.rate_per_s, o.net.workers), (5000.0, 2));
        assert!(all(&["--table-mib", "4096"]).is_err());
        assert!(all(&["--kv-rate", "0"]).is_err());
        assert!(all(&["--duration", "0.2"]).is_err());
    }
}
