//! `wave-host`: the host shim binary. `serve` runs the ivshmem server and the host end of the
//! link on its own (start QEMU by hand with the printed arguments); `link-test` serves, waits
//! for the IPU and runs the link test against it; `sched` runs the scheduling engine with the
//! on-host agent or under Linux; `mem` runs the memory demo's modes; `run`, `install`, `stats`,
//! `policy` and `config` are the service's commands (`wave_host_shim::service::commands`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use std::sync::atomic::AtomicBool;

use wave_abi::layout::DEFAULT_RING_ENTRIES;
use wave_abi::{Endpoint, Layout, Side};
use wave_host_shim::ivshmem::{IvshmemServer, ServerConfig};
use wave_host_shim::link::{HostPort, Link};
use wave_host_shim::link_test::{self, LinkTestConfig};
use wave_host_shim::service::commands as service;
use wave_host_shim::watchdog::{self, Cause, Watchdog};
use wave_policy::registry::PolicyChoice;
use wave_policy::runtime::{Runtime, Tuning};

/// Exit code when the IPU died or stopped during a run (as `cargo wave`'s).
const EXIT_PEER_LOST: u8 = 9;

#[derive(Parser)]
#[command(name = "wave-host", version, about = "Wave host shim")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// UNIX socket QEMU's ivshmem-doorbell chardev connects to.
    #[arg(long)]
    socket: PathBuf,
    /// Shared memory size (power of two; suffixes K, M, G).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    shm_size: usize,
    /// Doorbell vectors per peer (QEMU's vectors= must match).
    #[arg(long, default_value_t = 4)]
    vectors: u16,
    /// Entries per ring (power of two).
    #[arg(long, default_value_t = DEFAULT_RING_ENTRIES)]
    ring_entries: u32,
    /// Announce this ABI major version instead of the real one, to see the IPU refuse it.
    #[arg(long, default_value_t = wave_abi::ABI_MAJOR, hide_short_help = true)]
    abi_major: u16,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the ivshmem server and keep the host end of the link alive, printing counters.
    Serve {
        #[command(flatten)]
        server: ServerArgs,
        /// Seconds between counter reports (1..=3600).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        stats_interval: u64,
        /// Declare the IPU gone (printing the watchdog report) once its heartbeat has not
        /// changed for this many ms; the server keeps serving and waits for it or a new one.
        #[arg(long, default_value_t = 500, value_name = "MS",
              value_parser = clap::value_parser!(u64).range(10..=600_000))]
        peer_timeout_ms: u64,
    },
    /// Serve, wait for the IPU, run the link test, print the summary (exit 0 if every message
    /// came back valid).
    LinkTest {
        #[command(flatten)]
        server: ServerArgs,
        /// Messages to send (1..=10000000).
        #[arg(long, default_value_t = 10_000,
              value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        messages: u64,
        /// Seconds to wait for the IPU to come up (1..=86400).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        wait: u64,
        /// End the test (exit 9, with the watchdog report) once the IPU's heartbeat has not
        /// changed for this many ms; a QEMU that exits is noticed at once.
        #[arg(long, default_value_t = 500, value_name = "MS",
              value_parser = clap::value_parser!(u64).range(10..=600_000))]
        peer_timeout_ms: u64,
    },
    /// Run the scheduling engine standalone: a RocksDB-like GET/RANGE workload on host CPUs
    /// scheduled by the on-host agent (`--agent host`) or by Linux (`--agent linux`). The
    /// offloaded mode (`ipu`) needs QEMU and is driven by the runner.
    Sched(SchedArgs),
    /// Run as a service: own the link and the control socket until SIGTERM (configuration:
    /// /etc/wave/wave.toml; see docs/operations.md).
    Run(service::RunArgs),
    /// Install the binaries, the systemd units and the default configuration.
    Install(service::InstallArgs),
    /// Live stats of a running `wave-host run` (terminal view, --json, --listen for Prometheus).
    Stats(service::StatsArgs),
    /// The policy of a running `wave-host run`'s scheduling workload: `set NAME [--param
    /// K=V]...` switches it under load (a hot-swap the agent acknowledges), `show` prints it.
    Policy(service::PolicyArgs),
    /// Print the default configuration or check a configuration file.
    Config(service::ConfigArgs),
    /// Run the memory demo's modes standalone: a key-value table managed by the memory
    /// policy in a host thread (`host`), or not at all (`none`); `ipu` serves the socket and
    /// waits for the firmware (boot it with `wave.services=mem@0`).
    Mem(MemArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MemModeArg {
    None,
    Host,
    Ipu,
}

#[derive(clap::Args)]
struct MemArgs {
    /// Modes to run, in order (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [MemModeArg::None, MemModeArg::Host])]
    mode: Vec<MemModeArg>,
    /// Size of the key-value table in MiB.
    #[arg(long, default_value_t = 1024)]
    table_mib: usize,
    /// Offered load (operations/s, Poisson arrivals).
    #[arg(long, default_value_t = 100_000.0)]
    rate: f64,
    /// Seconds of load per mode (the hot set moves halfway).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Scan interval (ms).
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Run without a far tier.
    #[arg(long)]
    no_far_tier: bool,
    /// UNIX socket for the `ipu` mode's ivshmem server.
    #[arg(long, default_value = "/tmp/wave-mem.sock")]
    socket: PathBuf,
    /// Seconds to wait for the IPU in the `ipu` mode.
    #[arg(long, default_value_t = 120)]
    wait: u64,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

fn mem(a: MemArgs) -> ExitCode {
    use wave_host_shim::mem::run::{self, MemRunConfig};
    if let Err(e) = run::check_load(a.table_mib as u64, a.rate, a.duration) {
        eprintln!("wave-host: mem: --table-mib/--rate/--duration: {e}");
        return ExitCode::from(2);
    }
    let cfg = MemRunConfig {
        table_bytes: a.table_mib << 20,
        duration: Duration::from_secs_f64(a.duration),
        interval: Duration::from_millis(a.interval_ms.max(1)),
        load: wave_host_shim::mem::kv::KvLoadConfig {
            rate_per_s: a.rate,
            ..Default::default()
        },
        far_tier: !a.no_far_tier,
        progress: true,
        ..MemRunConfig::default()
    };
    let mut runs = Vec::new();
    for m in &a.mode {
        let r = match m {
            MemModeArg::None => run::run_none(&cfg),
            MemModeArg::Host => run::run_host(&cfg),
            MemModeArg::Ipu => mem_ipu(&a, &cfg),
        };
        eprintln!();
        match r {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("wave-host: mem: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if a.json {
        println!("{}", wave_host_shim::mem::report::json(&cfg, 0, &runs));
    } else {
        print!("{}", wave_host_shim::mem::report::table(&runs));
    }
    if runs
        .iter()
        .all(|r| r.checksum_failures == 0 && r.invariant_violations == 0)
    {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The `ipu` mode standalone: serve the socket, wait for the firmware, run over it.
fn mem_ipu(
    a: &MemArgs,
    cfg: &wave_host_shim::mem::run::MemRunConfig,
) -> Result<wave_host_shim::mem::run::MemRunResults, String> {
    let server = ServerArgs {
        socket: a.socket.clone(),
        shm_size: 1 << 20,
        vectors: wave_abi::layout::MIN_VECTORS as u16,
        ring_entries: DEFAULT_RING_ENTRIES,
        abi_major: wave_abi::ABI_MAJOR,
    };
    let s = bind(&server).map_err(|_| "cannot start the ivshmem server".to_string())?;
    println!(
        "wave-host: boot the firmware with wave.services=mem@0; waiting up to {}s",
        a.wait
    );
    let deadline = Instant::now() + Duration::from_secs(a.wait);
    while !s.peer_present() {
        if Instant::now() > deadline {
            return Err(format!("no ivshmem client connected within {}s", a.wait));
        }
        let _ = s.service(Duration::from_millis(100));
    }
    let r = wave_host_shim::mem::run::run_managed(&s, wave_host_shim::mem::run::MemMode::Ipu, cfg);
    let _ = std::fs::remove_file(&a.socket);
    r
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AgentArg {
    Host,
    Linux,
}

#[derive(clap::Args)]
struct SchedArgs {
    /// Who schedules: the policy agent in a host thread, or Linux.
    #[arg(long, value_enum, default_value = "host")]
    agent: AgentArg,
    /// Policy the agent runs.
    #[arg(long, default_value = "shinjuku", value_parser = policy_names())]
    policy: String,
    /// Time slice (µs) of a policy that has one (shinjuku, fair); default: the policy's.
    #[arg(long, value_name = "US")]
    slice_us: Option<u64>,
    /// A policy parameter, NAME=VALUE (repeatable), e.g. `--param steal_after_ns=50000`.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Offered load (requests/s, Poisson arrivals).
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Host CPUs (worker threads pinned round-robin to the machine's cores).
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Request handler threads.
    #[arg(long, default_value_t = 64)]
    handlers: u32,
    /// GET service time (µs).
    #[arg(long, default_value_t = 10.0)]
    get_us: f64,
    /// RANGE service time (ms).
    #[arg(long, default_value_t = 5.0)]
    range_ms: f64,
    /// Share of RANGE requests (%).
    #[arg(long, default_value_t = 0.5)]
    range_pct: f64,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
    /// Show the live progress line even when stdout is not a terminal.
    #[arg(long)]
    progress: bool,
}

fn sched(a: SchedArgs) -> ExitCode {
    use wave_host_shim::engine::{self, AgentMode, EngineConfig};
    let policy = match PolicyChoice::from_cli(&a.policy, a.slice_us, &a.params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("wave-host: sched: {e}");
            return ExitCode::from(2);
        }
    };
    if !(a.duration > 0.0 && a.duration <= 3600.0) {
        eprintln!("wave-host: sched: --duration must be > 0 and at most 3600 seconds");
        return ExitCode::from(2);
    }
    let cfg = EngineConfig {
        policy,
        rate: a.rate,
        duration: Duration::from_secs_f64(a.duration),
        cpus: a.cpus,
        handlers: a.handlers,
        get_us: a.get_us,
        range_ms: a.range_ms,
        range_pct: a.range_pct,
        progress: a.progress,
        ..EngineConfig::default()
    };
    let mode = match a.agent {
        AgentArg::Host => AgentMode::Host,
        AgentArg::Linux => AgentMode::Linux,
    };
    match engine::run(mode, &cfg) {
        Ok(r) => {
            if a.json {
                println!("{}", r.to_json());
            } else {
                println!("{r}");
            }
            if r.invariant_violations == 0 && r.completed == r.offered {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("wave-host: sched: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--policy` accepts exactly the registered names.
fn policy_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(wave_policy::registry::names())
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().trim_end_matches("iB").trim_end_matches('B');
    let (num, mul) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("`{s}` is not a size (examples: 1M, 256K, 1048576)"))
}

fn bind(a: &ServerArgs) -> Result<IvshmemServer, ExitCode> {
    let cfg = ServerConfig {
        socket: a.socket.clone(),
        shm_size: a.shm_size,
        vectors: a.vectors,
        ring_entries: a.ring_entries,
        abi_major: a.abi_major,
    };
    match IvshmemServer::bind(cfg) {
        Ok(s) => {
            println!("wave-host: listening on {}", a.socket.display());
            println!("wave-host: start QEMU with: {}", s.qemu_args());
            Ok(s)
        }
        Err(e) => {
            eprintln!("wave-host: error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// Keeps the host end of the link alive under the agent runtime (with no service: attach,
/// resynchronise, heartbeat, sleep on the control vector), printing counters every
/// `interval`, and starts a new endpoint whenever a new QEMU connects. Watches the IPU's
/// heartbeat: once it is older than `bound`, prints the watchdog report (once per stall).
fn serve(server: &IvshmemServer, interval: Duration, bound: Duration) -> ExitCode {
    let region = server.region();
    let layout: Layout = *server.layout();
    let never = AtomicBool::new(false);
    let origin = Instant::now();
    let tuning = Tuning {
        max_sleep_ns: 100_000_000,
        ..Tuning::HOST
    };
    loop {
        if !server.peer_present() {
            if let Err(e) = server.service(interval) {
                eprintln!("wave-host: error: {e}");
                return ExitCode::FAILURE;
            }
            report(server, None);
            continue;
        }
        let Ok(mut ep) = Endpoint::new(region, &layout, Side::Host, server.epoch()) else {
            eprintln!("wave-host: error: the region's layout is unusable");
            return ExitCode::FAILURE;
        };
        let mut rt = Runtime::new(tuning);
        let mut dog = Watchdog::new(bound);
        let mut stalled = false;
        let mut last_report = Instant::now();
        loop {
            let slice = bound.min(interval) / 2;
            let mut port = HostPort::new(server, origin, &never)
                .with_log("wave-host")
                .with_deadline(Instant::now() + slice);
            rt.run(&mut ep, &mut port, &mut []);
            match dog.check_link(server, &layout) {
                Some(cause @ Cause::HeartbeatStale(_)) if !stalled => {
                    stalled = true;
                    let age = dog.age();
                    print!("{}", watchdog::report(&region, &layout, &cause, age, 0));
                }
                Some(_) => {}
                None => stalled = false,
            }
            if last_report.elapsed() >= interval {
                last_report = Instant::now();
                report(server, Some(&ep));
            }
            if port.transport_changed() {
                if !server.peer_present() {
                    let age = dog.age();
                    let cause = Cause::Disconnected;
                    print!("{}", watchdog::report(&region, &layout, &cause, age, 0));
                }
                break;
            }
        }
    }
}

fn report(server: &IvshmemServer, ep: Option<&Endpoint<'_>>) {
    let c = server.counters();
    println!(
        "wave-host: clients={} refused={} disconnects={} doorbells_in={} doorbells_out={} ipu={}",
        c.clients_accepted,
        c.clients_refused,
        c.disconnects,
        c.doorbells_in,
        c.doorbells_out,
        match ep.map(|e| e.peer_status()) {
            Some(s) => format!(
                "{:?} epoch={} heartbeat={} counters={:?}",
                s.state, s.epoch, s.heartbeat, s.counters
            ),
            None => "not connected".into(),
        }
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Sched(a) => sched(a),
        Cmd::Run(a) => service::run(&a),
        Cmd::Install(a) => service::install(&a),
        Cmd::Stats(a) => service::stats(&a),
        Cmd::Policy(a) => service::policy(&a),
        Cmd::Config(a) => service::config(&a),
        Cmd::Mem(a) => mem(a),
        Cmd::Serve {
            server,
            stats_interval,
            peer_timeout_ms,
        } => match bind(&server) {
            Ok(s) => serve(
                &s,
                Duration::from_secs(stats_interval),
                Duration::from_millis(peer_timeout_ms),
            ),
            Err(c) => c,
        },
        Cmd::LinkTest {
            server,
            messages,
            wait,
            peer_timeout_ms,
        } => {
            let s = match bind(&server) {
                Ok(s) => s,
                Err(c) => return c,
            };
            println!("wave-host: waiting up to {wait}s for the IPU");
            let deadline = Instant::now() + Duration::from_secs(wait);
            while !s.peer_present() {
                if Instant::now() > deadline {
                    eprintln!("wave-host: error: no ivshmem client connected within {wait}s");
                    return ExitCode::FAILURE;
                }
                let _ = s.service(Duration::from_millis(100));
            }
            let cfg = LinkTestConfig {
                messages,
                link_up_timeout: Duration::from_secs(wait),
                peer_timeout: Duration::from_millis(peer_timeout_ms),
                ..LinkTestConfig::default()
            };
            match link_test::run(&s, cfg) {
                Ok(sum) => {
                    println!("wave-host: link test: {sum}");
                    if let Some(cause) = &sum.peer_lost {
                        print!("{}", sum.watchdog.as_deref().unwrap_or(""));
                        eprintln!("wave-host: link test ended early: {cause}");
                        return ExitCode::from(EXIT_PEER_LOST);
                    }
                    if sum.received == messages && sum.corrupt == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("wave-host: link test failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
