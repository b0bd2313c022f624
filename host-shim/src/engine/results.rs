//! What a run measured, with a hand-written JSON encoder (no serde) and a one-screen text form.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::hist::Latency;

/// A run is marked saturated when its requests kept completing this long after the load ended,
/// as a share of the load's duration (and at least [`SATURATED_MIN_DRAIN_S`]), or when its
/// throughput fell below this share of the offered rate.
pub const SATURATED_DRAIN_SHARE: f64 = 0.05;
/// See [`SATURATED_DRAIN_SHARE`].
pub const SATURATED_MIN_DRAIN_S: f64 = 0.05;
/// See [`SATURATED_DRAIN_SHARE`].
pub const SATURATED_THROUGHPUT_SHARE: f64 = 0.95;

/// The time span a run served: first arrival, end of the load, last completion (engine clock,
/// ns). Shared by the worker threads; every update is a relaxed min/max.
#[derive(Debug)]
pub(crate) struct Span {
    first_arrival: AtomicU64,
    load_end: AtomicU64,
    last_done: AtomicU64,
}

impl Default for Span {
    fn default() -> Self {
        Span {
            first_arrival: AtomicU64::new(u64::MAX),
            load_end: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
        }
    }
}

impl Span {
    /// A request arrived (its scheduled arrival time).
    pub(crate) fn arrived(&self, ns: u64) {
        self.first_arrival.fetch_min(ns, Relaxed);
    }
    /// The generator stopped offering load.
    pub(crate) fn load_ended(&self, ns: u64) {
        self.load_end.fetch_max(ns, Relaxed);
    }
    /// A request completed.
    pub(crate) fn done(&self, ns: u64) {
        self.last_done.fetch_max(ns, Relaxed);
    }
    /// Fills throughput (completed ÷ first arrival → last completion), the drain time after
    /// the load ended and the saturation mark of `r` (whose counts and rate are set).
    pub(crate) fn fill(&self, r: &mut EngineResults) {
        let first = self.first_arrival.load(Relaxed);
        let last = self.last_done.load(Relaxed);
        let end = self.load_end.load(Relaxed);
        r.span_s = if first == u64::MAX || last <= first {
            0.0
        } else {
            (last - first) as f64 / 1e9
        };
        r.drain_s = last.saturating_sub(end) as f64 / 1e9;
        r.throughput_rps = if r.span_s > 0.0 {
            r.completed as f64 / r.span_s
        } else {
            0.0
        };
        r.saturated = r.is_saturated();
    }
}

/// Results of one engine run.
#[derive(Clone, Debug, Default)]
pub struct EngineResults {
    /// `ipu`, `host` or `linux`.
    pub mode: String,
    /// Policy name (`fifo`, `shinjuku`; `linux` in linux mode).
    pub policy: String,
    /// Host CPUs.
    pub cpus: u32,
    /// Handler threads.
    pub handlers: u32,
    /// Offered rate (req/s).
    pub rate: f64,
    /// Load duration (s).
    pub duration_s: f64,
    /// How requests do their work.
    pub work: String,
    /// Measured GET / RANGE chunk cost (ns) and chunks per request.
    pub get_chunks: u32,
    /// Chunks per RANGE.
    pub range_chunks: u32,
    /// Requests offered.
    pub offered: u64,
    /// Requests completed.
    pub completed: u64,
    /// Completed requests ÷ (first arrival → last completion), req/s.
    pub throughput_rps: f64,
    /// First arrival → last completion (s).
    pub span_s: f64,
    /// End of the load → last completion (s): how long the backlog took to drain.
    pub drain_s: f64,
    /// The run could not keep up with the offered load (see [`SATURATED_DRAIN_SHARE`]).
    pub saturated: bool,
    /// GET latency (arrival → completion).
    pub get: Latency,
    /// RANGE latency.
    pub range: Latency,
    /// Transactions committed.
    pub txn_committed: u64,
    /// Failed: stale.
    pub txn_failed_stale: u64,
    /// Failed: not runnable.
    pub txn_failed_not_runnable: u64,
    /// Failed: not found.
    pub txn_failed_not_found: u64,
    /// Failed: invalid (affinity, bad tid).
    pub txn_failed_invalid: u64,
    /// Aborts that won.
    pub txn_aborted: u64,
    /// Transactions taken from slots (= outcomes posted).
    pub txn_taken: u64,
    /// Preemptions honoured (Preempted events).
    pub preemptions: u64,
    /// Preempt request first seen at a safe point → thread off the CPU (µs).
    pub preempt_seen_to_yield: Latency,
    /// Preempt request written by the agent → thread off the CPU (µs; host mode only, where
    /// both ends share a clock).
    pub preempt_request_to_yield: Latency,
    /// Thread became runnable (event time) → a commit made it run (µs).
    pub decision_latency: Latency,
    /// Host CPU time spent in the agent thread (ns): host mode only; 0 for ipu; None for linux.
    pub agent_cpu_ns: Option<u64>,
    /// Agent CPU time as a share of one core over the run.
    pub agent_cpu_share: Option<f64>,
    /// Events posted on the events ring.
    pub events_sent: u64,
    /// Doorbells the host rang at the agent (it said it sleeps).
    pub doorbells_to_agent: u64,
    /// CPU doorbells that woke a sleeping host CPU.
    pub doorbells_to_cpus: u64,
    /// CpuIdle events.
    pub cpu_idle: u64,
    /// Yield events.
    pub yields: u64,
    /// Affinity changes (storm).
    pub affinity_changes: u64,
    /// Requests that waited for a handler (none was free when they arrived).
    pub queued: u64,
    /// Invariant violations (must be 0).
    pub invariant_violations: u64,
    /// The first violation, described.
    pub first_violation: Option<String>,
    /// The agent's own counters, if it ran in this process (host mode).
    pub agent: Option<String>,
    /// Wall time of the whole run including drain (s).
    pub wall_s: f64,
    /// ipu mode: times scheduling failed over to the host's fallback agent.
    pub failovers: u64,
    /// ipu mode: times it was handed back to an IPU.
    pub handbacks: u64,
    /// ipu mode: seconds the fallback agent scheduled.
    pub fallback_s: f64,
    /// ipu mode: longest time without a commit across a switch (ms).
    pub worst_stall_ms: f64,
    /// ipu mode: longest time from the IPU's last heartbeat to the failover (ms).
    pub worst_detection_ms: f64,
    /// Resynchronisations (every thread re-announced to a new agent session).
    pub resyncs: u64,
    /// ipu mode: host CPU time the fallback agent used (ns).
    pub fallback_agent_cpu_ns: u64,
    /// ipu mode without fallback: why the run ended early (the IPU died or stopped).
    pub peer_lost: Option<String>,
    /// Why each failover happened.
    pub failover_causes: Vec<String>,
    /// ipu mode with `--kill-ipu-every`: QEMU runs the runner killed.
    pub ipu_restarts: u64,
    /// Policy hot-swaps done during the run.
    pub policy_swaps: u64,
}

fn lat(out: &mut String, name: &str, l: &Latency) {
    let _ = write!(
        out,
        "\"{name}\":{{\"count\":{},\"mean_us\":{:.3},\"p50_us\":{:.3},\"p99_us\":{:.3},\"p999_us\":{:.3},\"max_us\":{:.3}}}",
        l.count, l.mean_us, l.p50_us, l.p99_us, l.p999_us, l.max_us
    );
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl EngineResults {
    /// Sum of failed transactions.
    pub fn txn_failed(&self) -> u64 {
        self.txn_failed_stale
            + self.txn_failed_not_runnable
            + self.txn_failed_not_found
            + self.txn_failed_invalid
    }

    /// Offered requests per second of load.
    pub fn offered_rps(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.offered as f64 / self.duration_s
        } else {
            0.0
        }
    }

    /// The saturation rule of [`SATURATED_DRAIN_SHARE`].
    pub fn is_saturated(&self) -> bool {
        let drain_limit = (self.duration_s * SATURATED_DRAIN_SHARE).max(SATURATED_MIN_DRAIN_S);
        self.drain_s > drain_limit
            || self.throughput_rps < self.offered_rps() * SATURATED_THROUGHPUT_SHARE
    }

    /// JSON object (one line).
    pub fn to_json(&self) -> String {
        let mut o = String::from("{");
        let _ = write!(
            o,
            "\"mode\":{},\"policy\":{},\"cpus\":{},\"handlers\":{},\"rate\":{},\"duration_s\":{:.3},\"work\":{},\"get_chunks\":{},\"range_chunks\":{},",
            esc(&self.mode),
            esc(&self.policy),
            self.cpus,
            self.handlers,
            self.rate,
            self.duration_s,
            esc(&self.work),
            self.get_chunks,
            self.range_chunks
        );
        let _ = write!(
            o,
            "\"offered\":{},\"completed\":{},\"throughput_rps\":{:.1},\"span_s\":{:.4},\"drain_s\":{:.4},\"saturated\":{},",
            self.offered, self.completed, self.throughput_rps, self.span_s, self.drain_s, self.saturated
        );
        lat(&mut o, "get", &self.get);
        o.push(',');
        lat(&mut o, "range", &self.range);
        let _ = write!(
            o,
            ",\"txn\":{{\"taken\":{},\"committed\":{},\"failed\":{{\"stale\":{},\"not_runnable\":{},\"not_found\":{},\"invalid\":{}}},\"aborted\":{}}},",
            self.txn_taken,
            self.txn_committed,
            self.txn_failed_stale,
            self.txn_failed_not_runnable,
            self.txn_failed_not_found,
            self.txn_failed_invalid,
            self.txn_aborted
        );
        let _ = write!(o, "\"preemptions\":{},", self.preemptions);
        lat(&mut o, "preempt_seen_to_yield", &self.preempt_seen_to_yield);
        o.push(',');
        lat(
            &mut o,
            "preempt_request_to_yield",
            &self.preempt_request_to_yield,
        );
        o.push(',');
        lat(&mut o, "decision_latency", &self.decision_latency);
        let opt = |v: Option<u64>| v.map_or("null".to_string(), |x| x.to_string());
        let optf = |v: Option<f64>| v.map_or("null".to_string(), |x| format!("{x:.4}"));
        let _ = write!(
            o,
            ",\"agent_cpu_ns\":{},\"agent_cpu_share\":{},\"events_sent\":{},\"doorbells_to_agent\":{},\"doorbells_to_cpus\":{},\"cpu_idle\":{},\"yields\":{},\"affinity_changes\":{},\"queued\":{},\"invariant_violations\":{},\"first_violation\":{},\"agent\":{},\"wall_s\":{:.3}}}",
            opt(self.agent_cpu_ns),
            optf(self.agent_cpu_share),
            self.events_sent,
            self.doorbells_to_agent,
            self.doorbells_to_cpus,
            self.cpu_idle,
            self.yields,
            self.affinity_changes,
            self.queued,
            self.invariant_violations,
            self.first_violation.as_deref().map_or("null".into(), esc),
            self.agent.as_deref().map_or("null".into(), esc),
            self.wall_s
        );
        // Lifecycle fields (issue 9), spliced in before the closing brace.
        o.pop();
        let _ = write!(
            o,
            ",\"failovers\":{},\"handbacks\":{},\"fallback_s\":{:.3},\"worst_stall_ms\":{:.3},\"worst_detection_ms\":{:.3},\"resyncs\":{},\"fallback_agent_cpu_ns\":{},\"ipu_restarts\":{},\"policy_swaps\":{},\"peer_lost\":{}}}",
            self.failovers,
            self.handbacks,
            self.fallback_s,
            self.worst_stall_ms,
            self.worst_detection_ms,
            self.resyncs,
            self.fallback_agent_cpu_ns,
            self.ipu_restarts,
            self.policy_swaps,
            self.peer_lost.as_deref().map_or("null".into(), esc),
        );
        o
    }
}

impl std::fmt::Display for EngineResults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = |x: &Latency| {
            format!(
                "p50 {:.1} p99 {:.1} p99.9 {:.1} µs (n={})",
                x.p50_us, x.p99_us, x.p999_us, x.count
            )
        };
        writeln!(
            f,
            "mode {} policy {} cpus {} handlers {} rate {}/s for {:.1}s; work: {}",
            self.mode, self.policy, self.cpus, self.handlers, self.rate, self.duration_s, self.work
        )?;
        writeln!(
            f,
            "completed {}/{} ({:.0} req/s over {:.2} s, drained {:.3} s after the load{}); {} waited for a handler",
            self.completed,
            self.offered,
            self.throughput_rps,
            self.span_s,
            self.drain_s,
            if self.saturated { ", SATURATED" } else { "" },
            self.queued
        )?;
        writeln!(f, "GET   {}", l(&self.get))?;
        writeln!(f, "RANGE {}", l(&self.range))?;
        if self.mode != "linux" {
            writeln!(
                f,
                "txns taken {} committed {} failed {} (stale {} not-runnable {} not-found {} invalid {}) aborted {}",
                self.txn_taken,
                self.txn_committed,
                self.txn_failed(),
                self.txn_failed_stale,
                self.txn_failed_not_runnable,
                self.txn_failed_not_found,
                self.txn_failed_invalid,
                self.txn_aborted
            )?;
            writeln!(
                f,
                "preemptions {}; seen→yield {}; request→yield {}",
                self.preemptions,
                l(&self.preempt_seen_to_yield),
                l(&self.preempt_request_to_yield)
            )?;
            writeln!(f, "decision latency {}", l(&self.decision_latency))?;
            writeln!(
                f,
                "events {} doorbells host→agent {} agent→cpus {} cpu-idle {} yields {} queued {}",
                self.events_sent,
                self.doorbells_to_agent,
                self.doorbells_to_cpus,
                self.cpu_idle,
                self.yields,
                self.queued
            )?;
        }
        if let Some(ns) = self.agent_cpu_ns {
            writeln!(
                f,
                "agent CPU time {:.1} ms ({:.1}% of one core)",
                ns as f64 / 1e6,
                self.agent_cpu_share.unwrap_or(0.0) * 100.0
            )?;
        }
        write!(f, "invariant violations {}", self.invariant_violations)?;
        if let Some(v) = &self.first_violation {
            write!(f, " (first: {v})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(offered: u64, completed: u64, duration_s: f64) -> EngineResults {
        EngineResults {
            offered,
            completed,
            duration_s,
            ..Default::default()
        }
    }

    #[test]
    fn throughput_counts_wall_time_to_the_last_completion() {
        // 10k requests offered over 1 s, served 1 ms after the load: not saturated.
        let span = Span::default();
        span.arrived(2_000_000);
        span.arrived(1_000_000);
        span.load_ended(1_000_000_000);
        span.done(1_001_000_000);
        let mut r = run(10_000, 10_000, 1.0);
        span.fill(&mut r);
        assert!((r.span_s - 1.0).abs() < 1e-9, "{}", r.span_s);
        assert!((r.drain_s - 0.001).abs() < 1e-9);
        assert!((r.throughput_rps - 10_000.0).abs() < 1.0);
        assert!(!r.saturated);
        // The same requests still completing 0.8 s after the load ended: saturated, and the
        // throughput says so.
        span.done(1_800_000_000);
        let mut r = run(10_000, 10_000, 1.0);
        span.fill(&mut r);
        assert!((r.throughput_rps - 10_000.0 / 1.799).abs() < 1.0);
        assert!(r.saturated);
        assert!(r.to_json().contains("\"saturated\":true"));
    }

    #[test]
    fn an_empty_run_has_no_throughput() {
        let mut r = run(0, 0, 1.0);
        Span::default().fill(&mut r);
        assert_eq!((r.span_s, r.throughput_rps), (0.0, 0.0));
    }
}
