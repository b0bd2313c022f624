//! `wave-host-shim`: the host side of Wave (mechanism only).
#![cfg_attr(not(feature = "std"), no_std)]
