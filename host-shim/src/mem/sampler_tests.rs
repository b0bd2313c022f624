//! Read sampling on real memory: reads of resident regions are seen, write sets stay exact,
//! and no byte is ever lost while pages move out and back under a concurrent workload.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use wave_policy::mem::RegionRecord;

use super::kv::{KvLoad, KvLoadConfig, KvStore};
use super::{managed_area, AreaConfig, AreaMemory, Mechanism};

const MIB: usize = 1 << 20;

fn sampled_area(mib: usize, samples: u32) -> (AreaMemory, Mechanism) {
    let cfg = AreaConfig {
        bytes: mib * MIB,
        read_samples: samples,
        ..AreaConfig::default()
    };
    managed_area(cfg).expect("managed area with read sampling (userfaultfd MISSING + MOVE)")
}

fn scan(m: &mut Mechanism) -> Vec<(u32, bool, bool)> {
    let mut out: Vec<RegionRecord> = Vec::new();
    m.scan(&mut out).unwrap();
    out.iter()
        .map(|r| (r.region.0, r.read, r.written))
        .collect()
}

fn pattern(i: usize) -> u8 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes()[7]
}

#[test]
fn reads_of_resident_regions_are_sampled_and_bytes_stay_intact() {
    let (mut mem, mut m) = sampled_area(16, 8);
    for (i, b) in mem.as_mut_slice().iter_mut().enumerate() {
        *b = pattern(i);
    }
    scan(&mut m); // the fill: every region written; samples armed after it
    assert!(scan(&mut m).is_empty(), "nothing touched");
    // read every page of region 3: some sampled page is among them
    let s = mem.as_slice();
    let sum: u64 = (3 * 2 * MIB..4 * 2 * MIB)
        .step_by(4096)
        .map(|i| s[i] as u64)
        .sum();
    std::hint::black_box(sum);
    assert_eq!(
        scan(&mut m),
        vec![(3, true, false)],
        "a read, and not a write"
    );
    assert!(m.stats().sample_faults >= 1);
    // a write through a sampled page is still an exact write
    for i in (5 * 2 * MIB..6 * 2 * MIB).step_by(4096) {
        mem.as_mut_slice()[i] = pattern(i);
    }
    assert_eq!(scan(&mut m), vec![(5, true, true)]);
    assert!(mem
        .as_slice()
        .iter()
        .enumerate()
        .all(|(i, b)| *b == pattern(i)));
    assert!(
        scan(&mut m).iter().all(|r| r.1 && !r.2),
        "the full read above: reads only"
    );
    assert_eq!(m.stats().sampler_errors, 0);
}

#[test]
fn dropping_the_mechanism_puts_every_sample_back() {
    let (mut mem, mut m) = sampled_area(8, 64);
    for (i, b) in mem.as_mut_slice().iter_mut().enumerate() {
        *b = pattern(i);
    }
    scan(&mut m);
    scan(&mut m); // samples are out now
    drop(m);
    assert!(mem
        .as_slice()
        .iter()
        .enumerate()
        .all(|(i, b)| *b == pattern(i)));
}

#[test]
fn concurrent_workload_never_sees_wrong_data_while_samples_move() {
    let (mem, mut m) = sampled_area(16, 32);
    let mut kv = KvStore::new(mem);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let worker = std::thread::spawn(move || {
        let cfg = KvLoadConfig {
            cold_fraction: 0.05,
            put_fraction: 0.2,
            ..KvLoadConfig::default()
        };
        let mut load = KvLoad::new(cfg, kv.keys());
        let mut ops = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let (k, put) = load.next_op();
            if put {
                kv.put(k);
            } else {
                kv.get(k);
            }
            ops += 1;
        }
        (kv.checksum_failures, ops)
    });
    let mut seen = 0;
    for _ in 0..200 {
        seen += scan(&mut m).iter().filter(|r| r.1).count();
        std::thread::sleep(std::time::Duration::from_micros(500));
    }
    stop.store(true, Ordering::Relaxed);
    let (failures, ops) = worker.join().unwrap();
    assert!(ops > 10_000, "the workload ran ({ops} ops)");
    assert_eq!(failures, 0, "no value ever read wrong");
    assert!(
        seen > 0 && m.stats().sample_faults > 0,
        "reads were sampled"
    );
    assert_eq!(m.stats().sampler_errors, 0);
}
