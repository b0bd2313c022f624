//! The memory-management mechanism (DESIGN.md §7; docs/memory.md): a managed memory area
//! divided into regions, per-interval access tracking with one record per changed region,
//! decisions from the memory policy (`wave_policy::mem`) applied as transactions that are
//! refused when stale, a zram far tier, and the key-value workload that runs over the area.
//!
//! Not wired into the link or the ABI yet: a later change registers this with the platform.

mod area;
mod far;
pub mod kv;
#[cfg(test)]
mod kv_tests;
mod mechanism;
pub mod on_host;
mod sampler;
#[cfg(test)]
mod sampler_tests;
mod sys;
#[cfg(test)]
mod tests;

pub use area::{managed_area, AreaConfig, AreaMemory, DEFAULT_REGION_BYTES, PAGE};
pub use far::{ZramStat, ZramSwap};
pub use mechanism::{far_tier_available, DecisionVec, MechStats, Mechanism};
