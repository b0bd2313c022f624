//! `wave-policy`: OS policies as pure, portable `no_std` logic.
//!
//! Policies have no hardware access; the firmware, the host shim's on-host mode and the
//! simulator all link the same code.
#![no_std]
