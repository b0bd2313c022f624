//! `cargo wave demo --subsystem all`: options to [`wave_qemu::demo_all`], tables out, exit
//! code 0 only if every subsystem passed.

use std::time::Duration;

use wave_host_shim::engine::EngineConfig;
use wave_qemu::ExitCode;

use crate::cli::DemoArgs;

/// Runs every subsystem at once, then each policy on the host for its CPU cost.
pub fn run(args: &DemoArgs, engine: EngineConfig) -> anyhow::Result<ExitCode> {
    let opts = wave_qemu::demo_all::AllOptions {
        echo_messages: (args.duration * 60_000.0).clamp(1_000.0, 10_000_000.0) as u64,
        engine,
        spin_us: args.spin_us,
        gic: args.gic,
        timeout: Duration::from_secs(180) + Duration::from_secs_f64(args.duration * 2.0),
        console: args.console,
        stats: args.stats,
    };
    wave_qemu::install::qemu()?;
    let image = wave_qemu::build_image(None)?;
    let names: Vec<&str> = wave_qemu::demo_all::DEMOS.iter().map(|d| d.name).collect();
    eprintln!(
        "wave: demo: {} offloaded together, one IPU core each ({} policy, {} req/s for {:.0} s on {} host CPUs)",
        names.join(" + "),
        opts.engine.policy.info.name,
        opts.engine.rate,
        opts.engine.duration.as_secs_f64(),
        opts.engine.cpus
    );
    let (mut reports, fw) = wave_qemu::demo_all::run_all(&opts, &image)?;
    wave_qemu::demo_all::measure_on_host(&opts, &mut reports)?;
    println!();
    print!("{}", wave_qemu::demo_all::tables(&reports, &fw));
    if wave_qemu::demo_all::passed(&reports, &fw) {
        Ok(ExitCode::Pass)
    } else {
        println!(
            "wave: FAIL: a subsystem lost requests, broke an invariant, or the firmware failed"
        );
        Ok(ExitCode::DemoFailed)
    }
}
