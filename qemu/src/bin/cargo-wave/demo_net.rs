//! `cargo wave demo --subsystem net`: options → `wave_qemu::demo_net`, then the table, JSON
//! and the SVG plot.

use std::time::Duration;

use wave_qemu::demo_net::{self, NetDemoOptions};
use wave_qemu::ExitCode;

use wave_host_shim::net::server::Transport;

use crate::cli::{Agent, DemoArgs, NetTransport};

pub fn options(args: &DemoArgs) -> anyhow::Result<NetDemoOptions> {
    if !(args.phase_secs >= 0.1 && args.phase_secs <= 600.0) {
        anyhow::bail!("--phase-secs must be between 0.1 and 600");
    }
    if !(args.slo_ms > 0.0 && args.slo_ms <= 10_000.0) {
        anyhow::bail!("--slo-ms must be between 0 and 10000");
    }
    if !(args.peak_load > 0.0 && args.peak_load <= 1.0) {
        anyhow::bail!("--peak-load must be in (0, 1]");
    }
    let mut o = NetDemoOptions {
        host: args.agent.contains(&Agent::Host),
        ipu: args.agent.contains(&Agent::Ipu),
        ipu_cores: args.ipu_cores,
        gic: args.gic,
        echo: args.console,
        ..NetDemoOptions::default()
    };
    let r = &mut o.run;
    r.workers = args.workers.unwrap_or(8) as usize;
    r.load.phase_s = args.phase_secs;
    r.load.peak = args.peak_load;
    r.load.capacity_rps = r.load.capacity_of(r.workers);
    r.load.transport = match args.transport {
        NetTransport::Udp => Transport::Udp,
        NetTransport::Tcp => Transport::Tcp,
    };
    r.load.conn_requests = args.conn_requests;
    r.slo_us = (args.slo_ms * 1000.0) as u64;
    r.link_up_timeout = Duration::from_secs(60);
    Ok(o)
}

/// Runs the net demo.
pub fn demo_net(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let opts = options(&args)?;
    let image = if opts.ipu {
        wave_qemu::install::qemu()?;
        Some(wave_qemu::build_image(None)?)
    } else {
        None
    };
    let demo = demo_net::run(&opts, image.as_ref())?;
    println!();
    print!("{}", demo_net::table(&demo, opts.run.slo_us));
    let c = &opts.run;
    println!(
        "work: {} flows ({}), {} workers, {} us short / {} us long ({}‰ long), {}‰ of it computed, the rest a timed wait; control interval {} us; grant at {} us queueing delay",
        c.load.clients,
        match c.load.transport {
            Transport::Udp => "UDP, one datagram per request".to_string(),
            Transport::Tcp => format!(
                "TCP, a new connection every {} requests per flow",
                c.load.conn_requests
            ),
        },
        c.workers,
        c.load.short_us,
        c.load.long_us,
        c.load.long_permille,
        c.cpu_permille,
        c.interval.as_micros(),
        c.params.delay_add_us
    );
    if let Some(path) = &args.json {
        std::fs::write(path, demo_net::json(&opts, &demo))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("wave: results written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, demo_net::svg(&opts, &demo))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("wave: plot written to {}", path.display());
    }
    if demo.runs.iter().all(|r| r.ok()) {
        Ok(ExitCode::Pass)
    } else {
        println!("wave: FAIL: a configuration left requests unanswered, or the firmware failed");
        Ok(ExitCode::DemoFailed)
    }
}
