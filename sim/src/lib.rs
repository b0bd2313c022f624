//! `wave-sim`: Wave's deterministic discrete-event simulator of N host CPUs scheduled by a
//! policy across a PCIe link, in virtual time (u64 ns; nothing reads a clock, so a run is a
//! function of its configuration and seed).
//!
//! It runs the shipped code, not a copy of it:
//! - the host **mechanism** is `wave-host-shim`'s `no_std` core (`sched::Mechanism`, linked
//!   with `default-features = false`): every thread state change and sequence bump, every
//!   claim (commit, stale, not runnable, abort), the idle rule and every preempt check;
//! - the **CPU slots** are the ABI's own `SlotWriter`/`SlotReader` over an in-process region,
//!   and events travel as ring entries decoded by the ABI's `EventDecoder` ([`link`],
//!   [`agent`]);
//! - the **agent loop** can be the shipped one: [`simulate_runtime`] runs
//!   `wave_policy::agent::SchedAgent` over an in-process region ([`runtime`]): ring entries,
//!   the decoder, the policy the session configuration names, the slot writes;
//! - the **policies** are `wave-policy`'s, unchanged; [`simulate`] drives any `&mut dyn Policy`
//!   directly ([`agent::PolicyAgent`]), for custom capacities and configurations and for
//!   scripted test agents. Both agents sit behind one seam, [`agent::AgentSide`], and give the
//!   same run for the same policy and configuration (a test checks it).
//!
//! What the simulator adds is time and load: the link as a latency model (events reach the
//! agent, and decisions host memory, `link_latency_ns` later; doorbells wake a sleeping CPU
//! `wake_latency_ns` later), safe points every `safe_point_ns` of run time, the workloads
//! ([`Workload`]: seeded open-loop requests, wake/block/affinity/kill storms), and the checks.
//! Every violation of an invariant is recorded in [`SimReport::violations`]: no thread on two
//! CPUs, no stale decision applied (a commit leaves the thread running at the slot's seq), no
//! prestage of a thread the agent's own events say is not runnable, exactly one outcome per
//! transaction, no request or runnable thread lost, the mechanism's run-time accounting equal
//! to the CPUs' busy time, the policy's own invariants; starvation shows in
//! [`SimReport::max_runnable_wait_ns`].
//!
//! ```
//! use wave_policy::CentralizedFifo;
//! use wave_sim::{simulate, SimConfig};
//! let mut cfg = SimConfig::rocksdb(4, 50_000.0, 1);
//! cfg.duration_ns = 5_000_000;
//! let r = simulate(cfg, &mut CentralizedFifo::<4, 256>::new(4).unwrap());
//! assert!(r.violations.is_empty(), "{:#?}", r.violations);
//! assert_eq!(r.completed, r.generated);
//! ```

pub mod agent;
pub mod config;
mod host;
pub mod link;
pub mod mem;
pub mod model;
pub mod net;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod scenario;
mod sim;
pub mod svg;
mod workload;

pub use crate::config::{RequestClass, SimConfig, StormConfig, Workload};
pub use crate::link::HostMemory;
pub use crate::model::{AgentModel, Mitigations};
pub use crate::report::{pct, ClassStats, HostCounters, SimReport, Violations};
pub use crate::rng::Rng;
pub use crate::runtime::{simulate_runtime, AgentRegion, RuntimeAgent};
pub use crate::sim::{simulate, threads_of, Sim};
