//! The agent's own cost and the link's mitigations, each a switch ([`AgentModel`]): what
//! `cargo wave sim` turns on and off. Without a model ([`crate::SimConfig::agent_model`]
//! `None`) the agent is infinitely fast and every mitigation is on, as before.
//!
//! With a model the agent is one server: events wait in its inbox, one step drains up to
//! `batch` of them, polls the policy once and costs `step_ns + events * event_ns + decisions *
//! decision_ns` of agent time; its decisions leave when the step ends. The mitigations:
//! - **prestaging** off: a decision for a cpu the agent believes busy is held until the agent
//!   learns that the cpu is free (its run ended or it went idle), so every dispatch waits for
//!   a round trip instead of sitting in the cpu's slot;
//! - **batching** off: one event per step (each pays `step_ns`);
//! - **wakeup suppression** ("needs wakeup") off: the host rings the agent's doorbell for every
//!   event, each costing the agent `irq_ns`; on, only an event that finds the agent asleep
//!   (idle longer than `spin_ns`) pays it, after the MSI-X delivery `wake_latency_ns`;
//! - **transaction abort** off: retracting a prestaged transaction needs a read of the slot
//!   across the link first (`read_rtt_ns`) before the abort's write;
//! - **write-combining** off: an entry is eight 8-byte posted writes instead of one 64-byte
//!   write, each further write adding `write_gap_ns` to the entry's one-way latency.

/// The agent's cost and the mitigations (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AgentModel {
    /// Agent time per event (decode and bookkeeping).
    pub event_ns: u64,
    /// Agent time per decision (policy pick and slot write).
    pub decision_ns: u64,
    /// Agent time per step (ring and link checks, the poll itself).
    pub step_ns: u64,
    /// Events one step drains at most (batching on).
    pub batch: usize,
    /// Agent time to take an interrupt.
    pub irq_ns: u64,
    /// Idle time after which the agent sleeps (and an event must wake it).
    pub spin_ns: u64,
    /// Read round trip across the link.
    pub read_rtt_ns: u64,
    /// Extra one-way latency of each further 8-byte write of an entry without write-combining.
    pub write_gap_ns: u64,
    /// Mitigation switches.
    pub mitigations: Mitigations,
}

/// One switch per mitigation (all on by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mitigations {
    /// Decisions wait in a busy cpu's slot (prestaging).
    pub prestage: bool,
    /// One agent step drains many events.
    pub batching: bool,
    /// The host rings the agent only when it sleeps.
    pub wakeup_suppression: bool,
    /// A prestaged transaction is retracted with a posted write (no read).
    pub abort: bool,
    /// An entry is one 64-byte posted write.
    pub write_combining: bool,
}

impl Mitigations {
    /// Every mitigation on.
    pub const ALL: Mitigations = Mitigations {
        prestage: true,
        batching: true,
        wakeup_suppression: true,
        abort: true,
        write_combining: true,
    };
    /// Every mitigation off.
    pub const NONE: Mitigations = Mitigations {
        prestage: false,
        batching: false,
        wakeup_suppression: false,
        abort: false,
        write_combining: false,
    };
    /// Names, in the order of [`Self::get`] and [`Self::set`].
    pub const NAMES: [&'static str; 5] = [
        "prestage",
        "batching",
        "wakeup-suppression",
        "abort",
        "write-combining",
    ];

    /// Switch `i` (of [`Self::NAMES`]).
    pub fn get(&self, i: usize) -> bool {
        [
            self.prestage,
            self.batching,
            self.wakeup_suppression,
            self.abort,
            self.write_combining,
        ][i]
    }

    /// Sets switch `i` (of [`Self::NAMES`]).
    pub fn set(&mut self, i: usize, on: bool) {
        match i {
            0 => self.prestage = on,
            1 => self.batching = on,
            2 => self.wakeup_suppression = on,
            3 => self.abort = on,
            _ => self.write_combining = on,
        }
    }
}

impl Default for AgentModel {
    /// The IPU agent: the firmware's measured instructions (about 700 per event and 1,400 per
    /// decision, `cargo wave demo --ipu-count`) on a Neoverse-N1-class core at 2.5 GHz and
    /// one instruction per cycle (0.4 ns each); PCIe Gen4 figures from pcie-bench (read round
    /// trip 550 ns).
    fn default() -> Self {
        AgentModel {
            event_ns: 280,
            decision_ns: 560,
            step_ns: 100,
            batch: 64,
            irq_ns: 1_000,
            spin_ns: 20_000,
            read_rtt_ns: 550,
            write_gap_ns: 40,
            mitigations: Mitigations::ALL,
        }
    }
}

impl AgentModel {
    /// Events per step.
    pub fn batch(&self) -> usize {
        if self.mitigations.batching {
            self.batch.max(1)
        } else {
            1
        }
    }

    /// Extra one-way latency of one entry (event or decision) from how it is written.
    pub fn entry_extra_ns(&self) -> u64 {
        if self.mitigations.write_combining {
            0
        } else {
            7 * self.write_gap_ns
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_round_trip_and_shape_the_costs() {
        let mut m = Mitigations::ALL;
        for i in 0..Mitigations::NAMES.len() {
            assert!(m.get(i));
            m.set(i, false);
            assert!(!m.get(i));
        }
        assert_eq!(m, Mitigations::NONE);
        let mut a = AgentModel::default();
        assert_eq!((a.batch(), a.entry_extra_ns()), (64, 0));
        a.mitigations = Mitigations::NONE;
        assert_eq!((a.batch(), a.entry_extra_ns()), (1, 280));
    }
}
