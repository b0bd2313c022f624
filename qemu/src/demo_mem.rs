//! `cargo wave demo --subsystem mem`: offloaded memory management end to end, against its
//! baselines on identical work.
//!
//! The same key-value workload (a table with a skewed, time-clustered hot set that moves
//! halfway through the run, open-loop arrivals, every value checksummed) runs under each mode:
//! `none` (no management, all in DRAM), `host` (the memory policy in a host thread over an
//! in-process link) and `ipu` (the policy in the firmware in QEMU over the ivshmem link). The
//! host mechanism is the same in `host` and `ipu`. Then a side-by-side table, optionally JSON
//! and an SVG of resident memory and GET p99 over time.

use std::fmt::Write as _;
use std::time::Duration;

pub use wave_host_shim::mem::run::MemMode;
use wave_host_shim::mem::run::{self as mem_run, MemRunConfig, MemRunResults};

use crate::boot::{BootConfig, BootOutcome, BootStatus};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::ipu::{with_ipu, LinkSettings};

/// Settings of a memory demo.
#[derive(Debug, Clone)]
pub struct MemDemoOptions {
    /// Modes to compare (run in this order; `none` first makes the baseline).
    pub modes: Vec<MemMode>,
    /// Workload, policy and timing (identical for every mode).
    pub run: MemRunConfig,
    /// IPU cores (`-smp`); the policy runs on core 0.
    pub ipu_cores: u32,
    /// `wave.spin_us=` for the IPU service.
    pub spin_us: Option<u64>,
    /// GIC version of the board.
    pub gic: u8,
    /// Show the firmware console.
    pub echo: bool,
}

impl Default for MemDemoOptions {
    fn default() -> Self {
        MemDemoOptions {
            modes: vec![MemMode::None, MemMode::Host, MemMode::Ipu],
            run: MemRunConfig {
                progress: true,
                ..MemRunConfig::default()
            },
            ipu_cores: 1,
            spin_us: None,
            gic: 3,
            echo: false,
        }
    }
}

/// One mode's run.
#[derive(Debug)]
pub struct MemDemoRun {
    /// What the run measured.
    pub results: MemRunResults,
    /// For `ipu`: how the firmware run ended.
    pub firmware: Option<BootOutcome>,
    /// For `ipu`: host CPU seconds QEMU used emulating the IPU.
    pub emulator_cpu_s: Option<f64>,
}

impl MemDemoRun {
    /// True if every value verified, no invariant broke, and (for `ipu`) the firmware exited
    /// cleanly and reported its policy's invariants intact.
    pub fn ok(&self) -> bool {
        self.results.checksum_failures == 0
            && self.results.invariant_violations == 0
            && self.firmware.as_ref().is_none_or(|f| {
                f.status == BootStatus::Exited(0) && firmware_invariants_ok(&f.console)
            })
    }
}

/// True if the firmware's closing `mem: policy:` line says its invariants held.
pub fn firmware_invariants_ok(console: &str) -> bool {
    console
        .lines()
        .any(|l| l.contains("mem: policy:") && l.contains("invariants ok"))
}

fn children_cpu_s() -> Option<f64> {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(u.user_time()) + secs(u.system_time()))
}

/// The `ipu` run: the firmware in QEMU with `wave.services=mem@0`, the host mechanism here.
pub fn run_ipu(opts: &MemDemoOptions, image: &Image) -> Result<MemDemoRun> {
    let boot = BootConfig {
        smp: opts.ipu_cores,
        gic: opts.gic,
        timeout: opts.run.duration + Duration::from_secs(180),
        append: std::iter::once("wave.services=mem@0".to_string())
            .chain(opts.spin_us.map(|us| format!("wave.spin_us={us}")))
            .collect(),
        echo: opts.echo,
        ..BootConfig::default()
    };
    let before = children_cpu_s();
    let (results, fw) = with_ipu(&boot, image, LinkSettings::default(), |server, _left| {
        mem_run::run_managed(server, MemMode::Ipu, &opts.run)
    })?;
    let emulator_cpu_s = children_cpu_s().map(|after| after - before.unwrap_or(0.0));
    match results {
        Ok(mut r) => {
            if !firmware_invariants_ok(&fw.console) {
                r.invariant_violations += 1;
            }
            Ok(MemDemoRun {
                results: r,
                firmware: Some(fw),
                emulator_cpu_s,
            })
        }
        Err(e) => Err(Error::Qemu(format!(
            "ipu run failed: {e}\n--- firmware console ---\n{}",
            fw.console
        ))),
    }
}

/// Runs every mode of `opts` in turn (`image` is needed only for `ipu`).
pub fn run_demo(opts: &MemDemoOptions, image: Option<&Image>) -> Result<Vec<MemDemoRun>> {
    let mut runs = Vec::new();
    for &mode in &opts.modes {
        let c = &opts.run;
        eprintln!(
            "wave: demo mem: {} ({} MiB table, {:.0} ops/s for {:.0} s, hot set moves at {:.0} s, {} ms intervals)",
            mode.name(),
            c.table_bytes >> 20,
            c.load.rate_per_s,
            c.duration.as_secs_f64(),
            c.duration.as_secs_f64() / 2.0,
            c.interval.as_millis()
        );
        let plain = |r: std::result::Result<MemRunResults, String>| {
            r.map(|results| MemDemoRun {
                results,
                firmware: None,
                emulator_cpu_s: None,
            })
            .map_err(|e| Error::Qemu(format!("{} run failed: {e}", mode.name())))
        };
        let run = match mode {
            MemMode::None => plain(mem_run::run_none(&opts.run))?,
            MemMode::Host => plain(mem_run::run_host(&opts.run))?,
            MemMode::Ipu => {
                let image = image
                    .ok_or_else(|| Error::Qemu("the ipu mode needs the firmware image".into()))?;
                run_ipu(opts, image)?
            }
        };
        eprintln!();
        runs.push(run);
    }
    Ok(runs)
}

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
fn rows(runs: &[MemDemoRun]) -> Vec<(String, Vec<String>)> {
    let base = runs.iter().find(|r| r.results.mode == "none");
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, f: &dyn Fn(&MemDemoRun) -> String| {
        rows.push((name.to_string(), runs.iter().map(f).collect()));
    };
    let managed = |r: &MemDemoRun, v: String| {
        if r.results.wire.is_none() {
            "-".to_string()
        } else {
            v
        }
    };
    row("far tier", &|r| r.results.far_tier.clone());
    row("table", &|r| mib(r.results.table_bytes));
    row("resident: start", &|r| mib(r.results.resident[0]));
    row("resident: steady (before move)", &|r| {
        mib(r.results.resident[1])
    });
    row("resident: after the phase change", &|r| {
        mib(r.results.resident[2])
    });
    row("far tier's own DRAM (steady/after)", &|r| {
        managed(
            r,
            format!(
                "{} / {}",
                mib(r.results.far_used[1]),
                mib(r.results.far_used[2])
            ),
        )
    });
    let saved = |r: &MemDemoRun, i: usize| {
        let t = r.results.table_bytes.max(1) as f64;
        let s = r.results.saved[i];
        format!("{} ({:.1}%)", mib(s.max(0) as u64), 100.0 * s as f64 / t)
    };
    row("saved net: steady", &|r| saved(r, 1));
    row("saved net: after the phase change", &|r| saved(r, 2));
    row("promoted pages/min: warm-up/steady/move/settled", &|r| {
        let p = r.results.promotions_per_min();
        managed(
            r,
            format!("{:.1} / {:.1} / {:.1} / {:.1}", p[0], p[1], p[2], p[3]),
        )
    });
    row("SLO pages/min (0.2% of the WSS): same", &|r| {
        let s = r.results.slo_per_min();
        managed(
            r,
            format!("{:.1} / {:.1} / {:.1} / {:.1}", s[0], s[1], s[2], s[3]),
        )
    });
    row("promotions within the SLO (steady)", &|r| {
        managed(
            r,
            if r.results.within_slo() { "yes" } else { "NO" }.to_string(),
        )
    });
    row("throughput (ops/s)", &|r| {
        format!("{:.0}", r.results.throughput)
    });
    let vs = |r: &MemDemoRun, v: f64, f: fn(&MemRunResults) -> f64| match base {
        Some(b) if b.results.mode != r.results.mode && f(&b.results) > 0.0 => {
            format!("{} ({:.2}x)", us(v), v / f(&b.results))
        }
        _ => us(v),
    };
    row("GET p50", &|r| {
        vs(r, r.results.get.p50_us, |x| x.get.p50_us)
    });
    row("GET p99", &|r| {
        vs(r, r.results.get.p99_us, |x| x.get.p99_us)
    });
    row("GET p99.9", &|r| {
        vs(r, r.results.get.p999_us, |x| x.get.p999_us)
    });
    row("decisions: reclaim / promote / collapse", &|r| {
        let d = r.results.wire.map(|w| w.decisions).unwrap_or_default();
        managed(r, format!("{} / {} / {}", d[0], d[1], d[2]))
    });
    row("outcomes: committed / stale / failed", &|r| {
        let o = r.results.wire.map(|w| w.outcomes).unwrap_or_default();
        managed(r, format!("{} / {} / {}", o[0], o[1], o[2]))
    });
    row("decision latency p50 / p99", &|r| {
        let l = r.results.decision_latency;
        managed(r, format!("{} / {}", us(l.p50_us), us(l.p99_us)))
    });
    row("host CPU: mechanism", &|r| {
        managed(r, format!("{:.2} s", r.results.mech_cpu_s))
    });
    row(
        "host CPU: policy",
        &|r| match (r.results.mode.as_str(), r.results.policy_cpu_s) {
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
        managed(r, r.results.invalid_entries.to_string())
    });
    row("checksum failures", &|r| {
        r.results.checksum_failures.to_string()
    });
    row("invariant violations", &|r| {
        r.results.invariant_violations.to_string()
    });
    rows
}

/// The side-by-side table.
pub fn table(runs: &[MemDemoRun]) -> String {
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
        let _ = write!(out, "  {:>w$}", r.results.mode, w = widths[i]);
    }
    out.push('\n');
    for (name, cells) in &rows {
        let _ = write!(out, "{name:w0$}");
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(out, "  {c:>w$}", w = widths[i]);
        }
        out.push('\n');
    }
    for r in runs {
        if let Some(n) = &r.results.note {
            let _ = writeln!(out, "note ({}): {n}", r.results.mode);
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

fn latency_json(l: &wave_host_shim::engine::hist::Latency) -> String {
    format!(
        "{{\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"count\":{}}}",
        num(l.p50_us),
        num(l.p99_us),
        num(l.p999_us),
        l.count
    )
}

/// One run as a JSON object.
fn run_json(r: &MemDemoRun) -> String {
    let x = &r.results;
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
        "{{\"mode\":\"{}\",\"far_tier\":\"{}\",\"table_bytes\":{},\"resident\":{:?},\"far_used\":{:?},\"saved\":{:?},\"ops\":{},\"throughput\":{},\"get\":{},\"checksum_failures\":{},\"promoted_pages\":{},\"promoted_pages_after_move\":{},\"promotions_per_min\":[{},{},{},{}],\"slo_per_min\":[{},{},{},{}],\"within_slo\":{},\"intervals\":{},\"decisions\":{:?},\"outcomes\":{:?},\"decision_latency\":{},\"round_trip\":{},\"mech_cpu_s\":{},\"policy_cpu_s\":{},\"emulator_cpu_s\":{},\"invalid_entries\":{},\"invariant_violations\":{},\"phase_s\":{},\"samples\":[{}],\"get_p99_windows\":[{}]}}",
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
        num(x.phase_s),
        samples.join(","),
        p99.join(",")
    )
}

/// All runs as one JSON document.
pub fn json(opts: &MemDemoOptions, runs: &[MemDemoRun]) -> String {
    let c = &opts.run;
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
        opts.ipu_cores
    );
    let parts: Vec<String> = runs.iter().map(run_json).collect();
    o.push_str(&parts.join(","));
    o.push_str("]}");
    o
}

const COLORS: [&str; 3] = ["#555555", "#d95f02", "#1b9e77"];

/// An SVG with two panels over time: resident memory of the table (MiB) and GET p99 (µs,
/// per 250 ms window), one line per mode, the phase change marked.
pub fn svg(runs: &[MemDemoRun]) -> String {
    let (w, h, pad) = (720.0, 260.0, 50.0);
    let t_max = runs
        .iter()
        .flat_map(|r| r.results.samples.iter().map(|s| s.t_s))
        .chain(
            runs.iter()
                .flat_map(|r| r.results.p99_windows.iter().map(|p| p.0)),
        )
        .fold(1.0f64, f64::max);
    let res_max = runs
        .iter()
        .map(|r| r.results.table_bytes as f64 / (1 << 20) as f64)
        .fold(1.0f64, f64::max);
    let p99_max = runs
        .iter()
        .flat_map(|r| r.results.p99_windows.iter().map(|p| p.1 as f64 / 1e3))
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
            let px = x(r.results.phase_s);
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
                .results
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
                .results
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
            r.results.mode
        );
    }
    o.push_str("</svg>\n");
    o
}
