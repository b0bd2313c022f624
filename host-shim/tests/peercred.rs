//! Issue 9 part 6: the ivshmem server's socket is 0600, and a client of another uid is refused
//! by its credentials (`SO_PEERCRED`) even when the socket's mode would let it connect.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use wave_host_shim::ivshmem::{IvshmemServer, ServerConfig};
use wave_host_shim::Link;

fn server(name: &str) -> (IvshmemServer, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("wave-peercred-{}", std::process::id()));
    let _ = std::fs::create_dir(&dir);
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o711)).unwrap();
    let sock = dir.join(name);
    let _ = std::fs::remove_file(&sock);
    (IvshmemServer::bind(ServerConfig::new(&sock)).unwrap(), sock)
}

#[test]
fn the_socket_is_private() {
    let (s, sock) = server("private.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    drop(s);
    assert!(!sock.exists(), "the server removes its socket");
}

#[test]
fn another_uid_is_refused_by_its_credentials() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    let (s, sock) = server("other-uid.sock");
    // Open the mode up on purpose: the credential check alone must keep the client out.
    std::fs::set_permissions(&sock, PermissionsExt::from_mode(0o666)).unwrap();
    let script = format!(
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect({:?}); \
         d=s.recv(8); sys.exit(0 if d else 3)",
        sock.to_str().unwrap()
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .uid(65534)
        .gid(65534)
        .spawn()
        .expect("python3");
    let t = Instant::now();
    while s.counters().clients_refused == 0 && t.elapsed() < Duration::from_secs(20) {
        let _ = s.service(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    assert_eq!(s.counters().clients_refused, 1);
    assert!(!s.peer_present());
    assert_eq!(status.code(), Some(3), "the refused client got nothing");
}
