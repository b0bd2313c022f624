//! Links the image with the board's memory map and defmt's section script (firmware target
//! only; host builds of the portable modules need neither).
fn main() {
    println!("cargo:rerun-if-changed=../linker/qemu-virt.ld");
    println!("cargo:rerun-if-env-changed=DEFMT_LOG");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/../linker/qemu-virt.ld");
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
}
