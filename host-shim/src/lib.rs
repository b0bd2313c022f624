//! `wave-host-shim`: the host side of Wave (mechanism only).
//!
//! - [`sched`]: the scheduling mechanism core (`no_std`): thread status words, state changes
//!   and their events, the per-CPU claim of prestaged transactions, preempt checks.
//! - [`link`]: the `Link` trait every transport implements (`no_std`: shared region access,
//!   notify the peer, wait for our own doorbells).
//! - With the `std` feature (default): [`shm`] (memfd-backed shared memory), [`ivshmem`] (the
//!   ivshmem server transport QEMU connects to), [`local`] (an in-process link pair, used by the
//!   on-host mode and tests), [`link_test`] (the host-side link-test driver), [`engine`] (the
//!   scheduling engine: pinned CPUs, handler fibers, workload, the ipu/host/linux modes),
//!   [`net`] (the network/RPC control plane: loopback RPC server, eBPF steering, mechanism),
//!   [`error`], [`service`] (`wave-host run` as a service: configuration, install, signals),
//!   [`stats`] (live stats from the region, the control socket, `wave-host stats`), [`watchdog`]
//!   (declaring a silent or vanished IPU gone, and the report it prints).
//!
//! The link protocol itself (layout, rings, epochs, wake-ups) lives in `wave-abi`; this crate
//! moves bytes and doorbells and drives the host end of it.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod link;
pub mod sched;

#[cfg(feature = "std")]
pub mod engine;
#[cfg(feature = "std")]
pub mod error;
#[cfg(feature = "std")]
pub mod ivshmem;
#[cfg(feature = "std")]
pub mod link_test;
#[cfg(feature = "std")]
pub mod local;
#[cfg(feature = "std")]
pub mod mem;
#[cfg(feature = "std")]
pub mod net;
#[cfg(feature = "std")]
pub mod report;
#[cfg(feature = "std")]
pub mod service;
#[cfg(feature = "std")]
pub mod shm;
#[cfg(feature = "std")]
pub mod stats;
#[cfg(feature = "std")]
pub mod watchdog;

pub use link::{Link, LinkError, Wake};
