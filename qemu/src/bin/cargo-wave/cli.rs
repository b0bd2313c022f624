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
    /// Run the emulated IPU as a service (the wave-ipu systemd unit): boot the installed
    /// firmware with the services of /etc/wave/wave.toml against the running host shim.
    Ipu(IpuArgs),
    /// The simulator: a policy on N host CPUs across a modelled PCIe link, with the agent's
    /// own cost and a switch per mitigation; offloaded vs on-host vs ideal, the ablation,
    /// load sweeps, SVG plots. Deterministic by seed.
    Sim(crate::sim_cmd::SimArgs),
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

/// How the net demo's requests reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetTransport {
    /// One datagram per request, steered per datagram.
    Udp,
    /// Connections carrying fixed-size records, steered per connection at SYN; each flow
    /// reconnects every --conn-requests requests.
    Tcp,
}

/// Which subsystem `demo` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Subsystem {
    /// Offloaded thread scheduling.
    Sched,
    /// Memory management (a key-value table; `--agent linux` is the no-management baseline).
    Mem,
    /// The network/RPC control plane (core allocation and eBPF steering).
    Net,
    /// Scheduling, memory and the network control plane at once, one IPU core each, each on
    /// its own workload for --duration (the memory and net options apply; smaller defaults).
    All,
}

/// Options of the memory demo (`--subsystem mem`).
#[derive(Clone, Debug, Args)]
pub struct MemDemoArgs {
    /// Size of the key-value table in MiB [default: 1024; 256 with --subsystem all].
    #[arg(long, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(8..=65536))]
    pub table_mib: Option<u64>,
    /// Offered key-value load in operations per second (open-loop Poisson arrivals)
    /// [default: 100000; 20000 with --subsystem all].
    #[arg(long, value_name = "OPS/S")]
    pub kv_rate: Option<f64>,
    /// Seconds of load per mode (the hot set moves halfway).
    #[arg(long, default_value_t = 20.0, value_name = "SECS")]
    pub mem_duration: f64,
    /// Scan interval in milliseconds.
    #[arg(long, default_value_t = 100, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(5..=10_000))]
    pub interval_ms: u64,
    /// Scan intervals per SLO minute (the demo's time base; 1 maps the policy's smallest cold
    /// threshold, 2 intervals, onto Google's 120 s).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub minute_intervals: u32,
    /// Promotion-rate SLO in ppm of the working set per minute (2000 = 0.2%/min).
    #[arg(long, default_value_t = 2000, value_name = "PPM")]
    pub slo_ppm: u32,
    /// Share of the keys in the hot set.
    #[arg(long, value_name = "F")]
    pub hot_fraction: Option<f64>,
    /// Share of operations reading a random key outside the hot set.
    #[arg(long, value_name = "F")]
    pub cold_fraction: Option<f64>,
    /// Run without a far tier (no reclaim; the saving is 0).
    #[arg(long)]
    pub no_far_tier: bool,
    /// Collapse a region into a huge page after this many hot intervals (0: never, the
    /// default: each collapse stalls the key-value thread's faults for milliseconds).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub collapse_after: u32,
    /// Leave the threads unpinned (by default the key-value thread runs alone on the last
    /// CPU, and the mechanism, the policy and QEMU on the others, in every mode alike).
    #[arg(long)]
    pub no_pin: bool,
}

#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// Subsystem to demonstrate.
    #[arg(long, value_enum, default_value_t = Subsystem::Sched)]
    pub subsystem: Subsystem,
    /// (net, mem) Write an SVG plot over time to this file (net: workers held and p99; mem:
    /// resident memory and GET p99).
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
    /// (net) Server workers (each a pinned thread with its own SO_REUSEPORT socket)
    /// [default: 8; 4 with --subsystem all].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Option<u32>,
    /// (net) Seconds per load phase (low, peak, low, bursty).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub phase_secs: f64,
    /// (net) Load of the peak phase, as a fraction of the workers' nominal capacity (the low
    /// phases are at 0.2).
    #[arg(long, default_value_t = 0.6, value_name = "FRACTION")]
    pub peak_load: f64,
    /// (net) p99 latency objective in milliseconds.
    #[arg(long, default_value_t = 30.0, value_name = "MS")]
    pub slo_ms: f64,
    /// (net) Transport of the RPC server and the load generator.
    #[arg(long, value_enum, default_value_t = NetTransport::Udp)]
    pub transport: NetTransport,
    /// (net, tcp) Requests each flow sends on a connection before it reconnects (steering at
    /// SYN reaches a flow within this many of its requests).
    #[arg(long, default_value_t = 8, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub conn_requests: u32,
    #[command(flatten)]
    pub mem: MemDemoArgs,
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
    /// Print the live stats view (the same as `wave-host stats`) every second during the ipu run.
    #[arg(long)]
    pub stats: bool,
    /// Run the agents interleaved N times and report each figure's median and spread.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,
    /// Count the IPU agent's instructions per event and per decision with the emulated PMU
    /// (runs QEMU with `-icount shift=0`, so the ipu column's latencies are not comparable).
    #[arg(long)]
    pub ipu_count: bool,
    /// Run a load sweep at these offered loads (req/s, comma-separated) and print latency
    /// against load per agent, e.g. `--sweep 5000,10000,20000` (replaces --rate).
    #[arg(long, value_delimiter = ',', value_name = "REQ/S,...")]
    pub sweep: Vec<f64>,
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
pub struct IpuArgs {
    /// The configuration shared with `wave-host run`.
    #[arg(long, default_value = "/etc/wave/wave.toml", value_name = "PATH")]
    pub config: PathBuf,
    /// Firmware ELF to boot [default: `[ipu] firmware` of the configuration].
    #[arg(long, value_name = "PATH")]
    pub firmware: Option<PathBuf>,
    /// Seconds to wait for the host shim's link socket.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub wait: u64,
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
    fn demo_subsystem_stats_and_ipu_options() {
        let Cmd::Demo(d) = Cli::parse_from(["cargo-wave", "demo"]).cmd else {
            panic!()
        };
        assert_eq!((d.subsystem, d.stats), (Subsystem::Sched, false));
        let Cmd::Demo(d) =
            Cli::parse_from(["cargo-wave", "demo", "--subsystem", "all", "--stats"]).cmd
        else {
            panic!()
        };
        assert_eq!((d.subsystem, d.stats), (Subsystem::All, true));
        assert!(Cli::try_parse_from(["cargo-wave", "demo", "--subsystem", "disk"]).is_err());
        assert_eq!(d.transport, NetTransport::Udp);
        let Cmd::Demo(d) = Cli::parse_from([
            "cargo-wave",
            "demo",
            "--subsystem",
            "net",
            "--transport",
            "tcp",
            "--conn-requests",
            "4",
        ])
        .cmd
        else {
            panic!()
        };
        assert_eq!((d.transport, d.conn_requests), (NetTransport::Tcp, 4));
        assert!(Cli::try_parse_from(["cargo-wave", "demo", "--transport", "sctp"]).is_err());
        let Cmd::Ipu(i) = Cli::parse_from(["cargo-wave", "ipu"]).cmd else {
            panic!()
        };
        assert_eq!(i.config, PathBuf::from("/etc/wave/wave.toml"));
        assert_eq!((i.firmware, i.wait), (None, 60));
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

    #[test]
    fn sim_has_a_switch_per_mitigation_and_demo_repeats() {
        let help = Cli::command()
            .find_subcommand_mut("sim")
            .unwrap()
            .render_long_help()
            .to_string();
        for switch in [
            "--no-prestage",
            "--no-batching",
            "--no-wakeup-suppression",
            "--no-abort",
            "--no-write-combining",
        ] {
            assert!(help.contains(switch), "{switch} missing from sim --help");
        }
        let Cmd::Sim(a) = Cli::parse_from([
            "cargo-wave",
            "sim",
            "--cpus",
            "64",
            "--policy",
            "shinjuku",
            "--no-abort",
        ])
        .cmd
        else {
            panic!()
        };
        assert_eq!(
            (a.cpus, a.policy.as_str(), a.no_abort, a.no_prestage),
            (64, "shinjuku", true, false)
        );
        let Cmd::Demo(d) = Cli::parse_from([
            "cargo-wave",
            "demo",
            "--repeat",
            "3",
            "--sweep",
            "5000,10000",
        ])
        .cmd
        else {
            panic!()
        };
        assert_eq!((d.repeat, d.sweep.as_slice()), (3, &[5000.0, 10000.0][..]));
        assert!(Cli::try_parse_from(["cargo-wave", "demo", "--repeat", "0"]).is_err());
    }
}
