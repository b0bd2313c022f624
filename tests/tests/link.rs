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
    // ... and the IPU counted exactly those, while answering every valid one.
    assert_eq!(o.summary.ipu_invalid, o.summary.injected, "{}", show(&o));
    assert_clean(&o, &opts);
}
