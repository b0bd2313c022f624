//! The `linux` baseline: no shim. The same handlers are plain OS threads, restricted to the
//! same cores the shim's CPUs use, blocking on a condition variable for requests from the same
//! generator; Linux (CFS/EEVDF) schedules them.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::hist::Histogram;
use super::results::{EngineResults, Span};
use super::workload::{Kind, Request, Table, Work};
use super::{Clock, EngineConfig, EngineError};

pub(super) fn run(cfg: &EngineConfig) -> Result<EngineResults, EngineError> {
    let wall = Instant::now();
    let table = Table::new(cfg.table_keys, cfg.seed);
    let work = cfg
        .work
        .unwrap_or_else(|| Work::calibrate(&table, cfg.get_us * 1e3, cfg.range_ms * 1e6));
    let clock = Clock::new();
    let queue: Mutex<VecDeque<Request>> = Mutex::new(VecDeque::new());
    let cv = Condvar::new();
    let stop = AtomicBool::new(false);
    let stop_gen = AtomicBool::new(false);
    let (get, range) = (Histogram::new(), Histogram::new());
    let (offered, completed, queued) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let busy = AtomicU64::new(0);
    let span = Span::default();
    let n = super::cores();
    let mut cores: Vec<usize> = (0..cfg.cpus as usize).map(|c| c % n).collect();
    cores.sort_unstable();
    cores.dedup();
    let mut timed_out = false;
    let gen_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..cfg.handlers {
            s.spawn(|| {
                super::pin_to(&cores);
                loop {
                    let req = {
                        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                        loop {
                            if let Some(r) = q.pop_front() {
                                break Some(r);
                            }
                            if stop.load(Acquire) {
                                break None;
                            }
                            q = cv
                                .wait_timeout(q, Duration::from_millis(10))
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                    };
                    let Some(req) = req else { return };
                    busy.fetch_add(1, Relaxed);
                    work.serve(&table, &req, None, &mut || {}, &mut || {});
                    let now = clock.now_ns();
                    span.done(now);
                    let lat = now.saturating_sub(req.arrival_ns);
                    match req.kind {
                        Kind::Get => get.record(lat),
                        Kind::Range => range.record(lat),
                    }
                    busy.fetch_sub(1, Relaxed);
                    completed.fetch_add(1, Relaxed);
                }
            });
        }
        let generator = s.spawn(|| {
            let n = super::generate(cfg, &clock, &stop_gen, |req, _| {
                offered.fetch_add(1, Relaxed);
                span.arrived(req.arrival_ns);
                let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                if busy.load(Relaxed) >= cfg.handlers as u64 || !q.is_empty() {
                    queued.fetch_add(1, Relaxed);
                }
                q.push_back(req);
                drop(q);
                cv.notify_one();
            });
            span.load_ended(clock.now_ns());
            gen_done.store(true, Release);
            n
        });
        let progress = cfg.progress || std::io::stdout().is_terminal();
        let mut last_print = Instant::now();
        let mut drain: Option<Instant> = None;
        loop {
            std::thread::sleep(Duration::from_millis(1));
            if progress && last_print.elapsed() >= Duration::from_millis(500) {
                last_print = Instant::now();
                eprint!(
                    "{}[linux] {:>6.1}s completed {:>9} GET p99 {:>9.1} µs   {}",
                    crate::engine::progress_prefix(),
                    wall.elapsed().as_secs_f64(),
                    completed.load(Relaxed),
                    get.quantile(0.99) as f64 / 1e3,
                    crate::engine::progress_suffix()
                );
            }
            if gen_done.load(Acquire) {
                let d = *drain.get_or_insert_with(Instant::now);
                if completed.load(Relaxed) >= offered.load(Relaxed) {
                    break;
                }
                if d.elapsed() > cfg.drain_timeout {
                    timed_out = true;
                    break;
                }
            }
        }
        if progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!();
        }
        stop_gen.store(true, Release);
        let _ = generator.join();
        stop.store(true, Release);
        cv.notify_all();
    });
    let left = queue.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    let lost = offered.load(Relaxed) - completed.load(Relaxed);
    let violations = u64::from(timed_out || left > 0 || lost > 0);
    let mut r = EngineResults {
        mode: "linux".into(),
        policy: "linux".into(),
        cpus: cfg.cpus,
        handlers: cfg.handlers,
        rate: cfg.rate,
        duration_s: cfg.duration.as_secs_f64(),
        work: super::runtime::work_desc(&work),
        get_chunks: work.get_chunks,
        range_chunks: work.range_chunks,
        offered: offered.load(Relaxed),
        completed: completed.load(Relaxed),
        get: get.summary(),
        range: range.summary(),
        queued: queued.load(Relaxed),
        invariant_violations: violations,
        first_violation: (violations > 0)
            .then(|| format!("{lost} requests never completed, {left} left queued")),
        agent_cpu_ns: None,
        wall_s: wall.elapsed().as_secs_f64(),
        ..Default::default()
    };
    span.fill(&mut r);
    Ok(r)
}
