//! The service's memory and network workloads (`[mem] workload_table_mib`, `[net]
//! workload_workers`): each subsystem's host side run once, as a lane of whatever primary
//! endpoint the service runs (the scheduling engine or the link keeper; docs/abi.md §5
//! "Lanes"), as soon as an IPU connects, for its configured duration. Neither run can be cut
//! short, so a SIGTERM waits for it (the durations are capped to fit the unit's stop
//! timeout); each tears down its own far tier (zram) or eBPF steering at its end. Their state
//! and final counts go to the stats.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{log, Config};
use crate::ivshmem::IvshmemServer;
use crate::link::Link;
use crate::mem::run::{self as mem_run, MemMode, MemRunConfig};
use crate::net::control::{self as net_control, NetRunConfig};
use crate::stats::LaneRun;

/// What one lane runs.
enum Work {
    Mem(MemRunConfig),
    Net(NetRunConfig),
}

/// One configured lane workload and its live state.
pub struct LaneWork {
    work: Work,
    state: Mutex<LaneRun>,
}

/// The lane workloads `cfg` configures: (memory, network).
pub fn configured(cfg: &Config) -> (Option<LaneWork>, Option<LaneWork>) {
    let new = |work| LaneWork {
        work,
        state: Mutex::new(LaneRun::default()),
    };
    (
        cfg.mem_workload().map(|c| new(Work::Mem(c))),
        cfg.net_workload().map(|c| new(Work::Net(c))),
    )
}

impl LaneWork {
    fn name(&self) -> &'static str {
        match self.work {
            Work::Mem(_) => "mem",
            Work::Net(_) => "net",
        }
    }

    /// The live state, for the stats.
    pub fn live(&self) -> LaneRun {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, f: impl FnOnce(&mut LaneRun)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Before a primary endpoint starts on a new IPU connection: state the IPU's lane reads
    /// when that session comes up (the memory policy's configuration; the region was just
    /// zeroed). Nothing once the run has ended.
    pub fn prepare(&self, server: &IvshmemServer) {
        if let Work::Mem(c) = &self.work {
            if self.live().finished {
                return;
            }
            if let Err(e) = mem_run::publish_config(&server.region(), c) {
                log(format_args!(
                    "mem workload: cannot publish its configuration: {e}"
                ));
            }
        }
    }

    /// Waits for an IPU (or `stop`), then runs once, bounded by its duration, and logs its
    /// summary.
    pub fn run(&self, server: &IvshmemServer, stop: &AtomicBool) {
        while !server.peer_present() {
            if stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.set(|s| s.running = true);
        log(format_args!(
            "IPU connected: the {} workload starts ({})",
            self.name(),
            self.describe()
        ));
        let out = match &self.work {
            Work::Mem(c) => mem_run::run_managed(server, MemMode::Ipu, c).map(|r| mem_summary(&r)),
            Work::Net(c) => net_control::run_ipu(server, c).map(|r| net_summary(&r)),
        };
        let line = match &out {
            Ok((line, _)) => format!("the {} workload ended: {line}", self.name()),
            Err(e) => format!("the {} workload could not run: {e}", self.name()),
        };
        self.set(|s| {
            s.running = false;
            s.finished = true;
            s.failed = out.is_err();
            s.summary = out.map(|(_, counts)| counts).unwrap_or_default();
        });
        log(format_args!("{line}"));
    }

    fn describe(&self) -> String {
        match &self.work {
            Work::Mem(c) => format!(
                "{} MiB table, {:.0} ops/s, {} s",
                c.table_bytes >> 20,
                c.load.rate_per_s,
                c.duration.as_secs()
            ),
            Work::Net(c) => format!(
                "{} workers, {:.0} s in four phases",
                c.workers,
                c.load.phase_s * 4.0
            ),
        }
    }
}

type Summary = (String, Vec<(&'static str, i64)>);

fn mem_summary(r: &mem_run::MemRunResults) -> Summary {
    let saved = r.saved[2];
    let line = format!(
        "{} ops, saved {} MiB net (far tier {}{}), {} checksum failures, {} invariant violations",
        r.ops,
        saved >> 20,
        r.far_tier,
        r.note.as_ref().map_or(String::new(), |n| format!(": {n}")),
        r.checksum_failures,
        r.invariant_violations
    );
    let counts = vec![
        ("ops", r.ops as i64),
        ("saved_bytes", saved),
        ("far_tier_zram", i64::from(r.far_tier.starts_with("zram"))),
        ("checksum_failures", r.checksum_failures as i64),
        ("invariant_violations", r.invariant_violations as i64),
    ];
    (line, counts)
}

fn net_summary(r: &net_control::NetRunResult) -> Summary {
    let line = format!(
        "{} of {} requests answered, workers held {:.1} on average (peak {}), steering {}",
        r.answered, r.sent, r.avg_cores, r.peak_cores, r.steering
    );
    let counts = vec![
        ("sent", r.sent as i64),
        ("answered", r.answered as i64),
        ("workers_held_peak", i64::from(r.peak_cores)),
        (
            "workers_held_avg_milli",
            (r.avg_cores * 1000.0).round() as i64,
        ),
        ("steering_ebpf", i64::from(r.steering == "ebpf")),
    ];
    (line, counts)
}
