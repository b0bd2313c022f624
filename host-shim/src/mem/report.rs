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
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..runs.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.1[i].chars().count())
                .max()
                .unwrap_or(4)
                .max(8)
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{:w0$}", "mode");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(out, "  {:>w$}", r.mode, w = widths[i]);
    }
    out.push('\n');
    for (name, cells) in &rows {
        let _ = write!(out, "{name:w0$}");
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(out, "  {c:>w$}", w = widths[i]);
        }
        out.push('\n');
    }
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
        "{{\"mode\":\"{}\",\"far_tier\":\"{}\",\"table_bytes\":{},\"resident\":{:?},\"far_used\":{:?},\"saved\":{:?},\"ops\":{},\"throughput\":{},\"get\":{},\"checksum_failures\":{},\"promoted_pages\":{},\"promoted_pages_after_move\":{},\"promotions_per_min\":[{},{},{},{}],\"slo_per_min\":[{},{},{},{}],\"within_slo\":{},\"intervals\":{},\"decisions\":{:?},\"outcomes\":{:?},\"decision_latency\":{},\"round_trip\":{},\"mech_cpu_s\":{},\"policy_cpu_s\":{},\"emulator_cpu_s\":{},\"invalid_entries\":{},\"invariant_violations\":{},\"kv_thread\":{{\"cpu_s\":{},\"off_cpu_s\":{},\"preempted\":{},\"blocked\":{}}},\"slow_ops\":{},\"slow_s\":{},\"max_service_us\":{},\"handler_cpu_s\":{},\"sample_faults\":{},\"loadavg\":{},\"phase_s\":{},\"samples\":[{}],\"get_p99_windows\":[{}]}}",
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
    o.push_str("]}");
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
