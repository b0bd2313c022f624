//! The host↔IPU link end to end: the real firmware in QEMU (`wave.link=echo`) against the host
//! shim's ivshmem server, through `wave_qemu::run_link_test`. Asserts on counters from both
//! sides: every request answered with the right transform, nothing lost or corrupt, doorbells
//! delivered, malformed requests counted and skipped by the IPU, clean firmware exit.

use std::time::Duration;

use wave_qemu::{run_link_test, BootStatus, LinkTestOptions, LinkTestOutcome};

fn run(opts: &LinkTestOptions) -> LinkTestOutcome {
    let image = wave_qemu::image().expect("firmware image");
    let outcome =
        run_link_test(opts, &image).unwrap_or_else(|e| panic!("link test could not run: {e}"));
    println!("{}", outcome.line());
    outcome
}

fn show(o: &LinkTestOutcome) -> String {
    format!(
        "\n{}\n--- status {:?} ---\n--- console ---\n{}",
        o.summary, o.boot.status, o.boot.console
    )
}

fn options(messages: u64, smp: u32) -> LinkTestOptions {
    LinkTestOptions {
        messages,
        smp,
        timeout: Duration::from_secs(120),
        ..Default::default()
    }
}

fn assert_clean(o: &LinkTestOutcome, opts: &LinkTestOptions) {
    let s = &o.summary;
    assert_eq!(o.boot.status, BootStatus::Exited(0), "{}", show(o));
    assert_eq!(s.sent, opts.messages, "{}", show(o));
    assert_eq!(s.received, opts.messages, "{}", show(o));
    assert_eq!((s.lost, s.corrupt), (0, 0), "{}", show(o));
    assert!(o.passed(opts), "{}", show(o));
    // The firmware's own account matches: it echoed every request.
    let echoed = format!(
        "echoed {} invalid {}",
        opts.messages + s.injected - s.ipu_invalid,
        s.ipu_invalid
    );
    assert!(
        o.boot.console.contains(&echoed),
        "expected `{echoed}`{}",
        show(o)
    );
}

#[test]
fn link_one_ipu_core() {
    let opts = options(20_000, 1);
    let o = run(&opts);
    assert_clean(&o, &opts);
}

#[test]
fn link_four_ipu_cores() {
    let opts = options(20_000, 4);
    let o = run(&opts);
    assert_clean(&o, &opts);
    assert!(o.boot.console.contains("cores online: 4/4"), "{}", show(&o));
}

#[test]
fn ipu_skips_malformed_requests_and_keeps_serving() {
    let opts = LinkTestOptions {
        malformed_every: Some(50),
        ..options(6_000, 2)
    };
    let o = run(&opts);
    // Every kind of malformed request went out at least once ...
    assert!(
        o.summary.injected >= wave_host_shim::link_test::MALFORMED_KINDS,
        "{}",
        show(&o)
    );
    // ... exactly one after every 50th valid request (issue 9: not one per batch) ...
    assert_eq!(o.summary.injected, 6_000 / 50, "{}", show(&o));
    // ... and the IPU counted exactly those, while answering every valid one.
    assert_eq!(o.summary.ipu_invalid, o.summary.injected, "{}", show(&o));
    assert_clean(&o, &opts);
}

/// `--malformed-every 1`: a malformed request after every valid one.
#[test]
fn malformed_every_1_means_every_request() {
    let opts = LinkTestOptions {
        malformed_every: Some(1),
        ..options(2_000, 1)
    };
    let o = run(&opts);
    assert_eq!(o.summary.injected, 2_000, "{}", show(&o));
    assert_eq!(o.summary.ipu_invalid, 2_000, "{}", show(&o));
    assert_clean(&o, &opts);
}

fn echo_boot(smp: u32) -> wave_qemu::BootConfig {
    wave_qemu::BootConfig {
        smp,
        timeout: Duration::from_secs(120),
        append: vec!["wave.link=echo".into()],
        ..Default::default()
    }
}

fn link_cfg(messages: u64, left: Duration) -> wave_host_shim::link_test::LinkTestConfig {
    wave_host_shim::link_test::LinkTestConfig {
        messages,
        timeout: left,
        link_up_timeout: Duration::from_secs(30).min(left),
        ..Default::default()
    }
}

#[test]
fn a_new_ipu_connecting_to_the_same_host_gets_a_new_epoch() {
    use wave_qemu::ipu::{bind, with_ipu_on, LinkSettings};
    let image = wave_qemu::image().expect("firmware image");
    let mut server = bind(LinkSettings::default()).expect("server");
    let mut epochs = Vec::new();
    for run in 0..2 {
        let (summary, fw) = with_ipu_on(&mut server, &echo_boot(1), &image, |s, left| {
            (
                wave_host_shim::Link::epoch(s),
                wave_host_shim::link_test::run(s, link_cfg(2_000, left)),
            )
        })
        .unwrap_or_else(|e| panic!("run {run}: {e}"));
        let (epoch, summary) = summary;
        let summary = summary.unwrap_or_else(|e| panic!("run {run}: {e}\n{}", fw.console));
        assert_eq!(
            (summary.received, summary.lost, summary.corrupt),
            (2_000, 0, 0),
            "{summary}"
        );
        assert_eq!(fw.status, BootStatus::Exited(0), "{}", fw.console);
        assert!(
            fw.console.contains(&format!("peer epoch {epoch})")),
            "the IPU saw host epoch {epoch}\n{}",
            fw.console
        );
        epochs.push(epoch);
    }
    assert_ne!(
        epochs[0], epochs[1],
        "a new QEMU connection starts a new host epoch"
    );
    assert_eq!(server.counters().disconnects, 2);
}

#[test]
fn abi_version_mismatch_is_refused_clearly_on_both_sides() {
    use wave_host_shim::link_test::LinkTestError;
    use wave_qemu::ipu::{with_ipu, LinkSettings};
    let image = wave_qemu::image().expect("firmware image");
    let link = LinkSettings {
        abi_major: wave_abi::ABI_MAJOR + 1,
        ..LinkSettings::default()
    };
    let (result, fw) = with_ipu(&echo_boot(1), &image, link, |s, left| {
        wave_host_shim::link_test::run(s, link_cfg(10, left))
    })
    .expect("QEMU ran");
    // The IPU refuses the region, says why, and fails its run (boot error) instead of hanging.
    assert_eq!(fw.status, BootStatus::Exited(1), "{}", fw.console);
    assert!(
        fw.console.contains("ABI version mismatch"),
        "{}",
        fw.console
    );
    // The host side refuses the mismatched region as well, with a message that says so.
    match result {
        Err(
            e @ (LinkTestError::NeverUp(wave_abi::Down::VersionMismatch { .. })
            | LinkTestError::Layout(wave_abi::LayoutError::Version { .. })),
        ) => {
            assert!(
                e.to_string().contains("version mismatch") || e.to_string().contains("ABI"),
                "{e}"
            );
        }
        other => panic!("expected a version mismatch, got {other:?}\n{}", fw.console),
    }
}
