//! The link and the host memory it writes into, in process: the shared region that holds the
//! per-CPU transaction slots (written with the IPU's shipped `SlotWriter`, read with the
//! host's `SlotReader`) and the host's thread status words (the mechanism's `ThreadSlot`s).
//!
//! PCIe is a latency model around this memory: an event reaches the agent, and a decision's
//! posted write reaches host memory, `link_latency_ns` after it was sent ([`crate::Sim`]
//! schedules both); [`land`] is the moment a decision's write becomes visible to the host.
//! With [`crate::runtime`]'s `AgentRegion`, this is where the simulator touches the region layout
//! (`Layout::v1`): the two places to adapt when the layout is derived from the subsystems.

use core::sync::atomic::AtomicU64;
use std::vec::Vec;

use wave_abi::sched::{SlotReader, SlotWriter, CPU_VECTOR_BASE, MAX_CPUS};
use wave_abi::{Layout, SharedRegion};
use wave_host_shim::sched::{Mechanism, ThreadSlot};
use wave_policy::Decision;

/// Ring entries of the layout (the simulator carries events itself; the rings are unused).
const RING_ENTRIES: u32 = 16;

/// The host memory of one run.
pub struct HostMemory {
    words: Vec<AtomicU64>,
    layout: Layout,
    threads: Vec<ThreadSlot>,
    n_cpus: u32,
}

impl HostMemory {
    /// Memory for `n_cpus` CPUs (at most 64) and `n_threads` threads.
    pub fn new(n_cpus: usize, n_threads: usize) -> HostMemory {
        assert!(
            (1..=MAX_CPUS as usize).contains(&n_cpus),
            "the simulator models 1..={MAX_CPUS} host CPUs (affinity masks are 64 bits), not {n_cpus}"
        );
        let size = Layout::min_size(RING_ENTRIES);
        let words: Vec<AtomicU64> = (0..size / 8).map(|_| AtomicU64::new(0)).collect();
        let layout = Layout::v1(RING_ENTRIES, size, CPU_VECTOR_BASE as u32 + n_cpus as u32)
            .expect("the v1 layout fits its own minimum size");
        layout
            .write(&SharedRegion::from_words(&words))
            .expect("the layout fits the region it was sized for");
        HostMemory {
            words,
            layout,
            threads: (0..n_threads).map(|_| ThreadSlot::new()).collect(),
            n_cpus: n_cpus as u32,
        }
    }

    /// True if this memory holds `n_cpus` CPUs and at least `n_threads` threads.
    pub fn fits(&self, n_cpus: usize, n_threads: usize) -> bool {
        self.n_cpus as usize == n_cpus && self.threads.len() >= n_threads
    }

    /// The shipped host mechanism over this memory's thread slots.
    pub fn mechanism(&self) -> Mechanism<'_> {
        Mechanism::new(&self.threads, self.n_cpus)
    }

    /// The writer that lands the agent's decisions (clears the slots) and the host's reader
    /// of the CPU slots, both for link `session`.
    pub fn slots(&self, session: u32) -> (SlotWriter<'_>, SlotReader<'_>) {
        let region = SharedRegion::from_words(&self.words);
        let w = SlotWriter::new(&region, &self.layout, self.n_cpus, session)
            .expect("the layout has CPU slots for every CPU");
        let r = SlotReader::new(&region, &self.layout, self.n_cpus, session)
            .expect("the layout has CPU slots for every CPU");
        (w, r)
    }
}

/// A decision's write lands in host memory. Returns false if the slot writer refused it (a CPU
/// outside the session). `Wake` writes nothing (it is a doorbell).
pub fn land(w: &mut SlotWriter<'_>, d: &Decision) -> bool {
    match *d {
        Decision::Prestage {
            cpu, txn, tid, seq, ..
        } => w.prestage(cpu.0, txn.0, tid.0, seq.0),
        Decision::Abort { cpu, txn } => w.abort(cpu.0, txn.0),
        Decision::Preempt { cpu, tid, seq } => w.preempt(cpu.0, tid.0, seq.0),
        Decision::Wake { .. } => true,
    }
}
