//! The ivshmem server protocol, checked with a fake QEMU client: message order and fds, the
//! memfd carries a valid region, doorbells in both directions, a second concurrent client is
//! refused, and a reconnect after a disconnect gets a fresh region with a new host epoch.
//! Also the user-facing setup errors.

use std::io::{IoSliceMut, Read};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::eventfd::EventFd;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use wave_abi::status::State;
use wave_abi::status::StatusView;
use wave_abi::{Kind, Layout};
use wave_host_shim::error::ShimError;
use wave_host_shim::ivshmem::{IvshmemServer, ServerConfig};
use wave_host_shim::link::Link;
use wave_host_shim::shm::SharedMemory;

fn sock(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("wave-test-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Receives one 8-byte message and its fd, if any.
fn recv_msg(s: &UnixStream) -> Option<(i64, Option<OwnedFd>)> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 8];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg =
        recvmsg::<UnixAddr>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()).ok()?;
    if msg.bytes == 0 {
        return None;
    }
    assert_eq!(msg.bytes, 8, "messages are exactly 8 bytes");
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            assert_eq!(fds.len(), 1, "one fd per message");
            // SAFETY: SCM_RIGHTS just gave this process a new fd that nothing else owns.
            fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    Some((i64::from_le_bytes(buf), fd))
}

struct FakeQemu {
    stream: UnixStream,
    shm: SharedMemory,
    server_fds: Vec<EventFd>,
    own_fds: Vec<EventFd>,
}

fn pump_until(server: &IvshmemServer, what: impl Fn(&IvshmemServer) -> bool) {
    let t = Instant::now();
    while !what(server) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "server did not react"
        );
        server.wait(0, Duration::from_millis(20)).unwrap();
    }
}

fn connect(server: &IvshmemServer, path: &PathBuf, vectors: usize) -> FakeQemu {
    let stream = UnixStream::connect(path).unwrap();
    let before = server.counters().clients_accepted;
    pump_until(server, |s| s.counters().clients_accepted > before);
    let mut msgs = Vec::new();
    for _ in 0..3 + 2 * vectors {
        msgs.push(recv_msg(&stream).expect("handshake message"));
    }
    assert_eq!(msgs[0].0, 0, "protocol version first");
    assert!(msgs[0].1.is_none());
    assert_eq!(msgs[1].0, 1, "then our id: peer 1");
    assert!(msgs[1].1.is_none());
    assert_eq!(msgs[2].0, -1, "then -1 with the memfd");
    let mut it = msgs.into_iter().skip(2);
    let shm = SharedMemory::from_fd(it.next().unwrap().1.expect("memfd")).unwrap();
    let mut server_fds = Vec::new();
    let mut own_fds = Vec::new();
    for (i, (id, fd)) in it.enumerate() {
        let fd = fd.expect("eventfd with every peer message");
        // SAFETY: the server sends eventfds in these messages (checked by reading/writing them
        // below); `from_owned_fd` only requires that the fd is an eventfd.
        let efd = unsafe { EventFd::from_owned_fd(fd) };
        if i < vectors {
            assert_eq!(id, 0, "peer 0 (the server) vectors come first");
            server_fds.push(efd);
        } else {
            assert_eq!(id, 1, "then the client's own vectors");
            own_fds.push(efd);
        }
    }
    FakeQemu {
        stream,
        shm,
        server_fds,
        own_fds,
    }
}

fn host_epoch(q: &FakeQemu) -> (State, u32) {
    let region = q.shm.region();
    let layout = Layout::read(&region).expect("valid header in the memfd");
    let s = StatusView::new(&region, layout.place(Kind::HostStatus).offset)
        .unwrap()
        .snapshot();
    (s.state, s.epoch)
}

#[test]
fn handshake_doorbells_refusal_and_reconnect() {
    let path = sock("proto");
    let mut cfg = ServerConfig::new(&path);
    cfg.vectors = wave_abi::layout::MIN_VECTORS as u16;
    let server = IvshmemServer::bind(cfg).unwrap();
    assert!(server
        .qemu_args()
        .contains(&format!("path={}", path.display())));
    assert!(server.qemu_args().contains(&format!(
        "ivshmem-doorbell,chardev=ivsh,vectors={}",
        wave_abi::layout::MIN_VECTORS
    )));

    let q = connect(&server, &path, wave_abi::layout::MIN_VECTORS as usize);
    assert_eq!(q.shm.len(), 1 << 20);
    let (state, e1) = host_epoch(&q);
    assert_eq!(state, State::Booting);
    assert!(e1 >= 1);
    assert!(server.peer_present());
    let gen1 = server.generation();

    // Guest rings the host: QEMU writes peer 0's eventfd for vector 2.
    q.server_fds[2].write(1).unwrap();
    let w = server.wait(0b1111, Duration::from_secs(5)).unwrap();
    assert_eq!(w.vectors, 0b0100);
    assert_eq!(server.counters().doorbells_in, 1);

    // Host rings the guest on vector 1: the client's own eventfd 1 fires.
    server.notify(1).unwrap();
    assert_eq!(q.own_fds[1].read().unwrap(), 1);
    assert!(server.notify(9).is_err());

    // A second concurrent client is refused: closed without a handshake.
    let mut second = UnixStream::connect(&path).unwrap();
    pump_until(&server, |s| s.counters().clients_refused == 1);
    let mut b = [0u8; 8];
    assert_eq!(second.read(&mut b).unwrap(), 0, "refused client sees EOF");
    assert_eq!(server.counters().clients_accepted, 1);

    // Disconnect; the server notices and forgets the client.
    drop(q);
    pump_until(&server, |s| !s.peer_present());
    assert_eq!(server.counters().disconnects, 1);
    assert!(matches!(
        server.notify(0),
        Err(wave_host_shim::LinkError::NoPeer)
    ));

    // Reconnect: a fresh region and a new host epoch.
    let q2 = connect(&server, &path, wave_abi::layout::MIN_VECTORS as usize);
    let (state, e2) = host_epoch(&q2);
    assert_eq!(state, State::Booting);
    assert!(e2 > e1, "new client gets a new host epoch ({e1} -> {e2})");
    assert!(server.generation() > gen1);
    assert_eq!(server.epoch(), e2);
    drop(q2.stream);
}

#[test]
fn user_errors_say_what_to_do() {
    let path = sock("errors");
    let first = IvshmemServer::bind(ServerConfig::new(&path)).unwrap();
    let e = IvshmemServer::bind(ServerConfig::new(&path)).err().unwrap();
    assert!(matches!(e, ShimError::SocketInUse(_)));
    assert!(e.to_string().contains("another --socket"), "{e}");
    drop(first); // removes the socket file

    std::fs::write(&path, b"stale").unwrap();
    let e = IvshmemServer::bind(ServerConfig::new(&path)).err().unwrap();
    assert!(matches!(e, ShimError::SocketPathExists(_)));
    assert!(e.to_string().contains("rm "), "{e}");
    std::fs::remove_file(&path).unwrap();

    let mut small = ServerConfig::new(&path);
    small.shm_size = 64 * 1024;
    let e = IvshmemServer::bind(small).err().unwrap();
    assert_eq!(
        e.to_string(),
        "shared memory of 65536 bytes is too small: the layout needs at least 524288 bytes \
         (512 KiB); pass --shm-size 512K or more"
    );

    let mut odd = ServerConfig::new(&path);
    odd.shm_size = 3 << 20;
    assert!(matches!(
        IvshmemServer::bind(odd),
        Err(ShimError::ShmNotPowerOfTwo(_))
    ));

    let mut few = ServerConfig::new(&path);
    few.vectors = 2;
    assert!(IvshmemServer::bind(few)
        .err()
        .unwrap()
        .to_string()
        .contains(&format!("{}..=256", wave_abi::layout::MIN_VECTORS)));
}
