//! Kernel steering of a `SO_REUSEPORT` UDP group through an eBPF indirection table.
//!
//! An `SK_REUSEPORT` program (21 instructions, built here and loaded with libbpf through
//! `libbpf-rs`/`libbpf-sys`; no clang, no object file) takes the datagram's flow hash,
//! looks up entry `hash & 127` of a 128-entry `BPF_F_MMAPABLE` array, and selects that
//! worker's socket from a `REUSEPORT_SOCKARRAY`. The control plane rewrites the table with
//! plain stores into the mmapped array (the next datagram sees them). The mmapped view has an
//! 8-byte stride per element even for 4-byte values (`../shared/reference`, §6).
//!
//! Without root (`unprivileged_bpf_disabled`), [`Steering::load`] fails and the server falls
//! back to the kernel's plain reuseport hash (see `docs/network.md`).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicU32, Ordering};

use libbpf_rs::libbpf_sys as sys;
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
use wave_abi::net::TABLE_ENTRIES;

/// `SO_ATTACH_REUSEPORT_EBPF` (asm-generic/socket.h).
const SO_ATTACH_REUSEPORT_EBPF: libc::c_int = 52;
/// Offset of `hash` in `struct sk_reuseport_md`.
const MD_HASH: i16 = 32;
/// Bytes of one element in the mmapped view of an array map (values are rounded up to 8).
const MMAP_STRIDE: usize = 8;

/// The loaded program, its maps and the mapped table.
pub struct Steering {
    _prog: OwnedFd,
    _socks: MapHandle,
    table_map: MapHandle,
    table: *mut u8,
    table_len: usize,
}

// SAFETY: `table` points at a shared mapping owned by this value and written only through
// atomic 32-bit stores (`write_table`), so moving or sharing the value between threads is
// sound; the kernel reads it concurrently by design.
unsafe impl Send for Steering {}
// SAFETY: see `Send`: every access through `&self` is an atomic store.
unsafe impl Sync for Steering {}

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> sys::bpf_insn {
    sys::bpf_insn {
        code,
        _bitfield_align_1: [],
        _bitfield_1: sys::bpf_insn::new_bitfield_1(dst, src),
        off,
        imm,
    }
}

/// The program: `slot = table[hash & 127]; bpf_sk_select_reuseport(ctx, socks, &slot, 0);
/// return SK_PASS` (a failed lookup or select falls back to the kernel's hash).
fn program(table_fd: RawFd, socks_fd: RawFd) -> Vec<sys::bpf_insn> {
    const MOV64_X: u8 = 0xbf;
    const MOV64_K: u8 = 0xb7;
    const LDXW: u8 = 0x61;
    const STXW: u8 = 0x63;
    const AND64_K: u8 = 0x57;
    const ADD64_K: u8 = 0x07;
    const LD_IMM64: u8 = 0x18;
    const CALL: u8 = 0x85;
    const JEQ_K: u8 = 0x15;
    const EXIT: u8 = 0x95;
    let pseudo_map_fd = sys::BPF_PSEUDO_MAP_FD as u8;
    vec![
        ins(MOV64_X, 6, 1, 0, 0),                                 // r6 = ctx
        ins(LDXW, 2, 1, MD_HASH, 0),                              // r2 = ctx->hash
        ins(AND64_K, 2, 0, 0, (TABLE_ENTRIES - 1) as i32),        // r2 &= 127
        ins(STXW, 10, 2, -4, 0),                                  // key on the stack
        ins(MOV64_X, 2, 10, 0, 0),                                //
        ins(ADD64_K, 2, 0, 0, -4),                                // r2 = &key
        ins(LD_IMM64, 1, pseudo_map_fd, 0, table_fd),             // r1 = table
        ins(0, 0, 0, 0, 0),                                       //
        ins(CALL, 0, 0, 0, sys::BPF_FUNC_map_lookup_elem as i32), // r0 = &table[key]
        ins(JEQ_K, 0, 0, 9, 0),                                   // no entry: pass
        ins(LDXW, 2, 0, 0, 0),                                    // r2 = slot
        ins(STXW, 10, 2, -8, 0),                                  //
        ins(MOV64_X, 1, 6, 0, 0),                                 // r1 = ctx
        ins(LD_IMM64, 2, pseudo_map_fd, 0, socks_fd),             // r2 = socks
        ins(0, 0, 0, 0, 0),                                       //
        ins(MOV64_X, 3, 10, 0, 0),                                //
        ins(ADD64_K, 3, 0, 0, -8),                                // r3 = &slot
        ins(MOV64_K, 4, 0, 0, 0),                                 // flags
        ins(CALL, 0, 0, 0, sys::BPF_FUNC_sk_select_reuseport as i32),
        ins(MOV64_K, 0, 0, 0, 1), // SK_PASS
        ins(EXIT, 0, 0, 0, 0),
    ]
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

impl Steering {
    /// Loads the program over `sockets` (socket i = worker i, all bound to one port with
    /// `SO_REUSEPORT`), attaches it to the group and maps the table, initially `table`.
    pub fn load(sockets: &[RawFd], table: &[u8; TABLE_ENTRIES]) -> Result<Steering, String> {
        let n = sockets.len() as u32;
        let socks = MapHandle::create(
            MapType::ReuseportSockarray,
            Some("wave_socks"),
            4,
            8,
            n.max(1),
            &sys::bpf_map_create_opts {
                sz: std::mem::size_of::<sys::bpf_map_create_opts>() as _,
                ..Default::default()
            },
        )
        .map_err(|e| format!("creating the socket array: {e}"))?;
        let table_map = MapHandle::create(
            MapType::Array,
            Some("wave_indir"),
            4,
            4,
            TABLE_ENTRIES as u32,
            &sys::bpf_map_create_opts {
                sz: std::mem::size_of::<sys::bpf_map_create_opts>() as _,
                map_flags: sys::BPF_F_MMAPABLE,
                ..Default::default()
            },
        )
        .map_err(|e| format!("creating the mmapable table: {e}"))?;
        for (i, fd) in sockets.iter().enumerate() {
            socks
                .update(
                    &(i as u32).to_le_bytes(),
                    &(*fd as u64).to_le_bytes(),
                    MapFlags::ANY,
                )
                .map_err(|e| format!("adding socket {i} to the socket array: {e}"))?;
        }
        let prog = load_program(&table_map, &socks)?;
        let (ptr, len) = map_table(&table_map)?;
        let s = Steering {
            _prog: prog,
            _socks: socks,
            table_map,
            table: ptr,
            table_len: len,
        };
        s.write_table(table);
        if let Some(first) = sockets.first() {
            attach(*first, s._prog.as_raw_fd())?;
        }
        Ok(s)
    }

    /// Rewrites every entry with plain (atomic) stores into the mapped array.
    pub fn write_table(&self, table: &[u8; TABLE_ENTRIES]) {
        for (i, w) in table.iter().enumerate() {
            // SAFETY: the mapping is `table_len` >= 128 * 8 bytes (checked in `map_table`),
            // page aligned, and element i's value sits at byte 8 i, 4-byte aligned.
            let cell = unsafe { &*(self.table.add(i * MMAP_STRIDE) as *const AtomicU32) };
            cell.store(*w as u32, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
    }

    /// Reads the table back through the map syscall (tests: the mmapped stores reached it).
    pub fn read_entry(&self, i: u32) -> Option<u32> {
        let v = self
            .table_map
            .lookup(&i.to_le_bytes(), MapFlags::ANY)
            .ok()??;
        Some(u32::from_le_bytes(v.get(..4)?.try_into().ok()?))
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        // SAFETY: `table`/`table_len` are the mapping made in `map_table`, unmapped once.
        unsafe { libc::munmap(self.table.cast(), self.table_len) };
    }
}

fn load_program(table: &MapHandle, socks: &MapHandle) -> Result<OwnedFd, String> {
    let insns = program(table.as_fd().as_raw_fd(), socks.as_fd().as_raw_fd());
    let mut opts = sys::bpf_prog_load_opts {
        sz: std::mem::size_of::<sys::bpf_prog_load_opts>() as _,
        ..Default::default()
    };
    // SAFETY: the name and license are NUL-terminated literals, `insns` is a live vector of
    // `insns.len()` instructions, `opts` is a valid, sized options struct; libbpf copies all
    // of them into the bpf() call and keeps no pointer.
    let fd = unsafe {
        sys::bpf_prog_load(
            sys::BPF_PROG_TYPE_SK_REUSEPORT,
            c"wave_steer".as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as _,
            &mut opts,
        )
    };
    if fd < 0 {
        return Err(format!(
            "loading the SK_REUSEPORT program: {}",
            std::io::Error::from_raw_os_error(-fd)
        ));
    }
    // SAFETY: a non-negative return of bpf_prog_load is a new file descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn map_table(table: &MapHandle) -> Result<(*mut u8, usize), String> {
    let len = (TABLE_ENTRIES * MMAP_STRIDE).next_multiple_of(4096);
    // SAFETY: mapping a BPF_F_MMAPABLE array map's fd shared and read/write at offset 0 for
    // its (page-rounded) value area; the result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            table.as_fd().as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(os_err("mapping the table"));
    }
    Ok((p.cast(), len))
}

fn attach(sock: RawFd, prog: RawFd) -> Result<(), String> {
    // SAFETY: setsockopt reads one c_int from the pointer we pass with its size.
    let r = unsafe {
        libc::setsockopt(
            sock,
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_EBPF,
            (&prog as *const RawFd).cast(),
            std::mem::size_of::<RawFd>() as u32,
        )
    };
    if r != 0 {
        return Err(os_err("attaching the program to the reuseport group"));
    }
    Ok(())
}
