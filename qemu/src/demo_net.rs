//! `cargo wave demo --subsystem net`: the network/RPC control plane end to end, against its
//! baselines, in one invocation.
//!
//! The same loopback RPC server (W workers, one `SO_REUSEPORT` UDP socket each, or with
//! `--transport tcp` one TCP listener each and the connections it accepts) takes the same
//! open-loop load (low → peak → low, then bursts) four times: all workers with the kernel's
//! hash (Linux's default), a static allocation at the minimum that meets the SLO at peak
//! (found by a short search at the peak load), the control loop with its policy on a host
//! thread (`host`), and on the IPU (`ipu`: the firmware in QEMU runs `wave.services=net@0`).
//! It prints a side-by-side table, optionally JSON and an SVG plot.

use std::fmt::Write as _;
use std::time::Duration;

use wave_host_shim::net::control::{self, NetMode, NetRunConfig, NetRunResult};
use wave_host_shim::net::load::PHASES;

use crate::boot::{BootConfig, BootOutcome, BootStatus};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::ipu::{with_ipu, LinkSettings};

/// Settings of a net demo.
#[derive(Clone, Debug)]
pub struct NetDemoOptions {
    /// The server, load and policy settings shared by every configuration.
    pub run: NetRunConfig,
    /// Run the host configuration.
    pub host: bool,
    /// Run the ipu configuration.
    pub ipu: bool,
    /// IPU cores (`-smp`).
    pub ipu_cores: u32,
    /// GIC version.
    pub gic: u8,
    /// Show the firmware console.
    pub echo: bool,
    /// Seconds of peak load per step of the static-minimum search.
    pub search_s: f64,
}

impl Default for NetDemoOptions {
    fn default() -> Self {
        NetDemoOptions {
            run: NetRunConfig {
                progress: true,
                ..NetRunConfig::default()
            },
            host: true,
            ipu: true,
            ipu_cores: 1,
            gic: 3,
            echo: false,
            search_s: 1.0,
        }
    }
}

/// One configuration's run.
#[derive(Debug)]
pub struct NetDemoRun {
    /// The measurements.
    pub result: NetRunResult,
    /// For `ipu`: how the firmware ended, and QEMU's CPU seconds.
    pub firmware: Option<BootOutcome>,
    /// See [`NetDemoRun::firmware`].
    pub emulator_cpu_s: Option<f64>,
}

impl NetDemoRun {
    /// Every request answered, and the firmware (if any) exited cleanly.
    pub fn ok(&self) -> bool {
        self.result.all_answered()
            && self
                .firmware
                .as_ref()
                .is_none_or(|f| f.status == BootStatus::Exited(0))
    }
}

/// The demo's outcome: the runs and the static minimum found.
#[derive(Debug, Default)]
pub struct NetDemo {
    /// Runs in order: static-all, static-min, host, ipu.
    pub runs: Vec<NetDemoRun>,
    /// The static minimum that met the SLO at peak (W if none did).
    pub static_min: usize,
    /// The search's steps: (workers, p99 at the peak in µs); the last one met the SLO when
    /// [`NetDemo::static_min_met`].
    pub search: Vec<(usize, u64)>,
    /// Whether any static allocation met the SLO at the peak.
    pub static_min_met: bool,
}

/// Most peak-only runs the static-minimum search makes (it steps over worker counts evenly
/// when the range is wider, always trying all W last).
pub const SEARCH_STEPS: usize = 8;

/// The worker counts the search tries: from `from` to `w`, at most [`SEARCH_STEPS`].
fn search_counts(from: usize, w: usize) -> Vec<usize> {
    let step = (w + 1 - from.min(w)).div_ceil(SEARCH_STEPS).max(1);
    let mut v: Vec<usize> = (from.min(w)..w).step_by(step).collect();
    v.truncate(SEARCH_STEPS - 1);
    v.push(w);
    v
}

fn children_cpu_s() -> Option<f64> {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(u.user_time()) + secs(u.system_time()))
}

/// What the static-minimum search found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticSearch {
    /// The fewest workers that met the SLO at the peak, or W if none did.
    pub workers: usize,
    /// Each step: (workers, p99 at the peak in µs).
    pub steps: Vec<(usize, u64)>,
    /// Whether one met it.
    pub met: bool,
}

/// The fewest workers (from the peak's offered cores up) whose p99 at the peak load meets
/// the SLO, by short peak-only runs.
pub fn static_minimum(opts: &NetDemoOptions) -> Result<StaticSearch> {
    let cfg = &opts.run;
    let from = ((cfg.load.peak * cfg.workers as f64).ceil() as usize).clamp(1, cfg.workers);
    let mut steps = Vec::new();
    for k in search_counts(from, cfg.workers) {
        let mut c = cfg.clone();
        c.progress = false;
        c.load.peak_only = true;
        c.load.phase_s = opts.search_s;
        let r = control::run_static(&c, NetMode::StaticMin(k)).map_err(Error::Qemu)?;
        let p99 = r.phases.first().map_or(u64::MAX, |p| p.p99_us);
        eprintln!(
            "net: static search: {k} workers at peak: p99 {:.1} ms (SLO {:.1} ms)",
            p99 as f64 / 1000.0,
            cfg.slo_us as f64 / 1000.0
        );
        steps.push((k, p99));
        if p99 <= cfg.slo_us && r.all_answered() {
            return Ok(StaticSearch {
                workers: k,
                steps,
                met: true,
            });
        }
    }
    eprintln!(
        "net: static search: no static allocation met the SLO at the peak; the static peak is all {} workers",
        cfg.workers
    );
    Ok(StaticSearch {
        workers: cfg.workers,
        steps,
        met: false,
    })
}

/// Runs the `ipu` configuration: the firmware in QEMU runs `wave.services=net@0`.
pub fn run_ipu(opts: &NetDemoOptions, image: &Image) -> Result<NetDemoRun> {
    let cfg = &opts.run;
    let secs = cfg.load.phase_s * PHASES.len() as f64 + 90.0;
    let boot = BootConfig {
        smp: opts.ipu_cores,
        gic: opts.gic,
        timeout: Duration::from_secs_f64(secs),
        append: vec!["wave.services=net@0".to_string()],
        echo: opts.echo,
        ..BootConfig::default()
    };
    let before = children_cpu_s();
    let (r, fw) = with_ipu(&boot, image, LinkSettings::default(), |server, _left| {
        control::run_ipu(&*server, cfg)
    })?;
    let emulator_cpu_s = children_cpu_s().map(|after| after - before.unwrap_or(0.0));
    match r {
        Ok(result) => Ok(NetDemoRun {
            result,
            firmware: Some(fw),
            emulator_cpu_s,
        }),
        Err(e) => Err(Error::Qemu(format!(
            "ipu run failed: {e}\n--- firmware console ---\n{}",
            fw.console
        ))),
    }
}

/// Runs the configurations (`image` is needed only for `ipu`).
pub fn run(opts: &NetDemoOptions, image: Option<&Image>) -> Result<NetDemo> {
    let found = static_minimum(opts)?;
    let static_min = found.workers;
    let mut modes = vec![NetMode::StaticAll, NetMode::StaticMin(static_min)];
    if opts.host {
        modes.push(NetMode::Host);
    }
    if opts.ipu {
        modes.push(NetMode::Ipu);
    }
    let mut runs = Vec::new();
    let mut said = false;
    for mode in modes {
        eprintln!(
            "wave: demo net: {} ({} workers, capacity {:.0} req/s, phases of {:.1} s)",
            mode.name(),
            opts.run.workers,
            opts.run.load.capacity_rps,
            opts.run.load.phase_s
        );
        let run = match mode {
            NetMode::Ipu => {
                let image = image
                    .ok_or_else(|| Error::Qemu("the ipu configuration needs the image".into()))?;
                run_ipu(opts, image)?
            }
            NetMode::Host => plain(control::run_host(&opts.run))?,
            m => plain(control::run_static(&opts.run, m))?,
        };
        let why = run.result.steering.strip_prefix("hash (");
        if let (Some(why), false, false) = (why, mode == NetMode::StaticAll, said) {
            said = true;
            eprintln!(
                "wave: demo net: no eBPF steering ({}; run as root for it): falling back to the kernel's reuseport hash with park/unpark only: table rewrites and rebalancing are skipped, a parked worker's socket (under TCP its listener, for new connections) still gets its share of the hash (served by an adopting worker), and the server's threads keep their normal priority (no nice -10)",
                why.strip_suffix(')').unwrap_or(why)
            );
        }
        runs.push(run);
    }
    Ok(NetDemo {
        runs,
        static_min,
        search: found.steps,
        static_min_met: found.met,
    })
}

fn plain(r: std::result::Result<NetRunResult, String>) -> Result<NetDemoRun> {
    Ok(NetDemoRun {
        result: r.map_err(Error::Qemu)?,
        firmware: None,
        emulator_cpu_s: None,
    })
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// The rows of the side-by-side table.
fn rows(demo: &NetDemo, slo_us: u64) -> Vec<(String, Vec<String>)> {
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let runs = &demo.runs;
    let mut row = |name: String, f: &dyn Fn(&NetDemoRun) -> String| {
        rows.push((name, runs.iter().map(f).collect()));
    };
    row("transport".into(), &|r| r.result.transport.to_string());
    row("steering".into(), &|r| {
        r.result
            .steering
            .split(' ')
            .next()
            .unwrap_or("")
            .to_string()
    });
    row("answered / sent".into(), &|r| {
        format!("{} / {}", r.result.answered, r.result.sent)
    });
    row("malformed requests refused".into(), &|r| {
        r.result.malformed.to_string()
    });
    row("throughput (req/s)".into(), &|r| {
        format!("{:.0}", r.result.throughput_rps)
    });
    row(
        format!("throughput at p99 <= {} (req/s)", ms(slo_us)),
        &|r| format!("{:.0}", r.result.goodput_rps),
    );
    for (i, name) in PHASES.iter().enumerate() {
        row(format!("{name}: p50/p99/p99.9"), &|r| {
            r.result.phases.get(i).map_or("-".into(), |p| {
                format!("{}/{}/{}", ms(p.p50_us), ms(p.p99_us), ms(p.p999_us))
            })
        });
    }
    row(format!("phases with p99 <= {}", ms(slo_us)), &|r| {
        let ok = r
            .result
            .phases
            .iter()
            .filter(|p| p.p99_us <= slo_us)
            .count();
        format!("{ok} / {}", r.result.phases.len())
    });
    row("workers held avg / peak".into(), &|r| {
        format!("{:.2} / {}", r.result.avg_cores, r.result.peak_cores)
    });
    let min_name = NetMode::StaticMin(demo.static_min).name();
    let verdict = if demo.static_min_met {
        format!("met at {}", demo.static_min)
    } else {
        format!("none met: all {}", demo.static_min)
    };
    row("static minimum at the peak".into(), &|r| {
        if r.result.mode == min_name {
            verdict.clone()
        } else {
            "-".into()
        }
    });
    let k = demo.static_min as f64;
    row(format!("cores saved vs static peak ({k})"), &|r| {
        format!("{:.2}", k - r.result.avg_cores)
    });
    row("batch job (units/s)".into(), &|r| {
        format!("{:.0}", r.result.batch_rate)
    });
    row("reaction to the step".into(), &|r| {
        r.result
            .reaction_ms
            .map_or("never".into(), |m| format!("{m} ms"))
    });
    row("decisions committed/stale/invalid".into(), &|r| {
        let m = &r.result.mech;
        format!("{}/{}/{}", m.committed, m.stale, m.invalid)
    });
    row("host CPU: control-loop policy".into(), &|r| match (
        r.result.mode.as_str(),
        r.result.policy_cpu_s,
    ) {
        ("ipu", _) => "0 (on the IPU)".into(),
        (_, Some(s)) => format!("{:.2} s ({:.1}%)", s, 100.0 * s / r.result.duration_s),
        _ => "-".into(),
    });
    row("host CPU: mechanism thread".into(), &|r| {
        if r.result.mode.starts_with("static") {
            "-".into()
        } else {
            format!("{:.2} s", r.result.mechanism_cpu_s)
        }
    });
    row("IPU emulation (QEMU CPU)".into(), &|r| {
        r.emulator_cpu_s.map_or("-".into(), |s| format!("{s:.1} s"))
    });
    rows
}

/// The side-by-side table.
pub fn table(demo: &NetDemo, slo_us: u64) -> String {
    let rows = rows(demo, slo_us);
    let names: Vec<&str> = demo.runs.iter().map(|r| r.result.mode.as_str()).collect();
    wave_host_shim::report::columns("configuration", &names, &rows, 0)
}

fn run_json(r: &NetDemoRun) -> String {
    let x = &r.result;
    let phases: Vec<String> = x
        .phases
        .iter()
        .map(|p| {
            format!(
                "{{\"name\":\"{}\",\"answered\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"cores\":{:.3}}}",
                p.name, p.answered, p.p50_us, p.p99_us, p.p999_us, p.cores
            )
        })
        .collect();
    let windows: Vec<String> = x
        .windows
        .iter()
        .map(|w| format!("[{},{},{},{:.3}]", w.t_ms, w.p99_us, w.answered, w.cores))
        .collect();
    let opt = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.3}"));
    format!(
        "{{\"mode\":\"{}\",\"transport\":\"{}\",\"malformed\":{},\"steering\":\"{}\",\"sent\":{},\"answered\":{},\"throughput_rps\":{:.1},\"goodput_rps\":{:.1},\"avg_cores\":{:.3},\"peak_cores\":{},\"batch_units_per_s\":{:.1},\"reaction_ms\":{},\"committed\":{},\"stale\":{},\"invalid\":{},\"rewrites\":{},\"intervals_skipped\":{},\"policy_cpu_s\":{},\"mechanism_cpu_s\":{:.3},\"emulator_cpu_s\":{},\"phases\":[{}],\"windows_t_ms_p99_us_answered_cores\":[{}]}}",
        x.mode,
        x.transport,
        x.malformed,
        x.steering.replace('"', "'"),
        x.sent,
        x.answered,
        x.throughput_rps,
        x.goodput_rps,
        x.avg_cores,
        x.peak_cores,
        x.batch_rate,
        x.reaction_ms.map_or("null".into(), |m| m.to_string()),
        x.mech.committed,
        x.mech.stale,
        x.mech.invalid,
        x.mech.rewrites,
        x.intervals_skipped,
        opt(x.policy_cpu_s),
        x.mechanism_cpu_s,
        opt(r.emulator_cpu_s),
        phases.join(","),
        windows.join(",")
    )
}

/// All runs as one JSON document.
pub fn json(opts: &NetDemoOptions, demo: &NetDemo) -> String {
    let c = &opts.run;
    let runs: Vec<String> = demo.runs.iter().map(run_json).collect();
    format!(
        "{{\"config\":{{\"transport\":\"{}\",\"conn_requests\":{},\"workers\":{},\"capacity_rps\":{:.1},\"phase_s\":{},\"low\":{},\"peak\":{},\"short_us\":{},\"long_us\":{},\"long_permille\":{},\"cpu_permille\":{},\"interval_us\":{},\"slo_us\":{},\"delay_add_us\":{},\"static_min\":{},\"static_min_met\":{},\"static_search_workers_p99_us\":[{}]}},\"runs\":[{}]}}",
        c.load.transport.name(),
        c.load.conn_requests,
        c.workers,
        c.load.capacity_rps,
        c.load.phase_s,
        c.load.low,
        c.load.peak,
        c.load.short_us,
        c.load.long_us,
        c.load.long_permille,
        c.cpu_permille,
        c.interval.as_micros(),
        c.slo_us,
        c.params.delay_add_us,
        demo.static_min,
        demo.static_min_met,
        demo
            .search
            .iter()
            .map(|(k, p)| format!("[{k},{p}]"))
            .collect::<Vec<_>>()
            .join(","),
        runs.join(",")
    )
}

const COLORS: [&str; 4] = ["#888888", "#1f77b4", "#ff7f0e", "#2ca02c"];

/// An SVG of workers held (top) and windowed p99 (bottom, with the SLO) over time.
pub fn svg(opts: &NetDemoOptions, demo: &NetDemo) -> String {
    let (w, h, pad) = (900.0, 560.0, 50.0);
    let panel = (h - 3.0 * pad) / 2.0;
    let t_max = opts.run.load.phase_s * PHASES.len() as f64 * 1000.0;
    let x = |t: f64| pad + (w - 2.0 * pad) * t / t_max.max(1.0);
    let cores_max = opts.run.workers as f64;
    let p99_max = demo
        .runs
        .iter()
        .flat_map(|r| r.result.windows.iter().map(|w| w.p99_us))
        .max()
        .unwrap_or(1)
        .max(opts.run.slo_us * 2) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"{pad}\" y=\"20\">workers held (cores) over time, ms</text>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{pad}\" y=\"{}\">p99 latency per {} ms window (dashed: SLO {:.0} ms; max {:.0} ms)</text>",
        2.0 * pad + panel - 8.0,
        opts.run.window_ms,
        opts.run.slo_us as f64 / 1000.0,
        p99_max / 1000.0
    );
    for (i, phase) in PHASES.iter().enumerate() {
        let tx = x(i as f64 * opts.run.load.phase_s * 1000.0);
        let _ = writeln!(
            s,
            "<line x1=\"{tx:.1}\" y1=\"{pad}\" x2=\"{tx:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#999\">{phase}</text>",
            h - pad,
            tx + 4.0,
            pad + 12.0
        );
    }
    let slo_y = 2.0 * pad + panel + panel * (1.0 - opts.run.slo_us as f64 / p99_max);
    let _ = writeln!(
        s,
        "<line x1=\"{pad}\" y1=\"{slo_y:.1}\" x2=\"{:.1}\" y2=\"{slo_y:.1}\" stroke=\"red\" stroke-dasharray=\"6 4\"/>",
        w - pad
    );
    for (i, r) in demo.runs.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts = |f: &dyn Fn(&control::Window) -> f64| -> String {
            r.result
                .windows
                .iter()
                .map(|win| format!("{:.1},{:.1}", x(win.t_ms as f64), f(win)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let top = pts(&|win| pad + panel * (1.0 - win.cores / cores_max));
        let bot =
            pts(&|win| 2.0 * pad + panel + panel * (1.0 - (win.p99_us as f64 / p99_max).min(1.0)));
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{top}\"/>"
        );
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{bot}\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{c}\">{}</text>",
            w - pad - 120.0,
            pad + 16.0 * (i as f64 + 1.0),
            r.result.mode
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_is_capped_and_ends_at_all_workers() {
        assert_eq!(search_counts(7, 8), vec![7, 8]);
        assert_eq!(search_counts(8, 8), vec![8]);
        let wide = search_counts(52, 64);
        assert!(wide.len() <= SEARCH_STEPS, "{wide:?}");
        assert_eq!((wide[0], *wide.last().unwrap()), (52, 64));
        assert!(wide.windows(2).all(|p| p[0] < p[1]), "{wide:?}");
        assert_eq!(search_counts(1, 64).len(), SEARCH_STEPS);
    }
}
