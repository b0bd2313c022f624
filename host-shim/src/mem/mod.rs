//! The memory-management mechanism (DESIGN.md §7; docs/memory.md): a managed memory area
//! divided into regions, per-interval access tracking with one record per changed region,
//! decisions from the memory policy (`wave_policy::mem`) applied as transactions that are
//! refused when stale, a zram far tier, and the key-value workload that runs over the area.
//!
//! On the link (`docs/abi.md` §8.3): [`wire`] is the host's memory service (records out,
//! decisions applied as transactions, outcomes back); [`run`] is one run of the demo (the
//! `none`, `host` and `ipu` modes on identical work).

mod area;
mod far;
pub mod kv;
#[cfg(test)]
mod kv_tests;
mod mechanism;
pub mod on_host;
pub mod place;
pub mod report;
pub mod run;
#[cfg(test)]
mod run_tests;
mod sampler;
#[cfg(test)]
mod sampler_tests;
mod sys;
#[cfg(test)]
mod tests;
pub mod wire;

pub use area::{managed_area, AreaConfig, AreaMemory, DEFAULT_REGION_BYTES, PAGE};
pub use far::{read_stat as zram_stat, ZramStat, ZramSwap};
pub use mechanism::{far_tier_available, DecisionVec, MechStats, Mechanism};
