//! `wave-host stats`: asks a running host shim's control socket for its stats and shows them:
//! a refreshing terminal view (default), one JSON snapshot (`--json`), or an HTTP endpoint
//! serving the Prometheus text format (`--listen ADDR`, loopback addresses only).

use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::control::{query, Request};

/// Longest HTTP request head read from a scraper.
const MAX_HEAD: usize = 4096;

/// Prints the table every `interval` (clearing the screen on a terminal) until interrupted,
/// or `count` times if given.
pub fn watch(socket: &Path, interval: Duration, count: Option<u64>) -> Result<(), String> {
    let tty = std::io::stdout().is_terminal();
    let mut n = 0u64;
    loop {
        let t = query(socket, Request::Table)?;
        if tty {
            print!("\x1b[2J\x1b[H");
        }
        println!("{t}");
        let _ = std::io::stdout().flush();
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}

/// Checks that `addr` is a loopback address (stats are not for the network at large).
pub fn loopback_only(addr: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an address:port (e.g. 127.0.0.1:9464)"))?;
    if !a.ip().is_loopback() {
        return Err(format!(
            "--listen {addr}: only loopback addresses (127.0.0.0/8, ::1) are served; put a \
             reverse proxy or the Prometheus agent on this host to export further"
        ));
    }
    Ok(a)
}

/// Serves `GET /metrics` on `addr` (loopback only) from the control socket, until the process
/// ends. Every other path gets 404.
pub fn listen(socket: &Path, addr: &str) -> Result<(), String> {
    let a = loopback_only(addr)?;
    let l = TcpListener::bind(a).map_err(|e| format!("cannot listen on {a}: {e}"))?;
    let bound = l.local_addr().unwrap_or(a);
    eprintln!("wave-host: stats: serving Prometheus metrics on http://{bound}/metrics");
    for conn in l.incoming().flatten() {
        let _ = serve_http(conn, socket);
    }
    Ok(())
}

fn serve_http(mut c: TcpStream, socket: &Path) -> std::io::Result<()> {
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    let head = super::control::read_by(
        &mut c,
        |c, t| c.set_read_timeout(Some(t)),
        std::time::Instant::now() + Duration::from_secs(2),
        MAX_HEAD,
        |h| h.windows(4).any(|w| w == b"\r\n\r\n"),
    )?;
    let line = String::from_utf8_lossy(&head);
    let first = line.lines().next().unwrap_or("");
    let (status, body) = if first.starts_with("GET /metrics ") || first.starts_with("GET / ") {
        match query(socket, Request::Prometheus) {
            Ok(b) => ("200 OK", b),
            Err(e) => ("503 Service Unavailable", format!("{e}\n")),
        }
    } else {
        ("404 Not Found", "only GET /metrics is served\n".to_string())
    };
    write!(
        c,
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_served() {
        assert!(loopback_only("127.0.0.1:9464").is_ok());
        assert!(loopback_only("[::1]:9464").is_ok());
        let e = loopback_only("0.0.0.0:9464").unwrap_err();
        assert!(e.contains("only loopback"), "{e}");
        assert!(loopback_only("10.0.0.1:80").is_err());
        assert!(loopback_only("localhost")
            .unwrap_err()
            .contains("not an address"));
    }
}
