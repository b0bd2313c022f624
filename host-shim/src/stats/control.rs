//! The host shim's control socket: a UNIX stream socket in a private directory (0700, owned by
//! the shim's user), itself 0600, answering only peers of the same uid or root (SO_PEERCRED).
//! Protocol: the client writes one request line, the server answers with text and closes:
//! `json`, `table` or `prometheus` (the stats), `policy show` (the scheduling workload's
//! policy) or `policy set NAME [PARAM=VALUE ...]` (a policy hot-swap; the answer starts with
//! `confirmed:` once the agent acknowledged it). Requests are untrusted: anything else, or a
//! line longer than [`MAX_REQUEST`], gets an `error: ...` line and is counted; an error
//! answer always starts with `error: `.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 256;
/// Clients answered per [`ControlServer::serve_pending`] call.
pub const CLIENTS_PER_CALL: usize = 8;
/// How long a client has to send its whole request line.
const REQUEST_TIME: Duration = Duration::from_millis(500);

/// Reads from `s` until `done(bytes so far)`, end of stream, `max` bytes, or `deadline` (a
/// total bound however slowly the peer sends: `set_timeout` is given what is left before each
/// read). A peer that sends nothing, or trickles, costs at most the time left to `deadline`.
pub(crate) fn read_by<S: Read>(
    s: &mut S,
    set_timeout: impl Fn(&S, Duration) -> std::io::Result<()>,
    deadline: Instant,
    max: usize,
    done: impl Fn(&[u8]) -> bool,
) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !done(&got) && got.len() < max {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        set_timeout(s, left)?;
        let n = s.read(&mut buf[..(max - got.len()).min(512)])?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got)
}
/// Most `PARAM=VALUE` words in a `policy set` request.
pub const MAX_PARAMS: usize = 8;
/// Longest policy or parameter name.
const MAX_NAME: usize = 32;

/// What a client asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// One JSON object.
    Json,
    /// The terminal table.
    Table,
    /// Prometheus text format.
    Prometheus,
    /// The scheduling workload's policy.
    PolicyShow,
    /// Switch the scheduling workload's policy: a name and `PARAM=VALUE` words, each checked
    /// for shape only (the policy registry judges them).
    PolicySet {
        /// Policy name.
        name: String,
        /// `PARAM=VALUE` words.
        params: Vec<String>,
    },
}

/// A lower-case identifier (policy or parameter name).
fn ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn param_word(w: &str) -> Result<String, String> {
    match w.split_once('=') {
        Some((k, v))
            if ident(k)
                && !v.is_empty()
                && v.len() <= 20
                && v.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(w.to_string())
        }
        _ => Err(format!(
            "policy set: `{}` is not PARAM=VALUE (a parameter name and a whole number)",
            w.escape_default()
        )),
    }
}

impl Request {
    /// Parses a request line; the error says what is wrong.
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.as_slice() {
            ["json"] => Ok(Request::Json),
            ["table"] => Ok(Request::Table),
            ["prometheus"] => Ok(Request::Prometheus),
            ["policy", "show"] => Ok(Request::PolicyShow),
            ["policy", "set", name, params @ ..] => {
                if !ident(name) {
                    return Err(format!(
                        "policy set: `{}` is not a policy name",
                        name.escape_default()
                    ));
                }
                if params.len() > MAX_PARAMS {
                    return Err(format!("policy set: at most {MAX_PARAMS} parameters"));
                }
                let params = params
                    .iter()
                    .map(|w| param_word(w))
                    .collect::<Result<_, _>>()?;
                Ok(Request::PolicySet {
                    name: name.to_string(),
                    params,
                })
            }
            _ => Err(
                "unknown request; send `json`, `table`, `prometheus`, `policy show` or \
                      `policy set NAME [PARAM=VALUE ...]`"
                    .into(),
            ),
        }
    }

    /// The request line (without the newline).
    pub fn line(&self) -> String {
        match self {
            Request::Json => "json".into(),
            Request::Table => "table".into(),
            Request::Prometheus => "prometheus".into(),
            Request::PolicyShow => "policy show".into(),
            Request::PolicySet { name, params } => {
                let mut l = format!("policy set {name}");
                for p in params {
                    l.push(' ');
                    l.push_str(p);
                }
                l
            }
        }
    }

    /// How long a client waits for the answer (a switch waits for the agent's acknowledgement).
    fn answer_timeout(&self) -> Duration {
        match self {
            Request::PolicySet { .. } => Duration::from_secs(20),
            _ => Duration::from_secs(5),
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

    /// Answers the pending clients with `answer(request)`, at most [`CLIENTS_PER_CALL`] per call
    /// (the caller's loop, which also watches for shutdown, runs between batches).
    pub fn serve_pending(&mut self, answer: &mut dyn FnMut(Request) -> String) {
        for _ in 0..CLIENTS_PER_CALL {
            let Ok((stream, _)) = self.listener.accept() else {
                return;
            };
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
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let deadline = Instant::now() + REQUEST_TIME;
        let read = read_by(
            &mut stream,
            |s, t| s.set_read_timeout(Some(t)),
            deadline,
            MAX_REQUEST + 1,
            |b| b.contains(&b'\n'),
        );
        let req = match read.map(|b| String::from_utf8(b).map_err(|_| ())) {
            Ok(Ok(line)) if line.trim_end_matches('\n').len() > MAX_REQUEST => {
                Err(format!("request longer than {MAX_REQUEST} bytes"))
            }
            Ok(Ok(line)) => Request::parse(line.lines().next().unwrap_or("")),
            _ => Err("unreadable request (send one line of text within 0.5 s)".into()),
        };
        let reply = match req {
            Ok(r) => {
                self.counters.served += 1;
                answer(r)
            }
            Err(e) => {
                self.counters.bad_requests += 1;
                format!("error: {e}\n")
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
    let _ = s.set_read_timeout(Some(req.answer_timeout()));
    s.write_all(format!("{}\n", req.line()).as_bytes())
        .map_err(|e| format!("control socket: {e}"))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("control socket: {e}"))?;
    if let Some(e) = out.strip_prefix("error: ") {
        return Err(format!("the host shim refused the request: {}", e.trim()));
    }
    Ok(out)
}
