//! The decision path's cost against the number of host cpus: an event trace is recorded once
//! per policy and cpu count from a closed-loop model of the host (open Poisson arrivals of
//! ~10 µs GETs and 0.5% 5 ms RANGEs at 70% load, handler threads, prestaged transactions that
//! commit, fail or are aborted, slice preemption), then replayed into a fresh policy: the same
//! events at the same times, so the policy makes the same decisions. Reports ns per decision
//! and per event at 8, 64 and 256 cpus for fifo, shinjuku and fair, and the 256/8 ratio.
//!
//! `cargo bench -p wave-policy` (criterion); `WAVE_BENCH_STEPS` sets the trace length and
//! `WAVE_BENCH_POLICY` runs one policy only.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wave_policy::registry::{by_name, AnyPolicy};
use wave_policy::{CpuId, Decision, DecisionSink, Event, FailReason, Policy, Seq, Tid, TxnId};

const THREADS: usize = 1024;
const SINK: usize = 64;
const CPU_COUNTS: [usize; 3] = [8, 64, 256];
const POLICIES: [&str; 3] = ["fifo", "shinjuku", "fair"];

/// Decisions of one poll (the agent's batch of [`SINK`]).
struct Sink(Vec<Decision>);

impl DecisionSink for Sink {
    fn try_push(&mut self, d: Decision) -> bool {
        if self.0.len() < SINK {
            self.0.push(d);
            true
        } else {
            false
        }
    }
}

/// One agent step of the trace: its time and the events it drained.
struct Step {
    now: u64,
    events: Vec<Event>,
}

struct Trace {
    steps: Vec<Step>,
    events: u64,
    decisions: u64,
}

fn policy(name: &str, cpus: usize) -> Box<AnyPolicy<256, THREADS>> {
    let info = by_name(name).expect("registered policy");
    Box::new(
        AnyPolicy::build(info.id, cpus, &[0; wave_abi::sched::PARAM_WORDS]).expect("valid policy"),
    )
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -self.unit().ln() * mean
    }
}

#[derive(Clone, Copy, PartialEq)]
enum St {
    Blocked,
    Runnable,
    Running(usize),
}

/// The host side of the model: threads, cpus, transaction slots.
struct Host {
    seq: Vec<u32>,
    st: Vec<St>,
    left_ns: Vec<u64>,
    free: Vec<usize>,
    backlog: VecDeque<u64>,
    run: Vec<Option<(usize, u64, u64)>>, // (tid, started, ends)
    slot: Vec<Option<(TxnId, usize, u32)>>,
    idle_told: Vec<bool>,
    out: Vec<Event>,
}

impl Host {
    fn new(cpus: usize) -> Host {
        let mut h = Host {
            seq: vec![1; THREADS],
            st: vec![St::Blocked; THREADS],
            left_ns: vec![0; THREADS],
            free: (0..THREADS).rev().collect(),
            backlog: VecDeque::new(),
            run: vec![None; cpus],
            slot: vec![None; cpus],
            idle_told: vec![false; cpus],
            out: Vec::new(),
        };
        for t in 0..THREADS {
            h.out.push(Event::ThreadNew {
                tid: Tid(t as u32),
                seq: Seq(1),
                runnable: false,
            });
        }
        h
    }

    fn bump(&mut self, t: usize) -> Seq {
        self.seq[t] += 1;
        Seq(self.seq[t])
    }

    fn arrive(&mut self, work_ns: u64) {
        let Some(t) = self.free.pop() else {
            self.backlog.push_back(work_ns);
            return;
        };
        self.left_ns[t] = work_ns;
        self.st[t] = St::Runnable;
        let seq = self.bump(t);
        self.out.push(Event::Wakeup {
            tid: Tid(t as u32),
            seq,
        });
    }

    /// A run ends at `now`: the thread blocks (done) or, if `preempt`, goes back runnable.
    fn stop(&mut self, c: usize, now: u64, preempt: bool) {
        let Some((t, started, _)) = self.run[c].take() else {
            return;
        };
        let ran = now.saturating_sub(started);
        self.left_ns[t] = self.left_ns[t].saturating_sub(ran);
        let seq = self.bump(t);
        let (tid, cpu) = (Tid(t as u32), CpuId(c as u32));
        if preempt && self.left_ns[t] > 0 {
            self.st[t] = St::Runnable;
            self.out.push(Event::Preempted {
                tid,
                seq,
                cpu,
                ran_ns: ran,
            });
        } else {
            self.st[t] = St::Blocked;
            self.out.push(Event::Blocked {
                tid,
                seq,
                cpu,
                ran_ns: ran,
            });
            match self.backlog.pop_front() {
                Some(w) => {
                    self.left_ns[t] = w;
                    self.st[t] = St::Runnable;
                    let seq = self.bump(t);
                    self.out.push(Event::Wakeup { tid, seq });
                }
                None => self.free.push(t),
            }
        }
        self.claim(c, now);
    }

    /// Cpu `c` is free: take its slot, commit or fail it; else report idle once.
    fn claim(&mut self, c: usize, now: u64) {
        let cpu = CpuId(c as u32);
        let Some((txn, t, seq)) = self.slot[c].take() else {
            if !self.idle_told[c] {
                self.idle_told[c] = true;
                self.out.push(Event::CpuIdle { cpu });
            }
            return;
        };
        let tid = Tid(t as u32);
        if self.seq[t] == seq && self.st[t] == St::Runnable {
            self.st[t] = St::Running(c);
            self.idle_told[c] = false;
            self.run[c] = Some((t, now, now + self.left_ns[t].max(1)));
            self.out.push(Event::TxnCommitted { txn, tid, cpu });
        } else {
            let reason = if self.seq[t] != seq {
                FailReason::Stale
            } else {
                FailReason::NotRunnable
            };
            self.out.push(Event::TxnFailed {
                txn,
                tid,
                cpu,
                reason,
            });
            self.claim(c, now);
        }
    }

    fn apply(&mut self, d: Decision, now: u64) {
        match d {
            Decision::Prestage {
                cpu, txn, tid, seq, ..
            } => {
                let c = cpu.0 as usize;
                self.slot[c] = Some((txn, tid.0 as usize, seq.0));
                if self.run[c].is_none() {
                    self.claim(c, now);
                }
            }
            Decision::Abort { cpu, txn } => {
                let c = cpu.0 as usize;
                if self.slot[c].is_some_and(|s| s.0 == txn) {
                    self.slot[c] = None;
                    self.out.push(Event::TxnAborted { txn, cpu });
                }
            }
            Decision::Preempt { cpu, tid, seq } => {
                let c = cpu.0 as usize;
                let t = tid.0 as usize;
                if self.run[c].is_some_and(|r| r.0 == t) && self.seq[t] == seq.0 {
                    self.stop(c, now, true);
                }
            }
            Decision::Wake { .. } => {}
        }
    }
}

/// Records `steps` agent steps of policy `name` at `cpus` cpus (the agent steps every 2 µs of
/// model time, draining what the host posted since).
fn record(name: &str, cpus: usize, steps: usize) -> Trace {
    let mut p = policy(name, cpus);
    let mut h = Host::new(cpus);
    let mut rng = Rng(0x9E37_79B9 ^ cpus as u64);
    let mean_service = 0.995 * 10_000.0 + 0.005 * 5_000_000.0;
    let gap = mean_service / (0.7 * cpus as f64);
    let mut next_arrival = rng.exp(gap);
    let mut trace = Trace {
        steps: Vec::with_capacity(steps),
        events: 0,
        decisions: 0,
    };
    let mut now = 0u64;
    let mut sink = Sink(Vec::with_capacity(SINK));
    for _ in 0..steps {
        now += 2_000;
        while (next_arrival as u64) <= now {
            let w = if rng.unit() < 0.005 {
                5_000_000.0
            } else {
                10_000.0
            };
            h.arrive(rng.exp(w) as u64 + 1);
            next_arrival += rng.exp(gap);
        }
        for c in 0..cpus {
            if h.run[c].is_some_and(|r| r.2 <= now) {
                h.stop(c, now, false);
            }
        }
        let events = std::mem::take(&mut h.out);
        for &e in &events {
            p.on_event(e, now);
        }
        sink.0.clear();
        p.poll(now, &mut sink);
        trace.events += events.len() as u64;
        trace.decisions += sink.0.len() as u64;
        trace.steps.push(Step { now, events });
        for &d in &sink.0 {
            h.apply(d, now);
        }
    }
    p.check_invariants()
        .expect("the model keeps the policy consistent");
    trace
}

/// Replays `trace` into a fresh policy; returns the ns it took and the decisions made.
fn replay(name: &str, cpus: usize, trace: &Trace) -> (f64, u64) {
    let mut p = policy(name, cpus);
    let mut sink = Sink(Vec::with_capacity(SINK));
    let mut decisions = 0u64;
    let t0 = Instant::now();
    for s in &trace.steps {
        for &e in &s.events {
            p.on_event(e, s.now);
        }
        sink.0.clear();
        decisions += p.poll(s.now, &mut sink) as u64;
        black_box(p.next_deadline(s.now));
    }
    (t0.elapsed().as_nanos() as f64, decisions)
}

fn steps() -> usize {
    std::env::var("WAVE_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn bench(c: &mut Criterion) {
    let mut summary = Vec::new();
    let only = std::env::var("WAVE_BENCH_POLICY").ok();
    for name in POLICIES {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let mut g = c.benchmark_group(format!("decision/{name}"));
        g.sample_size(10);
        for cpus in CPU_COUNTS {
            let trace = record(name, cpus, steps());
            g.throughput(Throughput::Elements(trace.decisions));
            g.bench_function(format!("{cpus}cpus"), |b| {
                b.iter_custom(|iters| {
                    let mut ns = 0.0;
                    for _ in 0..iters {
                        let (t, d) = replay(name, cpus, &trace);
                        assert_eq!(d, trace.decisions, "the replay decides as recorded");
                        ns += t;
                    }
                    std::time::Duration::from_nanos(ns as u64)
                })
            });
            let mut runs: Vec<f64> = (0..7).map(|_| replay(name, cpus, &trace).0).collect();
            runs.sort_by(f64::total_cmp);
            summary.push((name, cpus, runs[3], trace.events, trace.decisions));
        }
        g.finish();
    }
    println!("\npolicy    cpus  events  decisions  ns/decision  ns/event  vs 8 cpus");
    for &(name, cpus, ns, ev, dec) in &summary {
        let per_dec = ns / dec.max(1) as f64;
        let base = summary
            .iter()
            .find(|s| s.0 == name && s.1 == 8)
            .map_or(per_dec, |s| s.2 / s.4.max(1) as f64);
        println!(
            "{name:<9} {cpus:>4} {ev:>7} {dec:>10} {per_dec:>12.0} {:>9.0} {:>9.2}x",
            ns / ev.max(1) as f64,
            per_dec / base
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
