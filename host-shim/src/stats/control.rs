//! The host shim's control socket: a UNIX stream socket in a private directory (0700, owned by
//! the shim's user), itself 0600, answering only peers of the same uid or root (SO_PEERCRED).
//! Protocol: the client writes one request line (`json`, `table` or `prometheus`), the server
//! answers with the text and closes. Requests are untrusted: anything else, or a line longer
//! than [`MAX_REQUEST`], gets an `error: ...` line and is counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64;

/// What a client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// One JSON object.
    Json,
    /// The terminal table.
    Table,
    /// Prometheus text format.
    Prometheus,
}

impl Request {
    /// Parses a request line.
    pub fn parse(line: &str) -> Option<Request> {
        match line.trim() {
            "json" => Some(Request::Json),
            "table" => Some(Request::Table),
            "prometheus" => Some(Request::Prometheus),
            _ => None,
        }
    }
    fn word(self) -> &'static str {
        match self {
            Request::Json => "json",
            Request::Table => "table",
            Request::Prometheus => "prometheus",
        }
    }
}

/// Counters of the control socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlCounters {
    /// Requests answered.
    pub served: u64,
    /// Peers refused for their credentials.
    pub refused: u64,
    /// Malformed requests.
    pub bad_requests: u64,
}

/// The listening control socket. Dropping it removes the socket, and the directory if this
/// server created it.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    created_dir: Option<PathBuf>,
    owner: u32,
    /// Counters.
    pub counters: ControlCounters,
}

/// Makes (or checks) the private directory `dir`. Returns true if it was created.
fn private_dir(dir: &Path) -> Result<bool, String> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) => {
            if !m.is_dir() {
                return Err(format!("{} is not a directory", dir.display()));
            }
            if m.mode() & 0o077 != 0 {
                return Err(format!(
                    "{} is accessible to other users (mode {:o}); the control socket needs a \
                     private directory: `chmod 700 {}` or configure another control.socket",
                    dir.display(),
                    m.mode() & 0o777,
                    dir.display()
                ));
            }
            Ok(false)
        }
        Err(_) => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            // The mode above is filtered by the umask, which never adds bits; make it exact.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot chmod {}: {e}", dir.display()))?;
            Ok(true)
        }
    }
}

impl ControlServer {
    /// Binds the control socket at `path`, creating its directory 0700 if missing.
    pub fn bind(path: &Path) -> Result<Self, String> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| format!("control socket {} has no directory", path.display()))?;
        let created = private_dir(dir)?;
        if std::fs::symlink_metadata(path).is_ok() {
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "control socket {} is in use: another wave-host runs; stop it first",
                    path.display()
                ));
            }
            // A stale socket in our private directory (a previous run that was killed).
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove the stale {}: {e}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("control socket: {e}"))?;
        let owner = std::fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .uid();
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            created_dir: created.then(|| dir.to_path_buf()),
            owner,
            counters: ControlCounters::default(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The listening socket (to poll for readiness).
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Answers every pending client with `answer(request)`.
    pub fn serve_pending(&mut self, answer: &mut dyn FnMut(Request) -> String) {
        while let Ok((stream, _)) = self.listener.accept() {
            self.serve_one(stream, answer);
        }
    }

    fn peer_allowed(&self, stream: &UnixStream) -> bool {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        getsockopt(stream, PeerCredentials).is_ok_and(|c| c.uid() == self.owner || c.uid() == 0)
    }

    fn serve_one(&mut self, mut stream: UnixStream, answer: &mut dyn FnMut(Request) -> String) {
        if !self.peer_allowed(&stream) {
            self.counters.refused += 1;
            let _ = stream.write_all(b"error: permission denied (not the shim's user)\n");
            return;
        }
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let read = BufReader::new((&stream).take(MAX_REQUEST as u64 + 1)).read_line(&mut line);
        let req = read
            .ok()
            .filter(|_| line.len() <= MAX_REQUEST)
            .and_then(|_| Request::parse(&line));
        let reply = match req {
            Some(r) => {
                self.counters.served += 1;
                answer(r)
            }
            None => {
                self.counters.bad_requests += 1;
                "error: unknown request; send `json`, `table` or `prometheus`\n".to_string()
            }
        };
        let _ = stream.write_all(reply.as_bytes());
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(d) = &self.created_dir {
            // Only if empty: never removes what someone else put there.
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Asks the control socket at `path` for `req` and returns the answer.
pub fn query(path: &Path, req: Request) -> Result<String, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot connect to the control socket {}: {e}; is `wave-host run` running (see \
             `systemctl status wave-host`) and are you its user or root?",
            path.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(format!("{}\n", req.word()).as_bytes())
        .map_err(|e| format!("control socket: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("control socket: {e}"))?;
    if let Some(e) = out.strip_prefix("error: ") {
        return Err(format!("the host shim refused the request: {}", e.trim()));
    }
    Ok(out)
}
