//! `wave-abi`: the host<->IPU contract (shared-memory layout, rings, messages).
//!
//! Its specification is `docs/abi.md`; the two are changed together.
#![no_std]
