//! `cargo wave`: the command-line front end of the runner (`boot`, `image`, `test`). It parses
//! options, calls the `wave_qemu` library and turns every result into the documented exit code.

mod cli;
mod test_cmd;

use std::process::ExitCode as ProcessExit;
use std::time::Duration;

use clap::Parser;
use wave_qemu::{BootConfig, ExitCode};

use cli::{BootArgs, Cli, Cmd, ImageArgs, LinkTestArgs};

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
        ..Default::default()
    };
    wave_qemu::install::qemu()?;
    let image = wave_qemu::build_image(None)?;
    let outcome = wave_qemu::run_link_test(&opts, &image)?;
    println!("{}", outcome.line());
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
    let result = match cli.cmd {
        Cmd::Boot(args) => boot(args).map(|c| c as u8),
        Cmd::Image(args) => image(args).map(|c| c as u8),
        Cmd::Test(args) => test_cmd::run(args),
        Cmd::LinkTest(args) => link_test(args).map(|c| c as u8),
    };
    match result {
        Ok(code) => ProcessExit::from(code),
        Err(e) => {
            eprintln!("wave: error: {e:#}");
            exit(ExitCode::RunnerError)
        }
    }
}
