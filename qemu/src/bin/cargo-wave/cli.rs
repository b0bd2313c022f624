//! The command line of `cargo wave` (clap derive): subcommands, options, defaults and help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use wave_qemu::Inject;

/// Build, boot and test the Wave firmware in QEMU.
#[derive(Debug, Parser)]
#[command(
    name = "cargo wave",
    bin_name = "cargo wave",
    after_help = "Exit codes of `boot`: 0 pass; 1 boot error, 2 panic, 3 CPU exception, 4 cores \
                  missing (the firmware's own codes); 5 no/incomplete boot report; 6 QEMU failed; \
                  7 link test lost or corrupted messages; 8 demo run lost requests or broke an invariant; 124 timeout; 125 the runner could not run (build failed, QEMU missing, bad \
                  option).\nEnvironment: WAVE_QEMU (QEMU binary), WAVE_WORKSPACE (repository \
                  root), CARGO_TARGET_DIR."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Build the image and boot it in qemu-system-aarch64 (virt board), showing the console
    /// live; passes only if QEMU exits 0 and all --smp cores come online.
    Boot(BootArgs),
    /// Build the firmware and write the flashable raw image and the ELF to target/wave/.
    Image(ImageArgs),
    /// Run every test: host unit tests, then the image build, then the QEMU end-to-end tests.
    Test(TestArgs),
    /// Boot the firmware against the host shim over the emulated PCIe link (ivshmem-doorbell)
    /// and exchange messages both ways; passes only if none is lost or corrupt.
    LinkTest(LinkTestArgs),
    /// Offloaded scheduling end to end: a RocksDB-like workload with the policy on the IPU,
    /// then on a host core, then under Linux, at the same load; prints a side-by-side table.
    Demo(DemoArgs),
}

/// Which agents `demo` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Agent {
    /// The policy in the firmware on the IPU (QEMU), over the emulated PCIe link.
    Ipu,
    /// The same policy code in a host thread (the on-host baseline; costs a host core).
    Host,
    /// No Wave: the kernel's scheduler.
    Linux,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Agents to run, in order (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Agent::Ipu, Agent::Host, Agent::Linux])]
    pub agent: Vec<Agent>,
    /// Scheduling policy.
    #[arg(long, default_value = "shinjuku",
          value_parser = clap::builder::PossibleValuesParser::new(wave_policy::registry::names()))]
    pub policy: String,
    /// Time slice in microseconds, for a policy that has one (shinjuku, fair);
    /// default: the policy's own (shinjuku 30, fair 50).
    #[arg(long, value_name = "US",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub slice_us: Option<u64>,
    /// A policy parameter, NAME=VALUE (repeatable), e.g. `--param steal_after_ns=50000`.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Offered load in requests per second (open-loop Poisson arrivals).
    #[arg(long, default_value_t = 10_000.0, value_name = "REQ/S")]
    pub rate: f64,
    /// Seconds of load per agent.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub duration: f64,
    /// Host CPUs (worker threads pinned to this machine's cores).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub cpus: u32,
    /// Request handler threads.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub handlers: u32,
    /// GET service time in microseconds.
    #[arg(long, default_value_t = 10.0, value_name = "US")]
    pub get_us: f64,
    /// RANGE service time in milliseconds.
    #[arg(long, default_value_t = 5.0, value_name = "MS")]
    pub range_ms: f64,
    /// Share of RANGE requests in percent.
    #[arg(long, default_value_t = 0.5, value_name = "PCT")]
    pub range_pct: f64,
    /// IPU cores (-smp); the agent runs on core 0, the others sleep in WFI.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub ipu_cores: u32,
    /// Idle time the IPU agent polls before it sleeps on its doorbell (firmware default 20).
    #[arg(long, value_name = "US")]
    pub spin_us: Option<u64>,
    /// GIC version of the virt board.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub gic: u8,
    /// Also write all results as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Show the firmware console during the ipu run.
    #[arg(long)]
    pub console: bool,
    /// ipu agent: kill QEMU every SECS seconds and boot a new one, under load; the host
    /// falls back to its own agent and hands back to each new IPU (0.2..=3600).
    #[arg(long, value_name = "SECS")]
    pub kill_ipu_every: Option<f64>,
    /// ipu agent: declare the IPU gone once its heartbeat has not changed for MS ms.
    #[arg(long, default_value_t = 100, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub ipu_timeout_ms: u64,
    /// ipu agent: no host fallback; a lost IPU ends the run (exit 9).
    #[arg(long)]
    pub no_fallback: bool,
    /// Hot-swap the policy under load: NAME@SECS after the load starts (repeatable, default
    /// parameters), through the same resync path as a hand-back.
    #[arg(long = "swap-policy", value_name = "NAME@SECS")]
    pub swap_policy: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LinkTestArgs {
    /// Messages to send each way.
    /// At most 10,000,000 (the host keeps about 64 bytes of state per message).
    #[arg(long, default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub messages: u64,
    /// IPU cores (-smp).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub smp: u32,
    /// GIC version of the virt board.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub gic: u8,
    /// Kill QEMU after this many seconds of wall-clock time (exit code 124), 1..=86400.
    #[arg(long, default_value_t = 300, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// Hostile host: also send one malformed request (bad tag, length, reserved field,
    /// checksum, ...) after every K valid ones; the IPU must skip exactly those.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub malformed_every: Option<u64>,
    /// Declare the IPU gone (exit 9, with the watchdog report) once its heartbeat has not
    /// changed for this many milliseconds; a QEMU that exits is noticed at once.
    #[arg(long, default_value_t = 500, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub peer_timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// Number of cores (-smp).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub smp: u32,
    /// Guest RAM (-m), e.g. 1G, 512M; a bare number is MiB.
    #[arg(long, default_value = "1G", value_name = "SIZE")]
    pub mem: String,
    /// CPU model (-cpu), e.g. neoverse-n1, cortex-a76, max.
    #[arg(long, default_value = "neoverse-n1", value_name = "MODEL")]
    pub cpu: String,
    /// GIC version of the virt board.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=3))]
    pub gic: u8,
    /// Kill QEMU after this many seconds of wall-clock time (exit code 124), 1..=86400.
    #[arg(long, default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,
    /// Make the firmware fail on purpose after its boot report (wave.test=…).
    #[arg(long, value_enum)]
    pub inject: Option<Inject>,
    /// Extra boot-argument words (repeatable; each value may hold several words).
    #[arg(long, value_name = "WORDS")]
    pub append: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Directory to write wave-firmware.bin and wave-firmware.elf to [default: target/wave].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestArgs {}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn boot_defaults_and_options() {
        let Cmd::Boot(b) = Cli::parse_from(["cargo-wave", "boot"]).cmd else {
            panic!()
        };
        assert_eq!(
            (b.smp, b.mem.as_str(), b.cpu.as_str(), b.gic, b.timeout),
            (4, "1G", "neoverse-n1", 3, 60)
        );
        assert_eq!(b.inject, None);
        let Cmd::Boot(b) = Cli::parse_from([
            "cargo-wave",
            "boot",
            "--smp",
            "2",
            "--inject",
            "hang",
            "--timeout",
            "5",
            "--gic",
            "2",
            "--append",
            "a b",
            "--append",
            "c",
        ])
        .cmd
        else {
            panic!()
        };
        assert_eq!(
            (b.smp, b.gic, b.timeout, b.inject),
            (2, 2, 5, Some(Inject::Hang))
        );
        assert_eq!(b.append, ["a b", "c"]);
        assert!(Cli::try_parse_from(["cargo-wave", "boot", "--gic", "4"]).is_err());
        assert!(Cli::try_parse_from(["cargo-wave", "boot", "--inject", "boom"]).is_err());
        assert!(Cli::try_parse_from(["cargo-wave", "boot", "--timeout", "0"]).is_err());
        let huge = "18446744073709551615";
        assert!(Cli::try_parse_from(["cargo-wave", "boot", "--timeout", huge]).is_err());
        assert!(Cli::try_parse_from(["cargo-wave", "link-test", "--timeout", huge]).is_err());
        let many = "1000000000";
        assert!(Cli::try_parse_from(["cargo-wave", "link-test", "--messages", many]).is_err());
        assert!(
            Cli::try_parse_from(["cargo-wave", "link-test", "--peer-timeout-ms", "0"]).is_err()
        );
    }
}
