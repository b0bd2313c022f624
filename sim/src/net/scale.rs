//! The simulator's results and its scale comparison: per-phase p99 and workers held, the
//! reaction time to the step and the throughput within the SLO (the demo's definitions,
//! `docs/network.md`), and, per worker count, the allocator against static-all and the static
//! minimum found by a peak-only search.

use std::fmt::Write as _;

use super::{simulate, NetSimConfig, NetSimReport};

fn p99(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Fills the latency and cores figures of `rep` from the completions (arrival, latency) and
/// the workers held per interval (t, held).
pub(super) fn summarize(
    cfg: &NetSimConfig,
    done: &[(u64, u64)],
    held: &[(u64, usize)],
    rep: &mut NetSimReport,
) {
    let phases = cfg.phases() as usize;
    let mut lat: [Vec<u64>; 4] = Default::default();
    let mut cores = [(0usize, 0usize); 4];
    for &(a, l) in done {
        lat[((a / cfg.phase_ns) as usize).min(phases - 1)].push(l);
    }
    for &(t, k) in held {
        let c = &mut cores[((t / cfg.phase_ns) as usize).min(phases - 1)];
        *c = (c.0 + k, c.1 + 1);
    }
    for p in 0..phases {
        rep.p99_ns[p] = p99(&mut lat[p]);
        rep.cores[p] = cores[p].0 as f64 / cores[p].1.max(1) as f64;
    }
    let sum: usize = held.iter().map(|h| h.1).sum();
    rep.avg_cores = sum as f64 / held.len().max(1) as f64;
    rep.peak_cores = held.iter().map(|h| h.1).max().unwrap_or(0);
    let windows = windows(cfg, done);
    let good: u64 = windows
        .iter()
        .filter(|w| w.0 <= cfg.slo_ns)
        .map(|w| w.1)
        .sum();
    rep.goodput_rps = good as f64 * 1e9 / (cfg.phases() * cfg.phase_ns) as f64;
    rep.reaction_ns = if cfg.peak_only {
        None
    } else {
        reaction(cfg, &windows)
    };
}

/// Per window (by arrival): (p99, completions).
fn windows(cfg: &NetSimConfig, done: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let n = (cfg.phases() * cfg.phase_ns).div_ceil(cfg.window_ns.max(1)) as usize;
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); n];
    for &(a, l) in done {
        if let Some(v) = lat.get_mut((a / cfg.window_ns.max(1)) as usize) {
            v.push(l);
        }
    }
    lat.iter_mut().map(|v| (p99(v), v.len() as u64)).collect()
}

/// From the step until the first window after which every peak window meets the SLO.
fn reaction(cfg: &NetSimConfig, windows: &[(u64, u64)]) -> Option<u64> {
    let per = (cfg.phase_ns / cfg.window_ns.max(1)) as usize;
    let peak = windows.get(per..(2 * per).min(windows.len()))?;
    match peak.iter().rposition(|w| w.0 > cfg.slo_ns) {
        None => Some(0),
        Some(i) if i + 1 < peak.len() => Some((i as u64 + 1) * cfg.window_ns),
        Some(_) => None,
    }
}

/// The fewest workers (from the peak's offered cores up, every worker count: the simulator is
/// cheap) whose p99 in a peak-only run meets the SLO; `None` if not even all of them do.
pub fn static_minimum(cfg: &NetSimConfig) -> Result<Option<usize>, String> {
    let n = cfg.workers;
    let from = ((cfg.peak * n as f64).ceil() as usize).clamp(1, n);
    for k in from..=n {
        let c = NetSimConfig {
            static_workers: Some(k),
            peak_only: true,
            ..cfg.clone()
        };
        let r = simulate(&c)?;
        if r.p99_ns[0] <= cfg.slo_ns {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

/// One worker count: static-all, the static minimum (all workers if none met the SLO, said
/// by `static_min_met`), and the allocator.
#[derive(Clone, Debug)]
pub struct ScaleRow {
    /// Workers.
    pub workers: usize,
    /// The static minimum, and whether it met the SLO at the peak.
    pub static_min: usize,
    /// See [`ScaleRow::static_min`].
    pub static_min_met: bool,
    /// Runs: static-all, static-min, the allocator.
    pub runs: [NetSimReport; 3],
}

/// Runs the three configurations at `workers`, with the peak at `peak` of capacity.
pub fn compare(workers: usize, peak: f64) -> Result<ScaleRow, String> {
    let cfg = NetSimConfig {
        peak,
        ..NetSimConfig::scaled(workers)
    };
    let found = static_minimum(&cfg)?;
    let k = found.unwrap_or(workers);
    let stat = |k| {
        simulate(&NetSimConfig {
            static_workers: Some(k),
            ..cfg.clone()
        })
    };
    Ok(ScaleRow {
        workers,
        static_min: k,
        static_min_met: found.is_some(),
        runs: [stat(workers)?, stat(k)?, simulate(&cfg)?],
    })
}

fn us(ns: u64) -> String {
    format!("{:.0}", ns as f64 / 1000.0)
}

/// The comparison as a Markdown table.
pub fn table(rows: &[ScaleRow]) -> String {
    let mut s = String::from(
        "| workers | config | held avg / peak | saved vs static-min | p99 low / peak / low-after / bursty (µs) | reaction | goodput at SLO (req/s) | committed |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        let names = [
            "static-all".to_string(),
            format!(
                "static-{}{}",
                row.static_min,
                if row.static_min_met {
                    ""
                } else {
                    " (none met the SLO)"
                }
            ),
            "allocator".to_string(),
        ];
        for (name, r) in names.iter().zip(&row.runs) {
            let p: Vec<String> = r.p99_ns.iter().map(|x| us(*x)).collect();
            let _ = writeln!(
                s,
                "| {} | {name} | {:.1} / {} | {:.1} | {} | {} | {:.0} | {} |",
                row.workers,
                r.avg_cores,
                r.peak_cores,
                row.static_min as f64 - r.avg_cores,
                p.join(" / "),
                r.reaction_ns
                    .map_or("never".into(), |x| format!("{} µs", us(x))),
                r.goodput_rps,
                r.committed
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped allocator at 16, 32 and 64 workers against the load step: every request
    /// completes, the peak is granted cores, the low phases give them back (fewer than the
    /// static minimum on average), no decision is stale or invalid (one outstanding at a
    /// time), and p99 is within the SLO in every phase outside the reaction window. Virtual
    /// time: the bounds are deterministic, not wall-clock measurements.
    #[test]
    fn the_allocator_at_scale_follows_the_load_step() {
        for peak in [0.8, 0.6] {
            let rows: Vec<ScaleRow> = [16, 32, 64].map(|n| compare(n, peak).unwrap()).to_vec();
            println!("peak {peak}:\n{}", table(&rows));
            check(&rows);
        }
    }

    fn check(rows: &[ScaleRow]) {
        for row in rows {
            let [all, min, r] = &row.runs;
            assert_eq!(r.arrived, r.completed);
            assert_eq!((all.arrived, min.arrived), (all.completed, min.completed));
            assert!(r.grants > 0 && r.revokes > 0, "{r:?}");
            assert!(r.cores[1] > r.cores[0], "more workers at the peak: {r:?}");
            assert!(r.avg_cores < row.static_min as f64, "{row:?}");
            assert_eq!((r.stale, r.invalid), (0, 0));
            assert!(
                r.reaction_ns.is_some(),
                "back under the SLO in the peak: {r:?}"
            );
            for p in [0, 2] {
                assert!(r.p99_ns[p] <= 300_000, "low phases within the SLO: {r:?}");
            }
        }
    }

    #[test]
    fn a_static_allocation_holds_its_workers_and_refuses_an_impossible_one() {
        let cfg = NetSimConfig {
            static_workers: Some(4),
            ..NetSimConfig::scaled(8)
        };
        let r = simulate(&cfg).unwrap();
        assert_eq!((r.peak_cores, r.avg_cores), (4, 4.0));
        assert_eq!((r.committed, r.grants), (0, 0));
        let bad = NetSimConfig {
            static_workers: Some(9),
            ..cfg
        };
        assert!(simulate(&bad).is_err());
    }
}
