//! [`Stats`] as text: the terminal table, one JSON object, and the Prometheus text format
//! (version 0.0.4). JSON and metric lines are written by hand (no serde in this crate); every
//! string that goes into them comes from this build's own tables, never from shared memory.

use std::fmt::Write as _;

use super::{LaneRun, LiveCounts, Stats, SubsystemStats};

/// A memory or network workload as JSON (`null` without one); its names are this build's.
fn lane_json(l: Option<&LaneRun>) -> String {
    let Some(l) = l else {
        return "null".into();
    };
    let mut o = format!(
        "{{\"running\":{},\"finished\":{},\"failed\":{}",
        l.running, l.finished, l.failed
    );
    for (k, v) in &l.summary {
        let _ = write!(o, ",\"{k}\":{v}");
    }
    o.push('}');
    o
}

/// A memory or network workload's line of the terminal view.
fn lane_line(name: &str, l: &LaneRun) -> String {
    let state = match (l.running, l.finished, l.failed) {
        (true, _, _) => "running",
        (_, true, true) => "failed",
        (_, true, false) => "finished",
        _ => "waiting for the IPU",
    };
    let counts: Vec<String> = l.summary.iter().map(|(k, v)| format!("{k} {v}")).collect();
    match counts.is_empty() {
        true => format!("{name} workload: {state}"),
        false => format!("{name} workload: {state}: {}", counts.join(", ")),
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}

fn sub_json(s: &SubsystemStats) -> String {
    let ring = |r: &super::RingLevel| {
        format!(
            "{{\"occupancy\":{},\"capacity\":{},\"produced\":{},\"credited\":{}}}",
            r.occupancy, r.capacity, r.produced, r.credited
        )
    };
    let txns = s.txns.map_or("null".to_string(), |t| {
        format!(
            "{{\"committed\":{},\"stale\":{},\"aborted\":{}}}",
            t.committed,
            opt(t.stale),
            opt(t.aborted)
        )
    });
    format!(
        "{{\"name\":\"{}\",\"ipu_core\":{},\"events\":{},\"events_per_s\":{:.1},\"decisions\":{},\
         \"decisions_per_s\":{:.1},\"replies\":{},\"ring_to_ipu\":{},\"ring_to_host\":{},\
         \"ipu_invalid\":{},\"ipu_core_busy_pct\":{},\"txns\":{}}}",
        s.name,
        opt(s.ipu_core),
        s.events,
        s.events_per_s,
        s.decisions,
        s.decisions_per_s,
        s.replies,
        ring(&s.ring_to_ipu),
        ring(&s.ring_to_host),
        s.ipu_invalid,
        opt(s.ipu_core_awake_pct.map(|p| format!("{p:.1}"))),
        txns
    )
}

/// The scheduling workload as JSON (`null` without one). Its strings (policy name and
/// description) come from the policy registry, and hold no quote or backslash.
fn workload_json(w: Option<&LiveCounts>) -> String {
    let Some(w) = w else {
        return "null".into();
    };
    format!(
        "{{\"running\":{},\"finished\":{},\"policy\":\"{}\",\"policy_params\":\"{}\",\
         \"generated\":{},\"completed\":{},\"violations\":{},\"swaps\":{},\"failovers\":{},\
         \"in_fallback\":{},\"committed\":{},\"failed\":{},\"stale\":{},\"aborted\":{}}}",
        w.running,
        w.finished,
        w.policy,
        w.policy_params.replace(['"', '\\'], ""),
        w.generated,
        w.completed,
        w.violations,
        w.swaps,
        w.failovers,
        w.in_fallback,
        w.committed,
        w.failed,
        w.stale,
        w.aborted
    )
}

/// The scheduling workload's line of the terminal view (and of `policy show`).
pub fn workload_line(w: &LiveCounts) -> String {
    let state = match (w.running, w.finished) {
        (true, _) => "running",
        (false, true) => "finished",
        (false, false) => "waiting for the IPU",
    };
    format!(
        "sched workload: {state}, policy {}, requests {} generated / {} completed, \
         violations {}, swaps {}, failovers {}{}",
        w.policy_params,
        w.generated,
        w.completed,
        w.violations,
        w.swaps,
        w.failovers,
        if w.in_fallback {
            " (host fallback agent schedules)"
        } else {
            ""
        }
    )
}

/// One JSON object.
pub fn json(s: &Stats) -> String {
    let m = &s.malformed;
    let subs: Vec<String> = s.subsystems.iter().map(sub_json).collect();
    format!(
        "{{\"uptime_s\":{:.3},\"host_state\":\"{}\",\"ipu_state\":\"{}\",\"host_epoch\":{},\
         \"ipu_epoch\":{},\"ipu_heartbeat\":{},\"heartbeat_age_ms\":{},\"heartbeat_stale\":{},\
         \"doorbells_to_ipu\":{},\"doorbells_to_host\":{},\"fallback\":\"{}\",\
         \"malformed\":{{\"host_bad_stamps\":{},\"host_invalid\":{},\"ipu_bad_stamps\":{},\
         \"ipu_invalid\":{},\"host_full_or_bad_credit\":{},\"ipu_full_or_bad_credit\":{}}},\
         \"probe\":{},\"sched_workload\":{},\"mem_workload\":{},\"net_workload\":{},\
         \"subsystems\":[{}]}}",
        s.uptime_s,
        s.host_state,
        s.ipu_state,
        s.host_epoch,
        s.ipu_epoch,
        s.ipu_heartbeat,
        opt(s.heartbeat_age_ms),
        s.heartbeat_stale,
        s.doorbells_to_ipu,
        s.doorbells_to_host,
        s.fallback,
        m.host_bad_stamps,
        m.host_invalid,
        m.ipu_bad_stamps,
        m.ipu_invalid,
        m.host_full_or_bad_credit,
        m.ipu_full_or_bad_credit,
        s.probe.map_or("null".to_string(), |p| format!(
            "{{\"sent\":{},\"answered\":{},\"lost\":{},\"last_rtt_us\":{:.1}}}",
            p.sent, p.answered, p.lost, p.last_rtt_us
        )),
        workload_json(s.sched_workload.as_ref()),
        lane_json(s.mem_workload.as_ref()),
        lane_json(s.net_workload.as_ref()),
        subs.join(",")
    )
}

/// The terminal view: a link header, then one row per subsystem.
pub fn table(s: &Stats) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "link: host {} (epoch {}), ipu {} (epoch {}), heartbeat {} age {}{}, fallback {}",
        s.host_state,
        s.host_epoch,
        s.ipu_state,
        s.ipu_epoch,
        s.ipu_heartbeat,
        s.heartbeat_age_ms
            .map_or("-".to_string(), |a| format!("{a} ms")),
        if s.heartbeat_stale { " (STALE)" } else { "" },
        s.fallback
    );
    let m = &s.malformed;
    let _ = writeln!(
        o,
        "doorbells host->ipu {} ipu->host {}; malformed: host bad stamps {} invalid {}, ipu bad stamps {} invalid {}",
        s.doorbells_to_ipu, s.doorbells_to_host, m.host_bad_stamps, m.host_invalid, m.ipu_bad_stamps, m.ipu_invalid
    );
    if let Some(p) = s.probe {
        let _ = writeln!(
            o,
            "probe: sent {} answered {} lost {}, last round trip {:.1} us",
            p.sent, p.answered, p.lost, p.last_rtt_us
        );
    }
    if let Some(w) = &s.sched_workload {
        let _ = writeln!(o, "{}", workload_line(w));
    }
    for (name, l) in [("mem", &s.mem_workload), ("net", &s.net_workload)] {
        if let Some(l) = l {
            let _ = writeln!(o, "{}", lane_line(name, l));
        }
    }
    let _ = writeln!(
        o,
        "{:<8} {:>4} {:>11} {:>12} {:>11} {:>11} {:>9} {:>6} {:>22}",
        "subsys",
        "core",
        "events/s",
        "decisions/s",
        "ring->ipu",
        "ring->host",
        "invalid",
        "busy%",
        "txns ok/stale/abort"
    );
    for x in &s.subsystems {
        let txns = x.txns.map_or("-".to_string(), |t| {
            let o = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            format!("{}/{}/{}", t.committed, o(t.stale), o(t.aborted))
        });
        let _ = writeln!(
            o,
            "{:<8} {:>4} {:>11.0} {:>12.0} {:>11} {:>11} {:>9} {:>6} {:>22}",
            x.name,
            x.ipu_core.map_or("-".to_string(), |c| c.to_string()),
            x.events_per_s,
            x.decisions_per_s,
            format!("{}/{}", x.ring_to_ipu.occupancy, x.ring_to_ipu.capacity),
            format!("{}/{}", x.ring_to_host.occupancy, x.ring_to_host.capacity),
            x.ipu_invalid,
            x.ipu_core_awake_pct
                .map_or("-".to_string(), |p| format!("{p:.0}")),
            txns
        );
    }
    o
}

fn metric(o: &mut String, name: &str, kind: &str, help: &str, rows: &[(String, String)]) {
    let _ = writeln!(o, "# HELP wave_{name} {help}\n# TYPE wave_{name} {kind}");
    for (labels, v) in rows {
        if labels.is_empty() {
            let _ = writeln!(o, "wave_{name} {v}");
        } else {
            let _ = writeln!(o, "wave_{name}{{{labels}}} {v}");
        }
    }
}

/// The Prometheus text exposition format.
pub fn prometheus(s: &Stats) -> String {
    let mut o = String::new();
    link_metrics(&mut o, s);
    subsystem_metrics(&mut o, s);
    probe_metrics(&mut o, s);
    workload_metrics(&mut o, s);
    lane_metrics(&mut o, s);
    o
}

fn one(v: String) -> Vec<(String, String)> {
    vec![(String::new(), v)]
}

/// Link-wide metrics: state, heartbeat, doorbells, malformed input.
fn link_metrics(o: &mut String, s: &Stats) {
    metric(
        o,
        "uptime_seconds",
        "gauge",
        "Seconds since the host shim's sampler started.",
        &one(format!("{:.3}", s.uptime_s)),
    );
    metric(
        o,
        "ipu_up",
        "gauge",
        "1 if the IPU side is READY.",
        &one(u8::from(s.ipu_state == "ready").to_string()),
    );
    metric(
        o,
        "ipu_heartbeat",
        "counter",
        "The IPU's heartbeat counter.",
        &one(s.ipu_heartbeat.to_string()),
    );
    metric(
        o,
        "heartbeat_age_seconds",
        "gauge",
        "Seconds since the IPU heartbeat last moved.",
        &one(s
            .heartbeat_age_ms
            .map_or("NaN".into(), |a| format!("{:.3}", a as f64 / 1e3))),
    );
    metric(
        o,
        "fallback_active",
        "gauge",
        "1 while a subsystem runs on its host fallback.",
        &one(u8::from(s.fallback != "none").to_string()),
    );
    metric(
        o,
        "doorbells_total",
        "counter",
        "Doorbells rung, by direction.",
        &[
            (
                "direction=\"to_ipu\"".into(),
                s.doorbells_to_ipu.to_string(),
            ),
            (
                "direction=\"to_host\"".into(),
                s.doorbells_to_host.to_string(),
            ),
        ],
    );
    let m = &s.malformed;
    metric(
        o,
        "malformed_entries_total",
        "counter",
        "Malformed link input, by side that found it and kind.",
        &[
            (
                "side=\"host\",kind=\"bad_stamp\"".into(),
                m.host_bad_stamps.to_string(),
            ),
            (
                "side=\"host\",kind=\"invalid\"".into(),
                m.host_invalid.to_string(),
            ),
            (
                "side=\"ipu\",kind=\"bad_stamp\"".into(),
                m.ipu_bad_stamps.to_string(),
            ),
            (
                "side=\"ipu\",kind=\"invalid\"".into(),
                m.ipu_invalid.to_string(),
            ),
        ],
    );
}

/// Per-subsystem metrics, labelled `subsystem`.
fn subsystem_metrics(o: &mut String, s: &Stats) {
    let per = |f: &dyn Fn(&SubsystemStats) -> Option<String>| -> Vec<(String, String)> {
        s.subsystems
            .iter()
            .filter_map(|x| f(x).map(|v| (format!("subsystem=\"{}\"", x.name), v)))
            .collect()
    };
    metric(
        o,
        "events_total",
        "counter",
        "Entries the host published to the IPU this session.",
        &per(&|x| Some(x.events.to_string())),
    );
    metric(
        o,
        "decisions_total",
        "counter",
        "The IPU service's count (scheduling: decisions; echo: answers).",
        &per(&|x| Some(x.decisions.to_string())),
    );
    metric(
        o,
        "ring_occupancy",
        "gauge",
        "Entries published and not yet credited, host to IPU ring.",
        &per(&|x| Some(x.ring_to_ipu.occupancy.to_string())),
    );
    metric(
        o,
        "ipu_invalid_total",
        "counter",
        "Malformed entries the IPU service skipped.",
        &per(&|x| Some(x.ipu_invalid.to_string())),
    );
    metric(
        o,
        "ipu_core_busy_ratio",
        "gauge",
        "Share of samples the IPU core serving the subsystem was awake.",
        &per(&|x| x.ipu_core_awake_pct.map(|p| format!("{:.3}", p / 100.0))),
    );
    type Pick = fn(&super::Txns) -> Option<u64>;
    let txn =
        |f: Pick| per(&move |x: &SubsystemStats| x.txns.and_then(|t| f(&t)).map(|v| v.to_string()));
    let picks: [(&str, Pick); 3] = [
        ("committed", |t| Some(t.committed)),
        ("stale", |t| t.stale),
        ("aborted", |t| t.aborted),
    ];
    let mut rows = Vec::new();
    for (outcome, f) in picks {
        for (l, v) in txn(f) {
            rows.push((format!("{l},outcome=\"{outcome}\""), v));
        }
    }
    metric(
        o,
        "transactions_total",
        "counter",
        "Transactions by outcome.",
        &rows,
    );
}

/// The service's link probe, when it runs one.
fn probe_metrics(o: &mut String, s: &Stats) {
    if let Some(p) = s.probe {
        metric(
            o,
            "probes_total",
            "counter",
            "Link probes by outcome.",
            &[
                ("outcome=\"answered\"".into(), p.answered.to_string()),
                ("outcome=\"lost\"".into(), p.lost.to_string()),
            ],
        );
        metric(
            o,
            "probe_rtt_seconds",
            "gauge",
            "Round trip of the last answered link probe.",
            &one(format!("{:.9}", p.last_rtt_us / 1e6)),
        );
    }
}

/// The memory and network workloads, when the service runs them: state, and the final counts.
fn lane_metrics(o: &mut String, s: &Stats) {
    let lanes = [("mem", &s.mem_workload), ("net", &s.net_workload)];
    let lanes: Vec<(&str, &LaneRun)> = lanes
        .into_iter()
        .filter_map(|(n, l)| l.as_ref().map(|l| (n, l)))
        .collect();
    if lanes.is_empty() {
        return;
    }
    let rows = |f: fn(&LaneRun) -> bool| -> Vec<(String, String)> {
        lanes
            .iter()
            .map(|(n, l)| (format!("subsystem=\"{n}\""), u8::from(f(l)).to_string()))
            .collect()
    };
    metric(
        o,
        "lane_workload_running",
        "gauge",
        "1 while the memory or network workload runs.",
        &rows(|l| l.running),
    );
    metric(
        o,
        "lane_workload_finished",
        "gauge",
        "1 once the memory or network workload ended.",
        &rows(|l| l.finished),
    );
    let counts: Vec<(String, String)> = lanes
        .iter()
        .flat_map(|(n, l)| {
            l.summary
                .iter()
                .map(move |(k, v)| (format!("subsystem=\"{n}\",count=\"{k}\""), v.to_string()))
        })
        .collect();
    metric(
        o,
        "lane_workload_result",
        "gauge",
        "Final counts of the memory or network workload (see docs/operations.md).",
        &counts,
    );
}

/// The scheduling workload, when the service runs one.
fn workload_metrics(o: &mut String, s: &Stats) {
    let Some(w) = &s.sched_workload else { return };
    metric(
        o,
        "sched_workload_running",
        "gauge",
        "1 while the scheduling workload offers load or drains.",
        &one(u8::from(w.running).to_string()),
    );
    metric(
        o,
        "sched_requests_total",
        "counter",
        "Requests of the scheduling workload, by state.",
        &[
            ("state=\"generated\"".into(), w.generated.to_string()),
            ("state=\"completed\"".into(), w.completed.to_string()),
        ],
    );
    metric(
        o,
        "sched_invariant_violations_total",
        "counter",
        "Invariant violations the host mechanism counted.",
        &one(w.violations.to_string()),
    );
    metric(
        o,
        "policy_swaps_total",
        "counter",
        "Policy hot-swaps done.",
        &one(w.swaps.to_string()),
    );
    metric(
        o,
        "failovers_total",
        "counter",
        "Times scheduling moved to the host fallback agent.",
        &one(w.failovers.to_string()),
    );
    metric(
        o,
        "sched_policy",
        "gauge",
        "The scheduling policy in force (1 for its name).",
        &[(format!("policy=\"{}\"", w.policy), "1".into())],
    );
}
