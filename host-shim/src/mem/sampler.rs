//! Fault-based read sampling (DAMON-style, in userspace): each interval a few random pages
//! per region are moved out of the area into a private stash (`UFFDIO_MOVE`, zero-copy), so
//! the next access to one of them, read or write, raises a userfaultfd MISSING fault. A
//! handler thread notes the region as accessed and puts the page back with `UFFDIO_COPY` in
//! write-protect mode (so write tracking stays exact), which wakes the faulting thread.
//! Samples nobody touched are put back the same way at the next interval.
//!
//! A table of sampled pages, each [`State::Moving`] (being moved out), [`State::Out`] (in
//! the stash) or [`State::Restoring`] (being put back by the mechanism), orders every move of
//! a sampled page, so a page is restored exactly once and never replaced by a zero page. The
//! mechanism holds the table's mutex only to change an entry, never across a syscall, so the
//! fault handler (the one a faulting reader waits for) never waits behind the mechanism's
//! work, or behind the mechanism thread being preempted; only a fault on the one page the
//! mechanism is moving right now waits for that move.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::area::PAGE;
use super::sys;

/// Where a sampled page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The mechanism is moving it out (a fault on it waits for the move to finish).
    Moving,
    /// In its stash slot: whoever takes the entry puts it back.
    Out,
    /// The mechanism is putting it back (a fault on it waits for that).
    Restoring,
}

/// State shared with the fault handler thread.
struct Shared {
    uffd: Arc<OwnedFd>,
    /// Sampled page address -> its stash slot address and state.
    out: Mutex<HashMap<usize, (usize, State)>>,
    /// Per region: a sampled page was touched since the flags were last taken.
    touched: Vec<AtomicBool>,
    base: usize,
    region_bytes: usize,
    stop: AtomicBool,
    faults: AtomicU64,
    errors: AtomicU64,
    /// Written to stop the handler (it sleeps in `poll` on the userfaultfd and this, with no
    /// timeout: it wakes for a fault or to stop, never on a timer).
    wake: OwnedFd,
    /// The handler thread's kernel thread id (0 until it runs).
    tid: AtomicI32,
    /// Time the handler waited for the mutex: total and longest, ns.
    lock_wait_ns: AtomicU64,
    lock_wait_max_ns: AtomicU64,
}

/// The sampler of one managed area.
pub(super) struct Sampler {
    shared: Arc<Shared>,
    stash: usize,
    per_region: usize,
    thread: Option<JoinHandle<()>>,
}

/// Copy the page in stash slot `src` back to `dst` write-protected (waking any faulting
/// thread), and empty the slot for the next `UFFDIO_MOVE` into it. `Ok(false)` if `dst` was
/// already present.
fn put_back(uffd: &OwnedFd, dst: usize, src: usize) -> io::Result<bool> {
    let done = copy_back(uffd, dst, src)?;
    if done {
        sys::madvise(src, PAGE, libc::MADV_DONTNEED)?;
    }
    Ok(done)
}

/// [`put_back`] without emptying the slot (the caller empties many slots in one
/// `MADV_DONTNEED`: one TLB shootdown per run of slots instead of one per page).
fn copy_back(uffd: &OwnedFd, dst: usize, src: usize) -> io::Result<bool> {
    let mut c = sys::UffdioCopy {
        dst: dst as u64,
        src: src as u64,
        len: PAGE as u64,
        mode: sys::UFFDIO_COPY_MODE_WP,
        copy: 0,
    };
    match sys::ioctl(uffd, sys::UFFDIO_COPY, &mut c) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Empties the stash slots `slots` (page addresses), one `MADV_DONTNEED` per contiguous run.
fn clear_slots(mut slots: Vec<usize>) -> io::Result<()> {
    slots.sort_unstable();
    let mut i = 0;
    while i < slots.len() {
        let mut j = i + 1;
        while j < slots.len() && slots[j] == slots[j - 1] + PAGE {
            j += 1;
        }
        sys::madvise(slots[i], (j - i) * PAGE, libc::MADV_DONTNEED)?;
        i = j;
    }
    Ok(())
}

impl Shared {
    /// Resolve one MISSING fault at `addr` (the handler thread).
    fn resolve(&self, addr: usize) {
        let page = addr & !(PAGE - 1);
        let t0 = std::time::Instant::now();
        let res = loop {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            match out.get(&page).copied() {
                Some((slot, State::Out)) => {
                    out.remove(&page);
                    self.faults.fetch_add(1, Ordering::Relaxed);
                    let r = (page - self.base) / self.region_bytes;
                    self.touched[r].store(true, Ordering::Relaxed);
                    let res = put_back(&self.uffd, page, slot);
                    if res.is_err() {
                        out.insert(page, (slot, State::Out)); // retried at the next fault
                    }
                    break res;
                }
                // the mechanism is in the middle of one syscall on this page: wait for it
                Some(_) => {
                    drop(out);
                    std::thread::yield_now();
                }
                None => {
                    // not a sample (never populated): a zero page, write-protected like the rest
                    static ZERO: [u8; PAGE] = [0; PAGE];
                    break put_back_zero(&self.uffd, page, ZERO.as_ptr() as usize);
                }
            }
        };
        let waited = t0.elapsed().as_nanos() as u64;
        self.lock_wait_ns.fetch_add(waited, Ordering::Relaxed);
        self.lock_wait_max_ns.fetch_max(waited, Ordering::Relaxed);
        if !matches!(res, Ok(true)) {
            if res.is_err() {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            let mut range = sys::UffdioRange {
                start: page as u64,
                len: PAGE as u64,
            };
            let _ = sys::ioctl(&self.uffd, sys::UFFDIO_WAKE, &mut range);
        }
    }

    fn run(&self) {
        self.tid.store(super::place::gettid(), Ordering::Release);
        let mut pfd = [
            libc::pollfd {
                fd: self.uffd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        while !self.stop.load(Ordering::Acquire) {
            // SAFETY: two valid pollfds for the duration of the call.
            let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, -1) };
            if n <= 0 || pfd[0].revents & libc::POLLIN == 0 {
                continue;
            }
            let mut msg = sys::UffdMsg::default();
            // SAFETY: reads at most size_of::<UffdMsg>() bytes into `msg`, a plain repr(C) struct.
            let got = unsafe {
                libc::read(
                    self.uffd.as_raw_fd(),
                    (&mut msg as *mut sys::UffdMsg).cast(),
                    size_of::<sys::UffdMsg>(),
                )
            };
            if got == size_of::<sys::UffdMsg>() as isize && msg.event == sys::UFFD_EVENT_PAGEFAULT {
                self.resolve(msg.address as usize);
            }
        }
    }
}

/// `UFFDIO_COPY` of the zero page at `zero` (no stash slot to clear).
fn put_back_zero(uffd: &OwnedFd, dst: usize, zero: usize) -> io::Result<bool> {
    let mut c = sys::UffdioCopy {
        dst: dst as u64,
        src: zero as u64,
        len: PAGE as u64,
        mode: sys::UFFDIO_COPY_MODE_WP,
        copy: 0,
    };
    match sys::ioctl(uffd, sys::UFFDIO_COPY, &mut c) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

impl Sampler {
    /// A sampler over the area `[base, base + len)` (already registered with `uffd` in
    /// MISSING | WP mode), `per_region` sample pages per region.
    pub(super) fn new(
        uffd: Arc<OwnedFd>,
        base: usize,
        len: usize,
        region_bytes: usize,
        per_region: usize,
    ) -> io::Result<Sampler> {
        let n_regions = len / region_bytes;
        let stash_len = n_regions * per_region * PAGE;
        // SAFETY: a fresh private anonymous mapping; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                stash_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stash = p as usize;
        let range = sys::UffdioRange {
            start: stash as u64,
            len: stash_len as u64,
        };
        let mode = sys::UFFDIO_REGISTER_MODE_MISSING | sys::UFFDIO_REGISTER_MODE_WP;
        let mut reg = sys::UffdioRegister {
            range,
            mode,
            ioctls: 0,
        };
        sys::ioctl(&uffd, sys::UFFDIO_REGISTER, &mut reg)?;
        // SAFETY: eventfd takes plain integers; the result is checked before use.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `efd` is a fresh descriptor owned by nothing else.
        let wake = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(efd) };
        let shared = Arc::new(Shared {
            uffd,
            wake,
            out: Mutex::new(HashMap::new()),
            touched: (0..n_regions).map(|_| AtomicBool::new(false)).collect(),
            base,
            region_bytes,
            stop: AtomicBool::new(false),
            faults: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            tid: AtomicI32::new(0),
            lock_wait_ns: AtomicU64::new(0),
            lock_wait_max_ns: AtomicU64::new(0),
        });
        let s2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wave-mem-uffd".into())
            .spawn(move || s2.run())?;
        Ok(Sampler {
            shared,
            stash,
            per_region,
            thread: Some(thread),
        })
    }

    /// Sample faults handled, and handler errors.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.shared.faults.load(Ordering::Relaxed),
            self.shared.errors.load(Ordering::Relaxed),
        )
    }

    /// The handler thread's kernel thread id, once it has started.
    pub(super) fn handler_tid(&self) -> Option<i32> {
        Some(self.shared.tid.load(Ordering::Acquire)).filter(|&t| t > 0)
    }

    /// Time the handler waited for the mutex: (total, longest), ns.
    pub(super) fn lock_wait_ns(&self) -> (u64, u64) {
        (
            self.shared.lock_wait_ns.load(Ordering::Relaxed),
            self.shared.lock_wait_max_ns.load(Ordering::Relaxed),
        )
    }

    /// Pages now moved out to the stash (resident, but outside the area).
    pub(super) fn stashed(&self) -> u64 {
        let out = self.shared.out.lock().unwrap_or_else(|e| e.into_inner());
        out.len() as u64
    }

    /// Whether a sample of region `r` was touched since the last call (clears the flag).
    pub(super) fn take_touched(&self, r: usize) -> bool {
        self.shared.touched[r].swap(false, Ordering::Relaxed)
    }

    /// Move `per_region` pseudo-random pages of each region `eligible` says yes to out to the
    /// stash. Pages that cannot be moved (not present, swapped, shared) are skipped.
    /// `written(page)` is asked right before each move (it re-protects the page and says if
    /// it was written since the last scan): moving a page out forgets that it was written, so
    /// the caller records it first.
    pub(super) fn arm(
        &self,
        eligible: impl Fn(usize) -> bool,
        mut written: impl FnMut(usize),
        salt: u64,
    ) {
        let sh = &self.shared;
        let pages = sh.region_bytes / PAGE;
        let lock = || sh.out.lock().unwrap_or_else(|e| e.into_inner());
        for r in 0..sh.touched.len() {
            if !eligible(r) {
                continue;
            }
            for j in 0..self.per_region {
                let pick = crate::engine::workload::mix(salt ^ ((r as u64) << 20) ^ j as u64)
                    as usize
                    % pages;
                let page = sh.base + r * sh.region_bytes + pick * PAGE;
                let slot = self.stash + (r * self.per_region + j) * PAGE;
                // only this thread adds entries: not out now means not out after `written`
                if lock().contains_key(&page) {
                    continue;
                }
                written(page);
                let mut mv = sys::UffdioMove {
                    dst: slot as u64,
                    src: page as u64,
                    len: PAGE as u64,
                    mode: 0,
                    moved: 0,
                };
                lock().insert(page, (slot, State::Moving));
                let moved = sys::ioctl(&sh.uffd, sys::UFFDIO_MOVE, &mut mv).is_ok();
                let mut out = lock();
                if moved {
                    out.insert(page, (slot, State::Out));
                } else {
                    out.remove(&page);
                }
            }
        }
    }

    /// Put back every sample of region `r` (or of all regions) nobody touched.
    pub(super) fn restore(&self, region: Option<usize>) -> io::Result<()> {
        let sh = &self.shared;
        let in_region = |p: usize| region.is_none_or(|r| (p - sh.base) / sh.region_bytes == r);
        let lock = || sh.out.lock().unwrap_or_else(|e| e.into_inner());
        let pages: Vec<usize> = lock().keys().copied().filter(|&p| in_region(p)).collect();
        // Slots emptied here; each belongs to one page, and the handler never touches a slot
        // whose entry this loop took, so emptying them after the loop races with nothing.
        let mut emptied = Vec::new();
        let mut result = Ok(());
        for page in pages {
            let slot = {
                let mut out = lock();
                match out.get_mut(&page) {
                    Some(e) if e.1 == State::Out => {
                        e.1 = State::Restoring;
                        e.0
                    }
                    _ => continue, // the handler put it back meanwhile
                }
            };
            let res = copy_back(&sh.uffd, page, slot);
            let mut out = lock();
            match res {
                Ok(true) => {
                    out.remove(&page);
                    emptied.push(slot);
                }
                Ok(false) => {
                    out.remove(&page); // already present: nothing to put back
                    emptied.push(slot);
                }
                Err(e) => {
                    out.insert(page, (slot, State::Out)); // a later restore or fault retries
                    result = Err(e);
                    break;
                }
            }
        }
        clear_slots(emptied)?;
        result
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to the eventfd the handler polls.
        unsafe {
            libc::write(
                self.shared.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                size_of::<u64>(),
            )
        };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // every sampled page goes home before the userfaultfd (and its registration) goes away
        if let Err(e) = self.restore(None) {
            eprintln!("wave mem: restoring sampled pages failed: {e}");
        }
        let len = self.shared.touched.len() * self.per_region * PAGE;
        // SAFETY: the stash mapping was created in `new` and nothing refers to it any more.
        unsafe { libc::munmap(self.stash as *mut libc::c_void, len) };
    }
}
