//! `cargo wave`: the command-line front end of the runner (`boot`, `image`, `test`). It parses
//! options, calls the `wave_qemu` library and turns every result into the documented exit code.

mod cli;
mod demo_all;
mod demo_net;
mod ipu;
mod mem_demo;
mod sim_cmd;
mod test_cmd;

use std::process::ExitCode as ProcessExit;
use std::time::Duration;

use clap::Parser;
use wave_qemu::{BootConfig, ExitCode};

use cli::{Agent, BootArgs, Cli, Cmd, DemoArgs, ImageArgs, LinkTestArgs, Subsystem};

fn exit(code: ExitCode) -> ProcessExit {
    ProcessExit::from(code as u8)
}

fn boot(args: BootArgs) -> anyhow::Result<ExitCode> {
    let cfg = BootConfig {
        smp: args.smp,
        mem: args.mem,
        cpu: args.cpu,
        gic: args.gic,
        timeout: Duration::from_secs(args.timeout),
        inject: args.inject,
        append: args.append,
        echo: true,
        extra_args: Vec::new(),
        cancel: Default::default(),
    };
    wave_qemu::cmdline::validate(&cfg)?;
    // QEMU first: if it is missing, say so before spending time on a build.
    wave_qemu::install::qemu()?;
    let image = wave_qemu::build_image(None)?;
    let outcome = wave_qemu::run_boot_with_image(&cfg, &image)?;
    let verdict = outcome.verdict(&cfg);
    let how = match outcome.status {
        wave_qemu::BootStatus::Exited(c) => format!("qemu exited {c}"),
        wave_qemu::BootStatus::Signaled(s) => format!("qemu was killed by signal {s}"),
        wave_qemu::BootStatus::TimedOut => "qemu was killed (timeout)".to_string(),
    };
    println!("{}", verdict.explain());
    println!("wave: {how} after {:.2} s", outcome.wall.as_secs_f64());
    Ok(verdict.exit_code())
}

fn link_test(args: LinkTestArgs) -> anyhow::Result<ExitCode> {
    let opts = wave_qemu::LinkTestOptions {
        messages: args.messages,
        smp: args.smp,
        gic: args.gic,
        timeout: Duration::from_secs(args.timeout),
        malformed_every: args.malformed_every,
        peer_timeout: Duration::from_millis(args.peer_timeout_ms),
        ..Default::default()
    };
    wave_qemu::install::qemu()?;
    let image = wave_qemu::build_image(None)?;
    let outcome = wave_qemu::run_link_test(&opts, &image)?;
    println!("{}", outcome.line());
    if let Some(cause) = &outcome.summary.peer_lost {
        if let Some(report) = &outcome.summary.watchdog {
            print!("{report}");
        }
        println!("wave: FAIL: {cause}; the run ended early (exit 9)");
        return Ok(ExitCode::PeerLost);
    }
    if outcome.boot.status == wave_qemu::BootStatus::TimedOut {
        println!("wave: FAIL: timed out after {} s", args.timeout);
        return Ok(ExitCode::TimedOut);
    }
    if outcome.passed(&opts) {
        println!(
            "wave: PASS: {} messages each way, none lost or corrupt",
            opts.messages
        );
        Ok(ExitCode::Pass)
    } else {
        let cfg = BootConfig {
            smp: opts.smp,
            ..BootConfig::default()
        };
        let v = outcome.boot.verdict(&cfg);
        if v.exit_code() != ExitCode::Pass {
            println!("{}", v.explain());
            return Ok(v.exit_code());
        }
        println!(
            "wave: FAIL: the link lost or corrupted messages, or the IPU skipped {} malformed requests of {} sent",
            outcome.summary.ipu_invalid, outcome.summary.injected
        );
        Ok(ExitCode::LinkFailed)
    }
}

fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    use wave_host_shim::engine::{AgentMode, EngineConfig};
    if args.subsystem == Subsystem::Mem {
        return mem_demo::demo_mem(args);
    }
    if args.subsystem == Subsystem::Net {
        return demo_net::demo_net(args);
    }
    if !(args.duration > 0.0 && args.duration <= 3600.0) {
        anyhow::bail!("--duration must be between 0 and 3600 seconds");
    }
    if !(0.0..=100.0).contains(&args.range_pct) {
        anyhow::bail!("--range-pct must be 0..=100");
    }
    let agents: Vec<AgentMode> = args
        .agent
        .iter()
        .map(|a| match a {
            Agent::Ipu => AgentMode::Ipu,
            Agent::Host => AgentMode::Host,
            Agent::Linux => AgentMode::Linux,
        })
        .collect();
    let engine = EngineConfig {
        policy: wave_policy::registry::PolicyChoice::from_cli(
            &args.policy,
            args.slice_us,
            &args.params,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        cpus: args.cpus,
        handlers: args.handlers,
        get_us: args.get_us,
        range_ms: args.range_ms,
        range_pct: args.range_pct,
        progress: true,
        fallback: !args.no_fallback,
        policy_swaps: args
            .swap_policy
            .iter()
            .map(|s| parse_swap(s))
            .collect::<anyhow::Result<Vec<_>>>()?,
        peer_timeout: Duration::from_millis(args.ipu_timeout_ms),
        ..EngineConfig::default()
    };
    let kill_ipu_every = match args.kill_ipu_every {
        Some(s) if (0.2..=3600.0).contains(&s) => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--kill-ipu-every must be 0.2..=3600 seconds, not {s}"),
        None => None,
    };
    engine.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    if args.sweep.iter().any(|r| !(*r > 0.0 && r.is_finite())) {
        anyhow::bail!("--sweep takes offered loads in req/s, each > 0 (e.g. 5000,10000,20000)");
    }
    if args.subsystem == Subsystem::All {
        return demo_all::run(&args, engine);
    }
    if agents.contains(&AgentMode::Ipu) && engine.cpus > wave_qemu::demo::IPU_MAX_CPUS {
        anyhow::bail!(
            "--cpus {}: the IPU firmware's agent schedules at most {} host CPUs; use --cpus 1..={} with the ipu agent",
            engine.cpus,
            wave_qemu::demo::IPU_MAX_CPUS,
            wave_qemu::demo::IPU_MAX_CPUS
        );
    }
    if let Some(path) = &args.json {
        // Found out now, not after the run: open for append (creating it) and leave it.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("--json {}: cannot write there: {e}", path.display()))?;
    }
    let mut opts = wave_qemu::demo::DemoOptions {
        agents,
        engine,
        ipu_cores: args.ipu_cores,
        spin_us: args.spin_us,
        gic: args.gic,
        echo: args.console,
        stats: args.stats,
        repeat: args.repeat,
        ipu_count: args.ipu_count,
        kill_ipu_every,
        ..Default::default()
    };
    // One calibration for the whole demo: every agent, round and load runs the same work.
    let work = wave_qemu::demo::calibrate(&mut opts);
    println!("wave: demo: work per request (every agent runs exactly this): {work}");
    let image = if opts.agents.contains(&AgentMode::Ipu) {
        wave_qemu::install::qemu()?;
        Some(wave_qemu::build_image(None)?)
    } else {
        None
    };
    if args.repeat > 1 || !args.sweep.is_empty() {
        return demo_points(&args, &opts, image.as_ref());
    }
    let runs = wave_qemu::demo::run_demo(&opts, image.as_ref())?;
    println!();
    print!("{}", wave_qemu::demo::table(&runs));
    println!("work: {work}");
    if let Some(path) = &args.json {
        std::fs::write(path, wave_qemu::demo::json(&opts, &runs))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("wave: results written to {}", path.display());
    }
    if let Some(cause) = runs.iter().find_map(|r| r.results.peer_lost.as_ref()) {
        println!("wave: FAIL: {cause}; no fallback, the run ended early (exit 9)");
        return Ok(ExitCode::PeerLost);
    }
    if runs.iter().all(|r| r.ok()) {
        Ok(ExitCode::Pass)
    } else {
        println!("wave: FAIL: a run lost requests, broke an invariant, or the firmware failed");
        Ok(ExitCode::DemoFailed)
    }
}

/// `demo --repeat N` and `demo --sweep …`: interleaved rounds at one or several loads.
fn demo_points(
    args: &DemoArgs,
    opts: &wave_qemu::demo::DemoOptions,
    image: Option<&wave_qemu::image::Image>,
) -> anyhow::Result<ExitCode> {
    use wave_qemu::demo;
    let rates = if args.sweep.is_empty() {
        vec![opts.engine.rate]
    } else {
        args.sweep.clone()
    };
    let points = demo::run_sweep(opts, &rates, image)?;
    println!();
    for p in &points {
        println!("offered {:.0} req/s:", p.rate);
        print!("{}", demo::repeat_table(&p.per_agent));
        println!();
    }
    if points.len() > 1 {
        println!(
            "latency against load (medians over {} rounds):",
            opts.repeat
        );
        print!("{}", demo::sweep_table(&points, &opts.agents));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, demo::json_points(opts, &points))
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        println!("wave: results written to {}", path.display());
    }
    let all_ok = points
        .iter()
        .flat_map(|p| p.per_agent.iter().flatten())
        .all(|r| r.ok());
    if all_ok {
        Ok(ExitCode::Pass)
    } else {
        println!("wave: FAIL: a run lost requests, broke an invariant, or the firmware failed");
        Ok(ExitCode::DemoFailed)
    }
}

/// `NAME@SECS` of `--swap-policy`.
fn parse_swap(s: &str) -> anyhow::Result<(Duration, wave_policy::registry::PolicyChoice)> {
    let (name, at) = s
        .split_once('@')
        .ok_or_else(|| anyhow::anyhow!("--swap-policy {s}: expected NAME@SECS, e.g. fair@2.5"))?;
    let secs: f64 = at
        .parse()
        .ok()
        .filter(|v: &f64| (0.0..=3600.0).contains(v))
        .ok_or_else(|| anyhow::anyhow!("--swap-policy {s}: SECS must be 0..=3600"))?;
    let p = wave_policy::registry::PolicyChoice::named(name).map_err(|_| {
        anyhow::anyhow!(
            "--swap-policy {s}: unknown policy `{name}` (known: {})",
            wave_policy::registry::names()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    Ok((Duration::from_secs_f64(secs), p))
}

fn image(args: ImageArgs) -> anyhow::Result<ExitCode> {
    let img = wave_qemu::build_image(args.out.as_deref())?;
    let kib = |n: u64| n as f64 / 1024.0;
    println!("wave: flash to the IPU:");
    println!(
        "  {}  {} bytes ({:.1} KiB)  raw arm64 Image, load at {:#x} (text_offset {:#x}, image_size {:#x})",
        img.bin.display(),
        img.bin_len,
        kib(img.bin_len),
        img.load_addr,
        img.header.text_offset,
        img.header.image_size
    );
    println!(
        "  {}  {} bytes ({:.1} KiB)  ELF with symbols and the defmt table (for debugging and log decoding)",
        img.elf.display(),
        img.elf_len,
        kib(img.elf_len)
    );
    Ok(ExitCode::Pass)
}

fn main() -> ProcessExit {
    // `cargo wave …` via the alias passes the subcommand first; an installed `cargo-wave`
    // called as `cargo wave …` gets `wave` first.
    let mut argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("wave") {
        argv.remove(1);
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit(ExitCode::RunnerError)
            } else {
                exit(ExitCode::Pass)
            };
        }
    };
    if matches!(cli.cmd, Cmd::LinkTest(_) | Cmd::Demo(_)) {
        // Their sockets must not outlive an interrupted run (QEMU, their only child, dies
        // with the runner; the blocked signals are inherited only by it).
        wave_qemu::sockets::install_signal_cleanup();
    }
    let result = match cli.cmd {
        Cmd::Boot(args) => boot(args).map(|c| c as u8),
        Cmd::Image(args) => image(args).map(|c| c as u8),
        Cmd::Test(args) => test_cmd::run(args),
        Cmd::LinkTest(args) => link_test(args).map(|c| c as u8),
        Cmd::Demo(args) => demo(args).map(|c| c as u8),
        Cmd::Ipu(args) => ipu::run(args),
        Cmd::Sim(args) => sim_cmd::run(args).map(|c| c as u8),
    };
    wave_qemu::sockets::cleanup();
    match result {
        Ok(code) => ProcessExit::from(code),
        Err(e) => {
            eprintln!("wave: error: {e:#}");
            exit(ExitCode::RunnerError)
        }
    }
}
