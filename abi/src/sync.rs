//! The atomics every shared-memory access goes through.
//!
//! Normal builds use `core::sync::atomic`; `--cfg loom` swaps in loom's model-checked atomics so
//! that the loom tests check the real ring code, not a copy. Nothing else in the crate names an
//! atomic type directly.
//!
//! Only plain loads, stores and fences are used on shared memory: there is no compare-and-swap or
//! read-modify-write across the link (PCIe atomics are not assumed, and exclusives do not work on
//! the IPU's non-cacheable mapping of the BAR).

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicU64, Ordering};
