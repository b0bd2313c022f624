//! The Wave IPU image's entry points (see `lib.rs` for the modules).
#![cfg_attr(all(target_arch = "aarch64", target_os = "none"), no_std, no_main)]

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
mod image;

#[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
fn main() {
    eprintln!(
        "wave-firmware runs on the IPU (target aarch64-unknown-none), not on the host.\n\
         Boot it in QEMU with `cargo wave boot`, or build the flashable image with `cargo wave image`."
    );
    std::process::exit(2);
}
