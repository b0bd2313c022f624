//! Endpoint tests on a heap buffer standing in for shared memory: attach handshake, link-test
//! echo through a minimal inline echo (the real service is `wave_policy::echo`), restart of either side with resync, and version mismatch.

#![cfg(not(loom))]

use std::sync::atomic::AtomicU64;

use wave_abi::endpoint::{previous_epoch, report_attach_error};
use wave_abi::layout::{Layout, LayoutError};
use wave_abi::msg::{
    decode_test, encode_test, test_transform, TAG_TEST_REQUEST, TAG_TEST_RESPONSE,
};
use wave_abi::status::next_epoch;
use wave_abi::{Channel, Down, Endpoint, SharedRegion, Side};

/// Answers every link-test request waiting on the IPU's ring; returns how many it took.
fn echo(ipu: &mut Endpoint<'_>) -> usize {
    let mut taken = 0;
    while let Some(req) = ipu.rx(Channel::LinkTest).poll() {
        taken += 1;
        if let Ok(m) = decode_test(TAG_TEST_REQUEST, &req) {
            let out = encode_test(TAG_TEST_RESPONSE, m.seq, &test_transform(m.seq, &m.words));
            ipu.send(Channel::LinkTest, &[out]);
        }
    }
    taken
}

fn setup(entries: u32) -> (Vec<AtomicU64>, Layout) {
    let size = Layout::min_size(entries);
    let words: Vec<AtomicU64> = (0..size / 8).map(|_| AtomicU64::new(0)).collect();
    let layout = Layout::v1(entries, size, wave_abi::layout::MIN_VECTORS).unwrap();
    layout.write(&SharedRegion::from_words(&words)).unwrap();
    (words, layout)
}

#[test]
fn attach_echo_restart_resync() {
    let (words, layout) = setup(8);
    let region = SharedRegion::from_words(&words);
    assert_eq!(Layout::read(&region).unwrap(), layout);
    let mut host = Endpoint::new(region, &layout, Side::Host, 1).unwrap();
    assert_eq!(host.poll_link().state, Err(Down::PeerOffline));
    let mut ipu = Endpoint::new(region, &layout, Side::Ipu, 1).unwrap();
    assert_eq!(host.poll_link().state, Err(Down::AwaitingAck));
    let s = ipu.poll_link().state.unwrap();
    assert_eq!(host.poll_link().state, Ok(s));

    for seq in 0..20u64 {
        let w = [seq, seq * 3, !seq, 5];
        assert_eq!(
            host.send(Channel::LinkTest, &[encode_test(TAG_TEST_REQUEST, seq, &w)])
                .0,
            1
        );
        assert_eq!(echo(&mut ipu), 1);
        let r = host.rx(Channel::LinkTest).poll().unwrap();
        let m = decode_test(TAG_TEST_RESPONSE, &r).unwrap();
        assert_eq!((m.seq, m.words), (seq, test_transform(seq, &w)));
    }

    // The IPU restarts with a new epoch: the host must see it, reset, and keep working.
    let e2 = next_epoch(previous_epoch(&region, &layout, Side::Ipu));
    assert_eq!(e2, 2);
    // A request in flight to the old incarnation is lost.
    host.send(
        Channel::LinkTest,
        &[encode_test(TAG_TEST_REQUEST, 99, &[0; 4])],
    );
    // the old IPU endpoint is abandoned, as a crash would
    let mut ipu = Endpoint::new(region, &layout, Side::Ipu, e2).unwrap();
    let p = host.poll_link();
    assert!(p.resynced);
    assert_eq!(host.stats().resyncs, 1);
    let s2 = ipu.poll_link().state.unwrap();
    assert_ne!(s, s2);
    assert_eq!(host.poll_link().state, Ok(s2));
    assert_eq!(echo(&mut ipu), 0, "old-session request must be invisible");
    host.send(
        Channel::LinkTest,
        &[encode_test(TAG_TEST_REQUEST, 100, &[1; 4])],
    );
    assert_eq!(echo(&mut ipu), 1);
    let m = decode_test(
        TAG_TEST_RESPONSE,
        &host.rx(Channel::LinkTest).poll().unwrap(),
    )
    .unwrap();
    assert_eq!(m.seq, 100);

    // Now the host restarts: the IPU resyncs.
    let mut host = Endpoint::new(region, &layout, Side::Host, 2).unwrap();
    assert!(ipu.poll_link().resynced);
    assert!(host.poll_link().state.is_ok());
    assert!(ipu.poll_link().state.is_ok());
}

#[test]
fn wakeup_only_when_peer_sleeps_once_per_sleep() {
    let (words, layout) = setup(8);
    let region = SharedRegion::from_words(&words);
    let mut host = Endpoint::new(region, &layout, Side::Host, 1).unwrap();
    let mut ipu = Endpoint::new(region, &layout, Side::Ipu, 1).unwrap();
    ipu.poll_link();
    host.poll_link();
    let req = encode_test(TAG_TEST_REQUEST, 1, &[0; 4]);
    assert_eq!(
        host.send(Channel::LinkTest, &[req]),
        (1, None),
        "busy peer: no doorbell"
    );
    ipu.begin_sleep();
    assert_eq!(host.send(Channel::LinkTest, &[req]), (1, Some(1)));
    assert_eq!(
        host.send(Channel::LinkTest, &[req]),
        (1, None),
        "already rung for this sleep"
    );
    ipu.end_sleep();
    ipu.begin_sleep();
    assert_eq!(host.send(Channel::LinkTest, &[req]), (1, Some(1)));
    assert_eq!(host.stats().doorbells, 2);
}

#[test]
fn ipu_reports_version_mismatch_to_host() {
    let (words, layout) = setup(8);
    let region = SharedRegion::from_words(&words);
    let mut host = Endpoint::new(region, &layout, Side::Host, 1).unwrap();
    report_attach_error(&region, &LayoutError::Version { major: 1, minor: 0 }, 1);
    // The IPU claims it found major 1 but speaks 2 would be symmetrical; here the block says
    // VersionMismatch with the header version it saw.
    assert_eq!(
        host.poll_link().state,
        Err(Down::VersionMismatch { major: 1, minor: 0 })
    );
}

/// Two services of one side on two cores: the primary serves the link test, a lane serves
/// scheduling. Each sleeps and is woken on its own, and a lane never writes the side's state.
#[test]
fn a_lane_sleeps_and_wakes_on_its_own_channel() {
    let (words, layout) = setup(8);
    let region = SharedRegion::from_words(&words);
    assert_eq!(
        Endpoint::lane(region, &layout, Side::Ipu, &[Channel::Sched]).err(),
        Some(wave_abi::endpoint::EndpointError::NotStarted)
    );
    let mut host = Endpoint::new(region, &layout, Side::Host, 3).unwrap();
    let mut ipu = Endpoint::new(region, &layout, Side::Ipu, 5).unwrap();
    let mut lane = Endpoint::lane(region, &layout, Side::Ipu, &[Channel::Sched]).unwrap();
    assert!(!lane.is_primary() && lane.epoch() == 5);
    for _ in 0..3 {
        ipu.poll_link();
        lane.poll_link();
        host.poll_link();
    }
    assert!(host.is_up() && ipu.is_up() && lane.is_up());
    assert_eq!(lane.session(), ipu.session());

    // Only the lane sleeps: a link-test entry rings nobody, a scheduling entry rings it once.
    lane.begin_sleep();
    let body = encode_test(TAG_TEST_REQUEST, 1, &[0; 4]);
    assert_eq!(host.send(Channel::LinkTest, &[body]), (1, None));
    let v = host.tx_vector(Channel::Sched);
    assert_eq!(host.send(Channel::Sched, &[body]), (1, Some(v)));
    assert_eq!(
        host.send(Channel::Sched, &[body]),
        (1, None),
        "once per sleep"
    );
    assert!(lane.has_work());
    lane.end_sleep();
    assert!(lane.rx(Channel::Sched).poll().is_some());
    // The primary's sleep (side word) still rings a peer that has no lanes to look at.
    ipu.begin_sleep();
    assert_eq!(
        host.send(Channel::LinkTest, &[body]),
        (1, Some(host.tx_vector(Channel::LinkTest)))
    );
    ipu.end_sleep();

    // Lane counters are published per channel; the lane stopping does not stop the side.
    lane.tick_lane(Channel::Sched, 2, 40);
    lane.stop();
    assert_eq!(host.peer_status().lanes[Channel::Sched.index()], (2, 40));
    assert!(host.poll_link().state.is_ok());
}

/// A host lane follows its primary: when the host primary restarts under a new epoch, the lane
/// adopts it on its next poll and starts a new session of its own rings; nothing of the old
/// session (a response waiting for it, a request it had sent) is delivered after that, and the
/// lane's channel works again once the IPU acknowledged the new epoch.
#[test]
fn a_host_lane_follows_its_primary_restart() {
    let (words, layout) = setup(8);
    let region = SharedRegion::from_words(&words);
    let mut host = Endpoint::primary(region, &layout, Side::Host, 3, &[Channel::Sched]).unwrap();
    let mut ipu = Endpoint::new(region, &layout, Side::Ipu, 5).unwrap();
    let mut lane = Endpoint::lane(region, &layout, Side::Host, &[Channel::LinkTest]).unwrap();
    for _ in 0..3 {
        ipu.poll_link();
        host.poll_link();
        assert!(!lane.poll_link().resynced);
    }
    assert!(lane.is_up() && lane.session() == ipu.session());
    let req = |seq| encode_test(TAG_TEST_REQUEST, seq, &[seq; 4]);
    assert_eq!(lane.send(Channel::LinkTest, &[req(1)]).0, 1);
    assert_eq!(echo(&mut ipu), 1);
    assert!(lane.rx(Channel::LinkTest).poll().is_some());
    // In flight at the restart: a response for the lane, and a request the IPU has not read.
    assert_eq!(lane.send(Channel::LinkTest, &[req(2)]).0, 1);
    assert_eq!(echo(&mut ipu), 1);
    assert_eq!(lane.send(Channel::LinkTest, &[req(3)]).0, 1);

    let e2 = next_epoch(previous_epoch(&region, &layout, Side::Host));
    let mut host = Endpoint::primary(region, &layout, Side::Host, e2, &[Channel::Sched]).unwrap();
    let p = lane.poll_link();
    assert!(p.resynced && p.state.is_err(), "{p:?}");
    assert_eq!((lane.epoch(), lane.stats().resyncs), (e2, 1));
    assert!(lane.rx(Channel::LinkTest).poll().is_none(), "old response");
    assert!(ipu.poll_link().resynced);
    assert_eq!(lane.session(), ipu.session(), "same new session");
    assert!(host.poll_link().state.is_ok());
    assert!(ipu.poll_link().state.is_ok());
    let p = lane.poll_link();
    assert!(!p.resynced && p.state == Ok(ipu.session()), "{p:?}");
    assert_eq!(echo(&mut ipu), 0, "old request");
    assert_eq!(lane.send(Channel::LinkTest, &[req(4)]).0, 1);
    assert_eq!(echo(&mut ipu), 1);
    let r = lane.rx(Channel::LinkTest).poll().unwrap();
    assert_eq!(decode_test(TAG_TEST_RESPONSE, &r).unwrap().seq, 4);

    // The primary's clean stop is not a restart: the lane keeps its epoch.
    host.stop();
    assert!(!lane.poll_link().resynced);
    assert_eq!(lane.epoch(), e2);
}

/// An IPU lane does not follow (its primary restarts only with the whole firmware, and its own
/// status block is across the link): a new IPU primary leaves an old IPU lane's epoch alone.
#[test]
fn an_ipu_lane_keeps_its_epoch() {
    let (words, layout) = setup(8);
    let region = SharedRegion::from_words(&words);
    let _ipu = Endpoint::primary(region, &layout, Side::Ipu, 5, &[Channel::LinkTest]).unwrap();
    let mut lane = Endpoint::lane(region, &layout, Side::Ipu, &[Channel::Sched]).unwrap();
    let _ipu = Endpoint::primary(region, &layout, Side::Ipu, 6, &[Channel::LinkTest]).unwrap();
    assert!(!lane.poll_link().resynced);
    assert_eq!(lane.epoch(), 5);
}
