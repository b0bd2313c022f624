//! Fuzz-style property tests: arbitrary bytes into every decoder (entries, link-test messages,
//! the region header and layout table, status blocks, the endpoint's link poll). Nothing may
//! panic, and every rejected input must be counted.

#![cfg(not(loom))]

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use wave_abi::layout::{Layout, LayoutError, IPU_STATUS_OFFSET};
use wave_abi::msg::{decode_test, encode_test, TestDecoder, TAG_TEST_REQUEST, TAG_TEST_RESPONSE};
use wave_abi::ring::EntryBody;
use wave_abi::status::StatusView;
use wave_abi::{Endpoint, SharedRegion, Side};
use zerocopy::FromBytes;

fn region_words(bytes: usize) -> Vec<AtomicU64> {
    (0..bytes / 8).map(|_| AtomicU64::new(0)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_entries_decode_without_panic(raw in proptest::collection::vec(any::<u8>(), 56)) {
        let body = EntryBody::read_from_bytes(&raw).unwrap();
        let mut d = TestDecoder::new(TAG_TEST_RESPONSE);
        let r = d.decode(&body);
        prop_assert_eq!(d.stats.ok + d.stats.invalid(), 1);
        if let Ok(m) = r {
            // Accepted only if it re-encodes to the same bytes.
            prop_assert_eq!(encode_test(TAG_TEST_RESPONSE, m.seq, &m.words), body);
        }
    }

    #[test]
    fn flipped_bits_are_rejected(seq: u64, words: [u64; 4], bit in 0usize..(56 * 8)) {
        let good = encode_test(TAG_TEST_REQUEST, seq, &words);
        let mut bytes = zerocopy::IntoBytes::as_bytes(&good).to_vec();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let bad = EntryBody::read_from_bytes(&bytes).unwrap();
        prop_assert!(decode_test(TAG_TEST_REQUEST, &bad).is_err());
    }

    #[test]
    fn mutated_headers_are_validated(edits in proptest::collection::vec((0usize..0x200, any::<u8>()), 1..8)) {
        let size = Layout::min_size(8);
        let words = region_words(size);
        let region = SharedRegion::from_words(&words);
        Layout::v1(8, size, wave_abi::layout::MIN_VECTORS).unwrap().write(&region).unwrap();
        let mut page = vec![0u8; 0x200];
        region.read_bytes(0, &mut page).unwrap();
        for (at, v) in edits { page[at] = v; }
        region.write_bytes(0, &page).unwrap();
        match Layout::read(&region) {
            Ok(l) => {
                // Whatever was accepted must be inside the region and usable by an endpoint.
                for p in l.places() { prop_assert!(p.offset + p.size <= size); }
                prop_assert!(Endpoint::new(region, &l, Side::Ipu, 1).is_ok());
            }
            Err(e) => { let _ = format!("{e}"); }
        }
    }

    #[test]
    fn arbitrary_header_bytes(raw in proptest::collection::vec(any::<u64>(), 0x200 / 8)) {
        let words = region_words(0x8000);
        for (w, v) in words.iter().zip(&raw) { w.store(*v, Ordering::Relaxed); }
        words[0].store(u64::from_le_bytes(*b"WAVELINK").to_le(), Ordering::Relaxed);
        let region = SharedRegion::from_words(&words);
        let _ = Layout::read(&region);
    }

    #[test]
    fn arbitrary_peer_status(raw in proptest::collection::vec(any::<u64>(), 16)) {
        let size = Layout::min_size(4);
        let words = region_words(size);
        let region = SharedRegion::from_words(&words);
        let layout = Layout::v1(4, size, wave_abi::layout::MIN_VECTORS).unwrap();
        layout.write(&region).unwrap();
        let mut host = Endpoint::new(region, &layout, Side::Host, 5).unwrap();
        let ipu = StatusView::new(&region, IPU_STATUS_OFFSET).unwrap();
        let _ = ipu.snapshot();
        for (i, v) in raw.iter().enumerate() {
            region.word(IPU_STATUS_OFFSET + i * 8).unwrap().store(*v, Ordering::Relaxed);
        }
        let poll = host.poll_link();
        let _ = host.send(wave_abi::Channel::LinkTest, &[EntryBody::ZERO]);
        if poll.state.is_ok() {
            // Up only if the peer really published READY, our ABI major and our epoch as its ack.
            let s = host.peer_status();
            prop_assert_eq!(s.peer_epoch_seen, 5);
        }
    }
}

#[test]
fn version_mismatch_is_reported() {
    let size = Layout::min_size(4);
    let words = region_words(size);
    let region = SharedRegion::from_words(&words);
    Layout::v1(4, size, wave_abi::layout::MIN_VECTORS)
        .unwrap()
        .write(&region)
        .unwrap();
    // Patch the major to the next one.
    let other = wave_abi::ABI_MAJOR + 1;
    let w = region.word(8).unwrap();
    let v = u64::from_le(w.load(Ordering::Relaxed));
    w.store(((v & !0xFFFF) | other as u64).to_le(), Ordering::Relaxed);
    let err = Layout::read(&region).unwrap_err();
    assert_eq!(
        err,
        LayoutError::Version {
            major: other,
            minor: wave_abi::ABI_MINOR
        }
    );
    assert!(format!("{err}").contains("ABI version mismatch"));
}
