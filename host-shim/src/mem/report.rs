//! The memory demo's report: the side-by-side table of the runs (`none`, `host`, `ipu`), the
//! same as JSON, and an SVG of resident memory and GET p99 over time. Shared by
//! `cargo wave demo --subsystem mem` and `wave-host mem`.

use std::fmt::Write as _;

use super::run::{MemRunConfig, MemRunResults};

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else {
        format!("{v:.1} us")
    }
}

/// The done-when bound on a managed mode's GET p99, as a ratio to `none`'s.
pub const P99_TARGET: f64 = 1.10;

/// One mode over the rounds of a `--repeat` demo.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModeSummary {
    /// `none`, `host` or `ipu`.
    pub mode: String,
    /// GET p99 in each round, µs.
    pub p99_us: Vec<f64>,
    /// GET p99 over `none`'s in the same round (empty for `none`, or without it).
    pub ratios: Vec<f64>,
    /// Memory saved net of the far tier, steady and after the move, per round (fractions).
    pub saved: Vec<(f64, f64)>,
    /// Promotions within the SLO in both steady windows, per round.
    pub within_slo: Vec<bool>,
    /// Checksum failures and invariant violations, summed over the rounds.
    pub failures: u64,
}

/// The median of `v` (the mean of the middle two for an even count; NaN if empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

impl ModeSummary {
    /// Median GET p99, µs.
    pub fn p99_median(&self) -> f64 {
        median(&self.p99_us)
    }

    /// The median of the per-round ratios to `none` (NaN without them).
    pub fn ratio_median(&self) -> f64 {
        median(&self.ratios)
    }

    /// `Some(true)` if the median ratio is within [`P99_TARGET`].
    pub fn within_target(&self) -> Option<bool> {
        let m = self.ratio_median();
        m.is_finite().then_some(m <= P99_TARGET)
    }
}

/// Per-mode summaries of `rounds` (each round: one run per mode, same order every round).
pub fn summarize(rounds: &[Vec<MemRunResults>]) -> Vec<ModeSummary> {
    let modes: Vec<String> = rounds
        .first()
        .map(|r| r.iter().map(|x| x.mode.clone()).collect())
        .unwrap_or_default();
    modes
        .iter()
        .map(|m| {
            let mut s = ModeSummary {
                mode: m.clone(),
                ..ModeSummary::default()
            };
            for round in rounds {
                let Some(r) = round.iter().find(|x| &x.mode == m) else {
                    continue;
                };
                s.p99_us.push(r.get.p99_us);
                let base = round.iter().find(|x| x.mode == "none");
                if let Some(b) = base.filter(|b| b.mode != *m && b.get.p99_us > 0.0) {
                    s.ratios.push(r.get.p99_us / b.get.p99_us);
                }
                let t = r.table_bytes.max(1) as f64;
                s.saved.push((r.saved[1] as f64 / t, r.saved[2] as f64 / t));
                s.within_slo.push(r.wire.is_none() || r.within_slo());
                s.failures += r.checksum_failures + r.invariant_violations;
            }
            s
        })
        .collect()
}

fn list(v: &[f64], f: impl Fn(f64) -> String) -> String {
    v.iter().map(|&x| f(x)).collect::<Vec<_>>().join(", ")
}

/// The `--repeat` summary table: per mode, GET p99 per round, its median and spread, the
/// ratio to `none` per round and its median, and the memory and SLO results per round.
pub fn repeat_table(sums: &[ModeSummary]) -> String {
    let mut out = String::new();
    let h = [
        "mode",
        "GET p99 per round",
        "median p99",
        "spread (min-max)",
        "p99/none per round",
        "median ratio",
        "within 10%",
        "saved net steady/after",
        "within SLO",
    ];
    let _ = writeln!(
        out,
        "{:<5} | {:<28} | {:>10} | {:<19} | {:<22} | {:>12} | {:<10} | {:<26} | {}",
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]
    );
    for s in sums {
        let (lo, hi) = s
            .p99_us
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(a, b), &x| (a.min(x), b.max(x)));
        let ratio = s.ratio_median();
        let _ = writeln!(
            out,
            "{:<5} | {:<28} | {:>10} | {:<19} | {:<22} | {:>12} | {:<10} | {:<26} | {}",
            s.mode,
            list(&s.p99_us, us),
            us(s.p99_median()),
            format!("{} - {}", us(lo), us(hi)),
            list(&s.ratios, |x| format!("{x:.2}x")),
            if ratio.is_finite() {
                format!("{ratio:.2}x")
            } else {
                "-".into()
            },
            match s.within_target() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            },
            s.saved
                .iter()
                .map(|(a, b)| format!("{:.0}/{:.0}%", a * 100.0, b * 100.0))
                .collect::<Vec<_>>()
                .join(", "),
            s.within_slo
                .iter()
                .map(|&b| if b { "yes" } else { "NO" })
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

/// The `--repeat` summary as a JSON array.
pub fn repeat_json(sums: &[ModeSummary]) -> String {
    let arr = |v: &[f64]| format!("[{}]", list(v, num));
    let parts: Vec<String> = sums
        .iter()
        .map(|s| {
            format!(
                "{{\"mode\":\"{}\",\"p99_us\":{},\"p99_median_us\":{},\"p99_ratio_vs_none\":{},\"p99_ratio_median\":{},\"p99_within_10pct\":{},\"saved_steady\":{},\"saved_after\":{},\"within_slo\":{:?},\"failures\":{}}}",
                s.mode,
                arr(&s.p99_us),
                num(s.p99_median()),
                arr(&s.ratios),
                num(s.ratio_median()),
                s.within_target().map_or("null".to_string(), |b| b.to_string()),
                arr(&s.saved.iter().map(|x| x.0).collect::<Vec<_>>()),
                arr(&s.saved.iter().map(|x| x.1).collect::<Vec<_>>()),
                s.within_slo,
                s.failures
            )
        })
        .collect();
    format!("[{}]", parts.join(","))
}

/// The rows of the side-by-side table: (name, one cell per run).
fn rows(runs: &[MemRunResults]) -> Vec<(String, Vec<String>)> {
    let base = runs.iter().find(|r| r.mode == "none");
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&MemRunResults) -> String| {
        rows.push((name.to_string(), runs.iter().map(f).collect()));
    };
    let managed = |r: &MemRunResults, v: String| {
        if r.wire.is_none() {
            "-".to_string()
        } else {
            v
        }
    };
    row("far tier", &|r| r.far_tier.clone());
    row("table", &|r| mib(r.table_bytes));
    row("resident: start", &|r| mib(r.resident[0]));
    row("resident: steady (before move)", &|r| mib(r.resident[1]));
    row("resident: after the phase change", &|r| mib(r.resident[2]));
    row("far tier's own DRAM (steady/after)", &|r| {
        managed(
            r,
            format!("{} / {}", mib(r.far_used[1]), mib(r.far_used[2])),
        )
    });
    let saved = |r: &MemRunResults, i: usize| {
        let t = r.table_bytes.max(1) as f64;
        let s = r.saved[i];
        format!("{} ({:.1}%)", mib(s.max(0) as u64), 100.0 * s as f64 / t)
    };
    row("saved net: steady", &|r| saved(r, 1));
    row("saved net: after the phase change", &|r| saved(r, 2));
    row("promoted pages/min: warm-up/steady/move/settled", &|r| {
        let p = r.promotions_per_min();
        managed(
            r,
            format!("{:.1} / {:.1} / {:.1} / {:.1}", p[0], p[1], p[2], p[3]),
        )
    });
    row("SLO pages/min (0.2% of the WSS): same", &|r| {
        let s = r.slo_per_min();
        managed(
            r,
            format!("{:.1} / {:.1} / {:.1} / {:.1}", s[0], s[1], s[2], s[3]),
        )
    });
    row("promotions within the SLO (steady)", &|r| {
        managed(r, if r.within_slo() { "yes" } else { "NO" }.to_string())
    });
    row("throughput (ops/s)", &|r| format!("{:.0}", r.throughput));
    let vs = |r: &MemRunResults, v: f64, f: fn(&MemRunResults) -> f64| match base {
        Some(b) if b.mode != r.mode && f(b) > 0.0 => {
            format!("{} ({:.2}x)", us(v), v / f(b))
        }
        _ => us(v),
    };
    row("GET p50", &|r| vs(r, r.get.p50_us, |x| x.get.p50_us));
    row("GET p99", &|r| vs(r, r.get.p99_us, |x| x.get.p99_us));
    row("GET p99.9", &|r| vs(r, r.get.p999_us, |x| x.get.p999_us));
    row("GET p99 within 10% of none", &|r| match base {
        Some(b) if b.mode != r.mode && b.get.p99_us > 0.0 => {
            let ratio = r.get.p99_us / b.get.p99_us;
            if ratio <= P99_TARGET { "yes" } else { "NO" }.to_string()
        }
        _ => "-".to_string(),
    });
    row("KV thread: CPU / off-CPU (s)", &|r| {
        let k = r.kv_thread;
        format!("{:.2} / {:.3}", k.cpu_s, k.off_cpu_s())
    });
    row("KV thread: preempted / blocked / TLB shootdowns", &|r| {
        let k = r.kv_thread;
        format!("{} / {} / {}", k.involuntary, k.voluntary, k.tlb_shootdowns)
    });
    row("ops served in >50 us: count / total / longest", &|r| {
        format!(
            "{} / {:.3} s / {}",
            r.slow_ops,
            r.slow_s,
            us(r.max_service_us)
        )
    });
    row(
        "slow ops during reclaim/promote/collapse/scan/arm/other",
        &|r| {
            let b = r.slow_by;
            let n: Vec<String> = b.iter().map(|x| x.0.to_string()).collect();
            let t: Vec<String> = b
                .iter()
                .map(|x| format!("{:.0}", x.1 as f64 / 1e6))
                .collect();
            managed(r, format!("{} ({} ms)", n.join(" / "), t.join(" / ")))
        },
    );
    row("TLB shootdowns on the KV CPU by the same", &|r| {
        let m = r.mech.unwrap_or_default();
        let v: Vec<String> = m.tlb_by_kind.iter().map(|x| x.to_string()).collect();
        managed(r, v.join(" / "))
    });
    row("sample faults / handler lock wait max", &|r| {
        let m = r.mech.unwrap_or_default();
        managed(
            r,
            format!(
                "{} / {}",
                m.sample_faults,
                us(m.sampler_lock_wait_ns[1] as f64 / 1e3)
            ),
        )
    });
    row("scan intervals run", &|r| {
        managed(r, r.wire.map_or(0, |w| w.intervals).to_string())
    });
    row("load average (1 min) at the end", &|r| {
        format!("{:.2}", r.loadavg)
    });
    row("decisions: reclaim / promote / collapse", &|r| {
        let d = r.wire.map(|w| w.decisions).unwrap_or_default();
        managed(r, format!("{} / {} / {}", d[0], d[1], d[2]))
    });
    row("outcomes: committed / stale / failed", &|r| {
        let o = r.wire.map(|w| w.outcomes).unwrap_or_default();
        managed(r, format!("{} / {} / {}", o[0], o[1], o[2]))
    });
    row("stale: expired in the host's queue", &|r| {
        managed(r, r.wire.map_or(0, |w| w.expired).to_string())
    });
    row("failed: wrong tier / nothing out / syscall / huge", &|r| {
        let f = r.mech.unwrap_or_default().failed_by;
        managed(r, format!("{} / {} / {} / {}", f[0], f[1], f[2], f[3]))
    });
    row("decision latency p50 / p99", &|r| {
        let l = r.decision_latency;
        managed(r, format!("{} / {}", us(l.p50_us), us(l.p99_us)))
    });
    row("host CPU: mechanism", &|r| {
        managed(r, format!("{:.2} s", r.mech_cpu_s))
    });
    row(
        "host CPU: policy",
        &|r| match (r.mode.as_str(), r.policy_cpu_s) {
            ("none", _) => "-".into(),
            ("ipu", _) => "0 (on the IPU)".into(),
            (_, Some(s)) => format!("{:.3} s", s),
            _ => "?".into(),
        },
    );
    row("IPU emulation (QEMU CPU)", &|r| {
        r.emulator_cpu_s
            .map_or("-".to_string(), |s| format!("{s:.1} s"))
    });
    row("invalid entries", &|r| {
        managed(r, r.invalid_entries.to_string())
    });
    row("checksum failures", &|r| r.checksum_failures.to_string());
    row("invariant violations", &|r| {
        r.invariant_violations.to_string()
    });
    rows
}

/// The side-by-side table.
pub fn table(runs: &[MemRunResults]) -> String {
    let rows = rows(runs);
    let heads: Vec<&str> = runs.iter().map(|r| r.mode.as_str()).collect();
    let mut out = crate::report::columns("mode", &heads, &rows, 8);
    if let Some(r) = runs.first() {
        let _ = writeln!(out, "placement: {}", r.placement);
    }
    for r in runs {
        if let Some(n) = &r.note {
            let _ = writeln!(out, "note ({}): {n}", r.mode);
        }
    }
    out
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

fn latency_json(l: &crate::engine::hist::Latency) -> String {
    format!(
        "{{\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"count\":{}}}",
        num(l.p50_us),
        num(l.p99_us),
        num(l.p999_us),
        l.count
    )
}

/// One run as a JSON object.
fn run_json(r: &MemRunResults) -> String {
    let x = r;
    let w = x.wire.unwrap_or_default();
    let p = x.promotions_per_min();
    let s = x.slo_per_min();
    let samples: Vec<String> = x
        .samples
        .iter()
        .map(|s| format!("[{},{},{},{}]", num(s.t_s), s.resident, s.far, s.far_used))
        .collect();
    let p99: Vec<String> = x
        .p99_windows
        .iter()
        .map(|(t, v)| format!("[{},{v}]", num(*t)))
        .collect();
    format!(
        "{{\"mode\":\"{}\",\"far_tier\":\"{}\",\"table_bytes\":{},\"resident\":{:?},\"far_used\":{:?},\"saved\":{:?},\"ops\":{},\"throughput\":{},\"get\":{},\"checksum_failures\":{},\"promoted_pages\":{},\"promoted_pages_after_move\":{},\"promotions_per_min\":[{},{},{},{}],\"slo_per_min\":[{},{},{},{}],\"within_slo\":{},\"intervals\":{},\"decisions\":{:?},\"outcomes\":{:?},\"decision_latency\":{},\"round_trip\":{},\"mech_cpu_s\":{},\"policy_cpu_s\":{},\"emulator_cpu_s\":{},\"invalid_entries\":{},\"invariant_violations\":{},\"kv_thread\":{{\"cpu_s\":{},\"off_cpu_s\":{},\"preempted\":{},\"blocked\":{},\"tlb_shootdowns\":{}}},\"slow_ops\":{},\"slow_s\":{},\"max_service_us\":{},\"handler_cpu_s\":{},\"sample_faults\":{},\"loadavg\":{},\"phase_s\":{},\"samples\":[{}],\"get_p99_windows\":[{}]}}",
        x.mode,
        x.far_tier.replace('"', "'"),
        x.table_bytes,
        x.resident,
        x.far_used,
        x.saved,
        x.ops,
        num(x.throughput),
        latency_json(&x.get),
        x.checksum_failures,
        w.promoted_pages,
        w.promoted_pages_after_mark,
        num(p[0]),
        num(p[1]),
        num(p[2]),
        num(p[3]),
        num(s[0]),
        num(s[1]),
        num(s[2]),
        num(s[3]),
        x.within_slo(),
        w.intervals,
        w.decisions,
        w.outcomes,
        latency_json(&x.decision_latency),
        latency_json(&x.round_trip),
        num(x.mech_cpu_s),
        x.policy_cpu_s.map_or("null".into(), num),
        r.emulator_cpu_s.map_or("null".into(), num),
        x.invalid_entries,
        x.invariant_violations,
        num(x.kv_thread.cpu_s),
        num(x.kv_thread.off_cpu_s()),
        x.kv_thread.involuntary,
        x.kv_thread.voluntary,
        x.kv_thread.tlb_shootdowns,
        x.slow_ops,
        num(x.slow_s),
        num(x.max_service_us),
        num(x.handler_cpu_s),
        x.mech.map_or(0, |m| m.sample_faults),
        num(x.loadavg),
        num(x.phase_s),
        samples.join(","),
        p99.join(",")
    )
}

/// All runs as one JSON document.
pub fn json(c: &MemRunConfig, ipu_cores: u32, runs: &[MemRunResults]) -> String {
    json_rounds(c, ipu_cores, std::slice::from_ref(&runs.to_vec()))
}

/// All rounds of a `--repeat` demo as one JSON document: `runs` holds the last round (as a
/// single-round document does), `rounds` every round, `summary` the per-mode summary.
pub fn json_rounds(c: &MemRunConfig, ipu_cores: u32, rounds: &[Vec<MemRunResults>]) -> String {
    let runs: &[MemRunResults] = rounds.last().map_or(&[], |v| v.as_slice());
    let l = &c.load;
    let p = &c.policy;
    let mut o = format!(
        "{{\"subsystem\":\"mem\",\"config\":{{\"table_bytes\":{},\"duration_s\":{},\"interval_ms\":{},\"rate\":{},\"hot_fraction\":{},\"theta\":{},\"put_fraction\":{},\"cold_fraction\":{},\"intervals_per_minute\":{},\"slo_ppm_per_minute\":{},\"reclaim_quota\":{},\"read_samples\":{},\"ipu_cores\":{}}},\"runs\":[",
        c.table_bytes,
        num(c.duration.as_secs_f64()),
        c.interval.as_millis(),
        num(l.rate_per_s),
        l.hot_fraction,
        l.theta,
        l.put_fraction,
        l.cold_fraction,
        p.intervals_per_minute,
        p.slo_ppm_per_minute,
        p.reclaim_quota,
        c.read_samples,
        ipu_cores
    );
    let parts: Vec<String> = runs.iter().map(run_json).collect();
    o.push_str(&parts.join(","));
    o.push_str("],\"rounds\":[");
    let rs: Vec<String> = rounds
        .iter()
        .map(|r| format!("[{}]", r.iter().map(run_json).collect::<Vec<_>>().join(",")))
        .collect();
    o.push_str(&rs.join(","));
    o.push_str("],\"summary\":");
    o.push_str(&repeat_json(&summarize(rounds)));
    o.push('}');
    o
}

const COLORS: [&str; 3] = ["#555555", "#d95f02", "#1b9e77"];

/// An SVG with two panels over time: resident memory of the table (MiB) and GET p99 (µs,
/// per 250 ms window), one line per mode, the phase change marked.
pub fn svg(runs: &[MemRunResults]) -> String {
    let (w, h, pad) = (720.0, 260.0, 50.0);
    let t_max = runs
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.t_s))
        .chain(runs.iter().flat_map(|r| r.p99_windows.iter().map(|p| p.0)))
        .fold(1.0f64, f64::max);
    let res_max = runs
        .iter()
        .map(|r| r.table_bytes as f64 / (1 << 20) as f64)
        .fold(1.0f64, f64::max);
    let p99_max = runs
        .iter()
        .flat_map(|r| r.p99_windows.iter().map(|p| p.1 as f64 / 1e3))
        .fold(1.0f64, f64::max);
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * h + 40.0
    );
    let panel = |o: &mut String,
                 y0: f64,
                 title: &str,
                 y_max: f64,
                 series: &[(usize, Vec<(f64, f64)>)]| {
        let x = |t: f64| pad + (w - 2.0 * pad) * t / t_max;
        let y = |v: f64| y0 + h - pad + -(h - 2.0 * pad) * v / y_max;
        let _ = writeln!(
            o,
            "<text x=\"{pad}\" y=\"{}\">{title}</text><line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/><line x1=\"{pad}\" y1=\"{}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/><text x=\"4\" y=\"{}\">{y_max:.0}</text><text x=\"{}\" y=\"{}\">{t_max:.0} s</text>",
            y0 + pad - 12.0,
            y(0.0),
            x(t_max),
            y(0.0),
            y(0.0),
            y(y_max),
            y(y_max) + 4.0,
            x(t_max) - 20.0,
            y(0.0) + 16.0
        );
        for (i, pts) in series {
            let path: Vec<String> = pts
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(v.min(y_max))))
                .collect();
            let _ = writeln!(
                o,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>",
                COLORS[i % COLORS.len()],
                path.join(" ")
            );
        }
        if let Some(r) = runs.first() {
            let px = x(r.phase_s);
            let _ = writeln!(
                o,
                "<line x1=\"{px:.1}\" y1=\"{}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{}\" fill=\"#999\">hot set moves</text>",
                y(0.0),
                y(y_max),
                px + 4.0,
                y(y_max) + 12.0
            );
        }
    };
    let resident: Vec<(usize, Vec<(f64, f64)>)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let pts = r
                .samples
                .iter()
                .map(|s| (s.t_s, s.resident as f64 / (1 << 20) as f64))
                .collect();
            (i, pts)
        })
        .collect();
    let p99: Vec<(usize, Vec<(f64, f64)>)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let pts = r
                .p99_windows
                .iter()
                .map(|(t, v)| (*t, *v as f64 / 1e3))
                .collect();
            (i, pts)
        })
        .collect();
    panel(
        &mut o,
        0.0,
        "resident memory of the table (MiB)",
        res_max,
        &resident,
    );
    panel(&mut o, h, "GET p99 per 250 ms window (us)", p99_max, &p99);
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(
            o,
            "<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>",
            w - 120.0,
            20.0 + 16.0 * i as f64,
            COLORS[i % COLORS.len()],
            r.mode
        );
    }
    o.push_str("</svg>\n");
    o
}
