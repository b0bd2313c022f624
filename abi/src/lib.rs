//! `wave-abi`: the host<->IPU contract (shared-memory layout, rings, messages).
//!
//! Its specification is `docs/abi.md`; the two are changed together. A second implementation
//! written from that document alone must interoperate with this crate.
//!
//! Map of the crate:
//! - [`region`]: a bounds-checked view of the shared window as little-endian atomic words;
//!   the only `unsafe` constructor is [`region::SharedRegion::from_raw`].
//! - [`layout`]: region header, layout table, homes and writers, validation.
//! - [`status`]: per-side state/epoch/heartbeat/wake-request blocks.
//! - [`ring`]: the consumer-homed SPSC ring with stamps and batched credits.
//! - [`endpoint`]: one side of the link; attach, restart/resync, wake-ups.
//! - [`msg`]: link-test messages and decoders with counters (the echo service that answers
//!   them lives in `wave-policy`).
//! - [`net`]: network/RPC control plane: telemetry, decisions, outcomes, the steering table.
//! - [`sched`]: scheduling: session config, event messages, per-CPU transaction slots.
//! - [`mem`]: memory management: session config, region records, decisions, outcomes.
//! - [`subsystem`]: the subsystem descriptors and their registration; layout, channels and
//!   vectors are derived from them.
//! - [`sync`]: the atomics shim (`core` normally, `loom` under `--cfg loom`).
//!
//! `no_std`, no allocation, no panics on the data path.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[cfg(not(target_endian = "little"))]
compile_error!("wave-abi assumes a little-endian CPU on both sides of the link");

pub mod endpoint;
pub mod layout;
pub mod mem;
pub mod msg;
pub mod net;
pub mod region;
pub mod ring;
pub mod sched;
pub mod status;
pub mod subsystem;
pub mod sync;

#[cfg(all(test, loom))]
mod loom_tests;

/// ABI major version: a reader refuses any other major.
pub const ABI_MAJOR: u16 = 3;
/// ABI minor version: additions only; readers accept any minor of their major.
pub const ABI_MINOR: u16 = 0;

pub use endpoint::{Channel, Down, Endpoint, LinkPoll};
pub use layout::{Kind, Layout, LayoutError, Side};
pub use region::SharedRegion;
pub use ring::{Consumer, EntryBody, Producer, RingEntry};
