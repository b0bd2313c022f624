//! The server's TCP transport (`--transport tcp`): slot s is one `SO_REUSEPORT` listener (in
//! the same socket array and table as the UDP sockets, so the eBPF program picks the listener
//! at SYN) and the connections it accepted. Whoever owns slot s (worker s when active, an
//! adopting worker when s is parked) accepts on it and serves its connections with a poll
//! loop: non-blocking, one request per connection per pass, the same 24-byte records as UDP
//! (partial reads and writes carried over between passes).
//!
//! A worker reads at most one record at a time from a connection, so waiting requests stay in
//! the kernel's receive queue where the telemetry sees them (`FIONREAD`, peeked timestamps).
//! A malformed request (service time over [`MAX_SERVICE_NS`], or the connection ending inside
//! a record) closes its connection and is counted; nothing here panics on a peer's bytes.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};

use super::{sock, Server, MAX_SERVICE_NS, REQ_LEN};

/// Most reply bytes a connection may have unsent before the server stops reading from it
/// (the client is not reading its replies: back-pressure, not a drop).
const TX_CAP: usize = 64 * REQ_LEN;

/// One worker slot under TCP: its listener and connections.
pub(super) struct Slot {
    listener: TcpListener,
    /// The connections and their partial records; locked by the worker serving the slot.
    conns: Mutex<Vec<Conn>>,
    /// The same connections for the telemetry (locked only briefly).
    open: Mutex<Vec<Arc<TcpStream>>>,
    /// Connections accepted on this listener.
    pub(super) accepted: AtomicU64,
}

struct Conn {
    s: Arc<TcpStream>,
    rx: [u8; REQ_LEN],
    have: usize,
    tx: Vec<u8>,
    eof: bool,
}

/// What one step on a connection did.
enum Step {
    Idle,
    Served,
    /// Close it; true if for a malformed request.
    Close(bool),
}

impl Slot {
    pub(super) fn new(listener: TcpListener) -> Slot {
        Slot {
            listener,
            conns: Mutex::new(Vec::new()),
            open: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
        }
    }

    /// The listener's descriptor (for the socket array).
    pub(super) fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// The descriptors to wait on: the listener, and each connection for reading (unless it
    /// ended or its replies back up) and for writing (if replies are pending). None while
    /// another worker is serving the slot (a hand-over: its previous owner finishes the
    /// request in service; this one looks again after the poll's timeout).
    fn poll_fds(&self) -> Vec<libc::pollfd> {
        let fd = |fd, events| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let mut v = Vec::new();
        if let Ok(conns) = self.conns.try_lock() {
            v.push(fd(self.fd(), libc::POLLIN));
            for c in conns.iter() {
                let mut ev = 0;
                if !c.eof && c.tx.len() < TX_CAP {
                    ev |= libc::POLLIN;
                }
                if !c.tx.is_empty() {
                    ev |= libc::POLLOUT;
                }
                v.push(fd(c.s.as_raw_fd(), ev));
            }
        }
        v
    }

    /// Accepts every waiting connection. Out of descriptors (`EMFILE`) the listener stays
    /// readable, so the worker backs off a millisecond instead of spinning on it.
    fn accept_all(&self, conns: &mut Vec<Conn>) {
        loop {
            let s = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return std::thread::sleep(std::time::Duration::from_millis(1)),
            };
            if s.set_nonblocking(true).is_err() {
                continue; // dropped: the client sees the connection close, nothing was read
            }
            let _ = s.set_nodelay(true);
            self.accepted.fetch_add(1, Relaxed);
            let s = Arc::new(s);
            lock(&self.open).push(s.clone());
            conns.push(Conn {
                s,
                rx: [0; REQ_LEN],
                have: 0,
                tx: Vec::new(),
                eof: false,
            });
        }
    }

    fn forget(&self, s: &Arc<TcpStream>) {
        lock(&self.open).retain(|x| !Arc::ptr_eq(x, s));
    }

    /// Requests waiting (unread bytes of the connections over the record size, plus the
    /// connections not accepted yet, each counted as one) and the age of the oldest unread
    /// segment (kernel receive timestamp, peeked).
    pub(super) fn queue_signals(&self, realtime: u64) -> (u32, Option<u64>) {
        let open: Vec<Arc<TcpStream>> = lock(&self.open).clone();
        let mut bytes = 0u32;
        let mut oldest = None;
        for c in &open {
            let n = sock::unread_bytes(c.as_raw_fd());
            if n > 0 {
                bytes = bytes.saturating_add(n);
                oldest = oldest.max(sock::oldest_segment_age_ns(c.as_raw_fd(), realtime));
            }
        }
        let backlog = sock::accept_backlog(self.fd());
        (bytes / REQ_LEN as u32 + backlog, oldest)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes what it can of the pending replies; Err if the connection failed.
fn flush(c: &mut Conn) -> Result<(), ()> {
    while !c.tx.is_empty() {
        match (&*c.s).write(&c.tx) {
            Ok(0) => return Err(()),
            Ok(n) => {
                c.tx.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

impl Server {
    /// One pass of worker w over the TCP slots it owns: wait up to 2 ms for any of their
    /// listeners or connections, then accept and serve at most one request per connection.
    pub(super) fn tcp_pass(&self, w: usize) {
        let owned = self.owned(w);
        let mut fds: Vec<libc::pollfd> =
            owned.iter().flat_map(|s| self.tcp[*s].poll_fds()).collect();
        let t0 = self.now_ns();
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 2) };
        self.workers[w]
            .idle_ns
            .fetch_add(self.now_ns() - t0, Relaxed);
        for s in owned {
            self.serve_slot(w, s);
        }
    }

    /// Accepts on slot s and steps each of its connections once (while w still owns it).
    fn serve_slot(&self, w: usize, s: usize) {
        let slot = &self.tcp[s];
        let Ok(mut conns) = slot.conns.try_lock() else {
            return; // its previous owner is finishing a request: next pass
        };
        slot.accept_all(&mut conns);
        let mut i = 0;
        while i < conns.len() {
            if self.workers[s].owner.load(Acquire) as usize != w {
                return; // the slot changed hands (a grant or a revoke)
            }
            match self.step(w, s, &mut conns[i]) {
                Step::Close(bad) => {
                    if bad {
                        self.malformed.fetch_add(1, Relaxed);
                    }
                    let c = conns.swap_remove(i);
                    slot.forget(&c.s);
                }
                Step::Idle | Step::Served => i += 1,
            }
        }
    }

    /// Flushes replies, reads toward the next record, serves it when complete; closes a
    /// connection that ended (after its last reply went out), failed or sent a bad record.
    fn step(&self, w: usize, s: usize, c: &mut Conn) -> Step {
        if flush(c).is_err() {
            return Step::Close(false);
        }
        if !c.eof && c.tx.len() < TX_CAP {
            match (&*c.s).read(&mut c.rx[c.have..]) {
                Ok(0) => c.eof = true,
                Ok(n) => c.have += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return Step::Close(false),
            }
        }
        if c.have == REQ_LEN {
            c.have = 0;
            self.workers[s].received.fetch_add(1, Relaxed);
            let service = u64::from_le_bytes(c.rx[16..24].try_into().unwrap_or([0; 8]));
            if service > MAX_SERVICE_NS {
                return Step::Close(true);
            }
            self.serve_one(w, service);
            c.tx.extend_from_slice(&c.rx);
            return match flush(c) {
                Ok(()) => Step::Served,
                Err(()) => Step::Close(false),
            };
        }
        match (c.eof, c.have, c.tx.is_empty()) {
            (true, 1.., _) => Step::Close(true), // ended inside a record
            (true, 0, true) => Step::Close(false),
            _ => Step::Idle,
        }
    }

    /// Per slot, connections accepted on its listener (empty under UDP).
    pub fn accepted(&self) -> Vec<u64> {
        self.tcp.iter().map(|t| t.accepted.load(Relaxed)).collect()
    }
}
