//! Socket helpers for the RPC server: the `SO_REUSEPORT` group (UDP sockets or TCP
//! listeners), kernel receive timestamps (`SO_TIMESTAMPNS`) of the oldest waiting datagram or
//! segment (peeked, not taken), the receive queue's memory (`SO_MEMINFO`), the unread bytes of
//! a connection (`FIONREAD`) and a listener's accept queue (`TCP_INFO`), and a `poll` over a
//! subset of the group.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, SockaddrIn,
};

/// `SO_MEMINFO` (asm-generic/socket.h).
const SO_MEMINFO: libc::c_int = 55;
/// Entries of the `SO_MEMINFO` answer.
const SK_MEMINFO_VARS: usize = 9;

/// A non-blocking loopback socket of type `ty` bound to `port` (0: any) with `SO_REUSEPORT`
/// and receive timestamps (inherited by the connections a listener accepts).
fn reuseport_socket(ty: SockType, port: u16) -> Result<std::os::fd::OwnedFd, String> {
    let fd = socket(
        AddressFamily::Inet,
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    setsockopt(&fd, sockopt::ReusePort, &true).map_err(|e| format!("SO_REUSEPORT: {e}"))?;
    setsockopt(&fd, sockopt::ReceiveTimestampns, &true)
        .map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
    if ty == SockType::Datagram {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
    }
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port))
        .map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
    Ok(fd)
}

fn udp_socket(port: u16) -> Result<UdpSocket, String> {
    reuseport_socket(SockType::Datagram, port).map(UdpSocket::from)
}

fn tcp_listener(port: u16) -> Result<TcpListener, String> {
    let fd = reuseport_socket(SockType::Stream, port)?;
    nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::MAXCONN)
        .map_err(|e| format!("listen on 127.0.0.1:{port}: {e}"))?;
    Ok(TcpListener::from(fd))
}

/// `n` sockets made by `make`, the first on a free loopback port and the rest on the same one.
fn group<T>(
    n: usize,
    make: fn(u16) -> Result<T, String>,
    port_of: fn(&T) -> std::io::Result<SocketAddr>,
) -> Result<(Vec<T>, u16), String> {
    let first = make(0)?;
    let port = port_of(&first).map_err(|e| e.to_string())?.port();
    let mut v = vec![first];
    for _ in 1..n {
        v.push(make(port)?);
    }
    Ok((v, port))
}

/// `n` UDP sockets bound to one loopback port with `SO_REUSEPORT` and receive timestamps.
pub fn reuseport_group(n: usize) -> Result<(Vec<UdpSocket>, u16), String> {
    group(n, udp_socket, UdpSocket::local_addr)
}

/// `n` non-blocking TCP listeners on one loopback port with `SO_REUSEPORT` (listening, so
/// they are in the kernel's reuseport group and may join a socket array) and receive
/// timestamps (inherited by the connections they accept).
pub fn reuseport_listeners(n: usize) -> Result<(Vec<TcpListener>, u16), String> {
    group(n, tcp_listener, TcpListener::local_addr)
}

/// Connections waiting in a listener's accept queue (`TCP_INFO`'s `tcpi_unacked` is the
/// accept backlog for a listening socket).
pub fn accept_backlog(fd: RawFd) -> u32 {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info` and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if r == 0 {
        info.tcpi_unacked
    } else {
        0
    }
}

/// Unread bytes in a connection's receive queue (`FIONREAD`, i.e. `SIOCINQ`).
pub fn unread_bytes(fd: RawFd) -> u32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if r == 0 {
        n.max(0) as u32
    } else {
        0
    }
}

/// A client connection to the server (blocking connect on loopback, then non-blocking, no
/// Nagle: requests and replies are small and pipelined).
pub fn connect(port: u16) -> Result<TcpStream, String> {
    let s = TcpStream::connect(server_addr(port)).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Receive-queue memory of `fd` (bytes charged, `SK_MEMINFO_RMEM_ALLOC`).
pub fn rmem(fd: RawFd) -> u32 {
    let mut info = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info` and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r == 0 {
        info[0]
    } else {
        0
    }
}

/// The memory one queued datagram of `len` bytes is charged on loopback (measured once on a
/// private socket), so the queue depth is `rmem / truesize`.
pub fn datagram_truesize(len: usize) -> u32 {
    let measure = || -> Option<u32> {
        let rx = udp_socket(0).ok()?;
        let tx = UdpSocket::bind("127.0.0.1:0").ok()?;
        tx.send_to(&vec![0u8; len], rx.local_addr().ok()?).ok()?;
        for _ in 0..100 {
            let m = rmem(rx.as_raw_fd());
            if m > 0 {
                return Some(m);
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        None
    };
    measure().unwrap_or(768)
}

/// CLOCK_REALTIME now, ns (the clock of kernel receive timestamps).
pub fn realtime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Age of the oldest datagram waiting on `fd` (its kernel receive timestamp, peeked), if any.
pub fn oldest_age_ns(fd: RawFd, realtime_now: u64) -> Option<u64> {
    peek_age_ns(fd, realtime_now, 64)
}

/// Age of the oldest unread data on a TCP connection: the kernel receive timestamp of the
/// first unread segment (one byte peeked, so only that segment is looked at). Loopback may
/// coalesce segments, and a coalesced segment carries the newest timestamp: a lower bound.
pub fn oldest_segment_age_ns(fd: RawFd, realtime_now: u64) -> Option<u64> {
    peek_age_ns(fd, realtime_now, 1)
}

fn peek_age_ns(fd: RawFd, realtime_now: u64, len: usize) -> Option<u64> {
    let mut buf = [0u8; 64];
    let buf = &mut buf[..len.min(64)];
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<SockaddrIn>(
        fd,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            let t = ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64;
            return Some(realtime_now.saturating_sub(t));
        }
    }
    None
}

/// Which of `sockets[i]` for `i` in `which` are readable within `timeout_ms`.
pub fn poll_readable(sockets: &[UdpSocket], which: &[usize], timeout_ms: i32) -> Vec<usize> {
    let mut fds: Vec<libc::pollfd> = which
        .iter()
        .filter_map(|i| sockets.get(*i))
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    if fds.is_empty() {
        std::thread::sleep(std::time::Duration::from_millis(timeout_ms.max(0) as u64));
        return Vec::new();
    }
    // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n <= 0 {
        return Vec::new();
    }
    which
        .iter()
        .zip(fds.iter())
        .filter(|(_, p)| p.revents & libc::POLLIN != 0)
        .map(|(i, _)| *i)
        .collect()
}

/// A client socket on an ephemeral loopback port, connected to the server on `port` (one flow
/// per socket).
pub fn client(port: u16) -> Result<UdpSocket, String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("client socket: {e}"))?;
    // Connected: the kernel drops datagrams from anyone but the server (a local sender cannot
    // forge replies into the tally).
    s.connect(server_addr(port))
        .map_err(|e| format!("client socket: connect to 127.0.0.1:{port}: {e}"))?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// The server's address.
pub fn server_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
