//! The service configuration (`/etc/wave/wave.toml`): the keys, their defaults (the file
//! `dist/wave.toml` documents each; a test checks that file parses to [`Config::default`]),
//! and validation. Unknown keys and bad values are refused with the line and what to do.

use std::path::{Path, PathBuf};

use std::time::Duration;

use wave_abi::subsystem::SUBSYSTEMS;
use wave_policy::registry::PolicyChoice;

use crate::engine::EngineConfig;

use super::toml::{parse, Entry, Value};

/// The default configuration file, with every key documented.
pub const DEFAULT_FILE: &str = include_str!("../../../dist/wave.toml");
/// Where the service looks by default.
pub const DEFAULT_PATH: &str = "/etc/wave/wave.toml";
/// Longest bounded scheduling workload (s); 0 runs until the service stops.
pub const MAX_WORKLOAD_S: u64 = 86_400;

/// Longest memory or network workload (s): a SIGTERM waits for a run in progress (neither
/// run can be cut short), and the unit's `TimeoutStopSec` is 45 s.
pub const MAX_LANE_RUN_S: u64 = 30;

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `[link] socket`.
    pub link_socket: PathBuf,
    /// `[link] shm_size` (bytes).
    pub shm_size: usize,
    /// `[link] ring_entries`.
    pub ring_entries: u32,
    /// `[link] vectors` (0: derived).
    pub vectors: u16,
    /// `[control] socket`.
    pub control_socket: PathBuf,
    /// `[subsystems] enabled`.
    pub subsystems: Vec<String>,
    /// `[sched] policy`.
    pub sched_policy: String,
    /// `[sched] params`.
    pub sched_params: Vec<String>,
    /// `[sched] host_cpus`.
    pub host_cpus: u32,
    /// `[sched] workload_rate` (requests/s; 0: no workload, the service holds the link only).
    pub workload_rate: u32,
    /// `[sched] workload_duration_s` (0: until the service stops).
    pub workload_duration_s: u64,
    /// `[sched] workload_handlers` (handler threads of the workload).
    pub workload_handlers: u32,
    /// `[mem] workload_table_mib` (0: no memory workload).
    pub mem_table_mib: u64,
    /// `[mem] workload_rate` (key-value operations per second).
    pub mem_rate: u32,
    /// `[mem] workload_duration_s`.
    pub mem_duration_s: u64,
    /// `[net] workload_workers` (0: no network workload).
    pub net_workers: u32,
    /// `[net] workload_duration_s` (its four load phases, a quarter each).
    pub net_duration_s: u64,
    /// `[echo] probe_interval_ms` (0: no probe).
    pub probe_interval_ms: u64,
    /// `[thresholds] heartbeat_stale_ms`.
    pub heartbeat_stale_ms: u64,
    /// `[thresholds] stats_interval_ms`.
    pub stats_interval_ms: u64,
    /// `[thresholds] log_interval_s`.
    pub log_interval_s: u64,
    /// `[ipu] firmware` (the ELF).
    pub ipu_firmware: PathBuf,
    /// `[ipu] qemu`.
    pub ipu_qemu: String,
    /// `[ipu] cores` (0: derived).
    pub ipu_cores: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            link_socket: "/run/wave/ivshmem.sock".into(),
            shm_size: 1 << 20,
            ring_entries: 512,
            vectors: 0,
            control_socket: "/run/wave/control.sock".into(),
            subsystems: vec!["sched".into(), "echo".into()],
            sched_policy: "shinjuku".into(),
            sched_params: Vec::new(),
            host_cpus: 2,
            workload_rate: 0,
            workload_duration_s: 0,
            workload_handlers: 64,
            mem_table_mib: 0,
            mem_rate: 20_000,
            mem_duration_s: 20,
            net_workers: 0,
            net_duration_s: 20,
            probe_interval_ms: 1000,
            heartbeat_stale_ms: 1000,
            stats_interval_ms: 1000,
            log_interval_s: 60,
            ipu_firmware: "/usr/local/share/wave/wave-firmware.elf".into(),
            ipu_qemu: "qemu-system-aarch64".into(),
            ipu_cores: 0,
        }
    }
}

/// Parses a size with an optional K/M/G suffix.
pub fn parse_size(s: &str) -> Option<usize> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mul)
}

fn want_str(e: &Entry) -> Result<&str, String> {
    match &e.value {
        Value::Str(s) => Ok(s),
        v => Err(wrong(e, "a string", v)),
    }
}

fn want_list(e: &Entry) -> Result<Vec<String>, String> {
    match &e.value {
        Value::List(l) => Ok(l.clone()),
        v => Err(wrong(e, "a list of strings", v)),
    }
}

fn want_int(e: &Entry, lo: i64, hi: i64) -> Result<i64, String> {
    match e.value {
        Value::Int(i) if (lo..=hi).contains(&i) => Ok(i),
        Value::Int(i) => Err(format!(
            "line {}: [{}] {} = {i} is out of range; use {lo}..={hi}",
            e.line, e.section, e.key
        )),
        ref v => Err(wrong(e, "an integer", v)),
    }
}

fn wrong(e: &Entry, want: &str, got: &Value) -> String {
    format!(
        "line {}: [{}] {} must be {want}, not {}",
        e.line,
        e.section,
        e.key,
        got.type_name()
    )
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the configuration {}: {e}; `wave-host install` puts the default \
                 there, or pass --config FILE",
                path.display()
            )
        })?;
        Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut c = Config::default();
        for e in parse(text)? {
            c.set(&e)?;
        }
        c.validate()?;
        Ok(c)
    }

    fn set(&mut self, e: &Entry) -> Result<(), String> {
        match (e.section.as_str(), e.key.as_str()) {
            ("link", "socket") => self.link_socket = want_str(e)?.into(),
            ("link", "shm_size") => {
                let s = want_str(e)?;
                self.shm_size = parse_size(s).filter(|n| n.is_power_of_two()).ok_or_else(|| {
                    format!("line {}: [link] shm_size `{s}` is not a power-of-two size (e.g. \"1M\")", e.line)
                })?;
            }
            ("link", "ring_entries") => {
                let n = want_int(e, 2, 1 << 16)? as u32;
                if !n.is_power_of_two() {
                    return Err(format!(
                        "line {}: [link] ring_entries = {n} is not a power of two",
                        e.line
                    ));
                }
                self.ring_entries = n;
            }
            ("link", "vectors") => self.vectors = want_int(e, 0, 256)? as u16,
            ("control", "socket") => self.control_socket = want_str(e)?.into(),
            ("subsystems", "enabled") => self.subsystems = want_list(e)?,
            ("sched", "policy") => self.sched_policy = want_str(e)?.into(),
            ("sched", "params") => self.sched_params = want_list(e)?,
            ("sched", "host_cpus") => self.host_cpus = want_int(e, 1, 64)? as u32,
            ("sched", "workload_rate") => self.workload_rate = want_int(e, 0, 1_000_000)? as u32,
            ("sched", "workload_duration_s") => {
                self.workload_duration_s = want_int(e, 0, MAX_WORKLOAD_S as i64)? as u64
            }
            ("sched", "workload_handlers") => {
                self.workload_handlers = want_int(e, 1, wave_policy::MAX_THREADS as i64)? as u32
            }
            ("mem", "workload_table_mib") => self.mem_table_mib = want_int(e, 0, 2048)? as u64,
            ("mem", "workload_rate") => self.mem_rate = want_int(e, 1, 10_000_000)? as u32,
            ("mem", "workload_duration_s") => {
                self.mem_duration_s = want_int(e, 1, MAX_LANE_RUN_S as i64)? as u64
            }
            ("net", "workload_workers") => self.net_workers = want_int(e, 0, 64)? as u32,
            ("net", "workload_duration_s") => {
                self.net_duration_s = want_int(e, 1, MAX_LANE_RUN_S as i64)? as u64
            }
            ("echo", "probe_interval_ms") => {
                self.probe_interval_ms = want_int(e, 0, 3_600_000)? as u64
            }
            ("thresholds", "heartbeat_stale_ms") => {
                self.heartbeat_stale_ms = want_int(e, 10, 3_600_000)? as u64
            }
            ("thresholds", "stats_interval_ms") => {
                self.stats_interval_ms = want_int(e, 10, 60_000)? as u64
            }
            ("thresholds", "log_interval_s") => {
                self.log_interval_s = want_int(e, 0, 86_400)? as u64
            }
            ("ipu", "firmware") => self.ipu_firmware = want_str(e)?.into(),
            ("ipu", "qemu") => self.ipu_qemu = want_str(e)?.into(),
            ("ipu", "cores") => self.ipu_cores = want_int(e, 0, 64)? as u32,
            (s, k) => {
                return Err(format!(
                    "line {}: unknown key [{s}] {k}; the keys and their defaults are in {} \
                     (`wave-host config --default` prints it)",
                    e.line, DEFAULT_PATH
                ))
            }
        }
        Ok(())
    }

    /// Cross-key checks: known subsystems, each once; a registered policy with valid params.
    fn validate(&self) -> Result<(), String> {
        let known: Vec<&str> = SUBSYSTEMS.iter().map(|s| s.name).collect();
        for (i, s) in self.subsystems.iter().enumerate() {
            if !known.contains(&s.as_str()) {
                return Err(format!(
                    "[subsystems] enabled: unknown subsystem `{s}`; this build has {}",
                    known.join(", ")
                ));
            }
            if self.subsystems[..i].contains(s) {
                return Err(format!("[subsystems] enabled: `{s}` is listed twice"));
            }
        }
        let policy = wave_policy::registry::PolicyChoice::from_cli(
            &self.sched_policy,
            None,
            &self.sched_params,
        )
        .map_err(|e| format!("[sched]: {e}"))?;
        self.validate_workload(policy)?;
        self.validate_lanes()?;
        let min = Layout::min_size(self.ring_entries);
        if self.shm_size < min {
            return Err(format!(
                "[link] shm_size {} is too small for rings of {} entries: use at least \"{}K\"",
                self.shm_size,
                self.ring_entries,
                min.next_power_of_two() / 1024
            ));
        }
        if self.vectors != 0 && self.vectors < self.needed_vectors() {
            return Err(format!(
                "[link] vectors = {} is too few for {} host CPUs; use 0 (automatic) or at least {}",
                self.vectors,
                self.host_cpus,
                self.needed_vectors()
            ));
        }
        Ok(())
    }

    /// The scheduling workload's checks: only with `sched` enabled, and settings the engine
    /// accepts.
    fn validate_workload(&self, policy: PolicyChoice) -> Result<(), String> {
        if self.workload_rate == 0 {
            return Ok(());
        }
        if !self.subsystems.iter().any(|s| s == "sched") {
            return Err(format!(
                "[sched] workload_rate = {} needs the sched subsystem: add \"sched\" to \
                 [subsystems] enabled, or set workload_rate = 0",
                self.workload_rate
            ));
        }
        self.engine_config(policy)
            .validate()
            .map_err(|e| format!("[sched] workload: {e}"))
    }

    /// The memory and network workloads' checks: only with their subsystem enabled, and a
    /// load the run code accepts.
    fn validate_lanes(&self) -> Result<(), String> {
        let enabled = |n: &str| self.subsystems.iter().any(|s| s == n);
        if self.mem_table_mib > 0 {
            if !enabled("mem") {
                return Err(format!(
                    "[mem] workload_table_mib = {} needs the mem subsystem: add \"mem\" to \
                     [subsystems] enabled, or set workload_table_mib = 0",
                    self.mem_table_mib
                ));
            }
            crate::mem::run::check_load(
                self.mem_table_mib,
                f64::from(self.mem_rate),
                self.mem_duration_s as f64,
            )
            .map_err(|e| format!("[mem] workload: {e}"))?;
        }
        if self.net_workers > 0 && !enabled("net") {
            return Err(format!(
                "[net] workload_workers = {} needs the net subsystem: add \"net\" to \
                 [subsystems] enabled, or set workload_workers = 0",
                self.net_workers
            ));
        }
        Ok(())
    }

    /// The memory workload's run settings (a lane), or `None` when none is configured.
    pub fn mem_workload(&self) -> Option<crate::mem::run::MemRunConfig> {
        if self.mem_table_mib == 0 || !self.subsystems.iter().any(|s| s == "mem") {
            return None;
        }
        let d = crate::mem::run::MemRunConfig::default();
        Some(crate::mem::run::MemRunConfig {
            table_bytes: (self.mem_table_mib as usize) << 20,
            duration: Duration::from_secs(self.mem_duration_s),
            load: crate::mem::kv::KvLoadConfig {
                rate_per_s: f64::from(self.mem_rate),
                ..d.load
            },
            lane: true,
            pin: false,
            progress: false,
            ..d
        })
    }

    /// The network workload's run settings (a lane), or `None` when none is configured.
    pub fn net_workload(&self) -> Option<crate::net::control::NetRunConfig> {
        if self.net_workers == 0 || !self.subsystems.iter().any(|s| s == "net") {
            return None;
        }
        let d = crate::net::control::NetRunConfig::default();
        let workers = self.net_workers as usize;
        let phases = crate::net::load::PHASES.len() as f64;
        Some(crate::net::control::NetRunConfig {
            workers,
            load: crate::net::load::LoadConfig {
                capacity_rps: d.load.capacity_of(workers),
                phase_s: self.net_duration_s as f64 / phases,
                ..d.load
            },
            lane: true,
            progress: false,
            ..d
        })
    }

    /// The scheduling engine's settings for the workload (see [`Self::validate_workload`]),
    /// or `None` when no workload is configured. Its handle is not set.
    pub fn sched_workload(&self) -> Option<EngineConfig> {
        if self.workload_rate == 0 || !self.subsystems.iter().any(|s| s == "sched") {
            return None;
        }
        let policy = PolicyChoice::from_cli(&self.sched_policy, None, &self.sched_params).ok()?;
        Some(self.engine_config(policy))
    }

    fn engine_config(&self, policy: PolicyChoice) -> EngineConfig {
        let until_stopped = Duration::from_secs_f64(crate::engine::MAX_DURATION_S);
        EngineConfig {
            policy,
            rate: f64::from(self.workload_rate),
            duration: match self.workload_duration_s {
                0 => until_stopped,
                s => Duration::from_secs(s),
            },
            cpus: self.host_cpus,
            handlers: self.workload_handlers,
            peer_timeout: Duration::from_millis(self.heartbeat_stale_ms.min(600_000)),
            link_up_timeout: Duration::from_secs(120),
            stop_link_at_end: false,
            fallback: true,
            progress: false,
            ..EngineConfig::default()
        }
    }

    /// The echo probe's interval, if the echo subsystem is enabled and the probe is on.
    pub fn probe_interval(&self) -> Option<std::time::Duration> {
        (self.subsystems.iter().any(|s| s == "echo") && self.probe_interval_ms > 0)
            .then(|| std::time::Duration::from_millis(self.probe_interval_ms))
    }

    /// Doorbell vectors the subsystems need.
    pub fn needed_vectors(&self) -> u16 {
        (wave_abi::sched::CPU_VECTOR_BASE + self.host_cpus as u16)
            .max(wave_abi::layout::MIN_VECTORS as u16)
    }

    /// Doorbell vectors to configure.
    pub fn vector_count(&self) -> u16 {
        if self.vectors == 0 {
            self.needed_vectors()
        } else {
            self.vectors
        }
    }

    /// The IPU core of each channel of the subsystem table (`None`: not enabled).
    pub fn placement(&self) -> Vec<Option<u32>> {
        SUBSYSTEMS
            .iter()
            .map(|s| {
                self.subsystems
                    .iter()
                    .position(|e| e == s.name)
                    .map(|i| i as u32 + 1)
            })
            .collect()
    }

    /// The firmware's boot argument placing the services (`wave.services=sched@1,echo@2`).
    pub fn services_arg(&self) -> String {
        let list: Vec<String> = self
            .subsystems
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s}@{}", i + 1))
            .collect();
        format!("wave.services={}", list.join(","))
    }

    /// IPU cores to boot.
    pub fn ipu_core_count(&self) -> u32 {
        if self.ipu_cores == 0 {
            self.subsystems.len() as u32 + 1
        } else {
            self.ipu_cores
        }
    }
}

use wave_abi::Layout;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_file_is_the_default() {
        assert_eq!(Config::parse(DEFAULT_FILE).unwrap(), Config::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn derived_values() {
        let c = Config::default();
        assert_eq!(c.services_arg(), "wave.services=sched@1,echo@2");
        assert_eq!(c.ipu_core_count(), 3);
        let p = c.placement();
        let at = |n: &str| p[SUBSYSTEMS.iter().position(|s| s.name == n).unwrap()];
        assert_eq!((at("sched"), at("echo")), (Some(1), Some(2)));
        assert_eq!(c.vector_count(), wave_abi::sched::CPU_VECTOR_BASE + 2);
    }

    #[test]
    fn a_workload_becomes_engine_settings() {
        assert!(Config::default().sched_workload().is_none());
        let c = Config::parse(
            "[sched]\npolicy = \"fifo\"\nworkload_rate = 500\nworkload_duration_s = 9\n\
             workload_handlers = 16\n",
        )
        .unwrap();
        let e = c.sched_workload().unwrap();
        assert_eq!(e.policy.info.name, "fifo");
        assert_eq!(
            (e.rate, e.duration, e.cpus),
            (500.0, Duration::from_secs(9), 2)
        );
        assert_eq!(e.handlers, 16);
        assert!(!e.stop_link_at_end && e.fallback && e.handle.is_none());
        let open = Config::parse("[sched]\nworkload_rate = 1\n").unwrap();
        let d = open.sched_workload().unwrap().duration;
        assert!(d.as_secs() > 300 * 24 * 3600, "until stopped: {d:?}");
    }

    #[test]
    fn mem_and_net_workloads_become_lane_settings() {
        let d = Config::default();
        assert!(d.mem_workload().is_none() && d.net_workload().is_none());
        let c = Config::parse(
            "[subsystems]\nenabled = [\"sched\", \"mem\", \"net\"]\n[mem]\n\
             workload_table_mib = 64\nworkload_rate = 3000\nworkload_duration_s = 4\n\
             [net]\nworkload_workers = 2\nworkload_duration_s = 4\n",
        )
        .unwrap();
        let m = c.mem_workload().unwrap();
        assert_eq!(
            (m.table_bytes, m.duration),
            (64 << 20, Duration::from_secs(4))
        );
        assert_eq!(m.load.rate_per_s, 3000.0);
        assert!(m.lane && !m.pin && !m.progress);
        let n = c.net_workload().unwrap();
        assert_eq!((n.workers, n.load.phase_s), (2, 1.0));
        assert!(n.lane && !n.progress && n.load.capacity_rps > 0.0);
    }

    #[test]
    fn bad_files_are_refused_with_what_to_do() {
        for (text, says) in [
            ("[link]\nsockett = \"x\"\n", "unknown key [link] sockett"),
            ("[nope]\na = 1\n", "unknown key [nope] a"),
            ("[link]\nshm_size = \"3M\"\n", "not a power-of-two size"),
            ("[link]\nshm_size = 1\n", "must be a string, not an integer"),
            ("[link]\nshm_size = \"4K\"\n", "too small"),
            ("[link]\nring_entries = 100\n", "not a power of two"),
            ("[link]\nring_entries = 0\n", "out of range; use 2..=65536"),
            ("[link]\nvectors = 3\n", "too few"),
            (
                "[subsystems]\nenabled = [\"disk\"]\n",
                "unknown subsystem `disk`",
            ),
            (
                "[subsystems]\nenabled = [\"sched\", \"sched\"]\n",
                "listed twice",
            ),
            ("[sched]\npolicy = \"lottery\"\n", "[sched]"),
            ("[sched]\nparams = [\"bogus=1\"]\n", "[sched]"),
            ("[sched]\nhost_cpus = 0\n", "out of range"),
            (
                "[subsystems]\nenabled = [\"echo\"]\n[sched]\nworkload_rate = 10\n",
                "needs the sched subsystem",
            ),
            ("[sched]\nworkload_rate = -1\n", "out of range"),
            ("[sched]\nworkload_duration_s = 86401\n", "out of range"),
            ("[sched]\nworkload_handlers = 0\n", "out of range"),
            (
                "[sched]\nworkload_rate = 10\nhost_cpus = 40\n",
                "[sched] workload: configuration: cpus must be",
            ),
            (
                "[mem]\nworkload_table_mib = 16\n",
                "needs the mem subsystem",
            ),
            ("[net]\nworkload_workers = 2\n", "needs the net subsystem"),
            (
                "[subsystems]\nenabled = [\"mem\"]\n[mem]\nworkload_table_mib = 4\n",
                "[mem] workload: table size 4 MiB",
            ),
            ("[mem]\nworkload_table_mib = 4096\n", "out of range"),
            (
                "[mem]\nworkload_duration_s = 31\n",
                "out of range; use 1..=30",
            ),
            ("[net]\nworkload_duration_s = 0\n", "out of range"),
            ("[net]\nworkload_workers = 65\n", "out of range"),
            (
                "[thresholds]\nheartbeat_stale_ms = true\n",
                "must be an integer",
            ),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
