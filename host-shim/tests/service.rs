//! `wave-host run` as a service, end to end on the host: the real binary with a configuration
//! file, a fake QEMU that takes the ivshmem handshake and runs the real agent runtime (echo
//! service) as the IPU over the memfd, `wave-host stats --json` from another process (live,
//! increasing counters), then SIGTERM: exit 0, STOPPED published to the IPU, both sockets and
//! the control directory gone.

use std::io::IoSliceMut;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::eventfd::EventFd;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use wave_abi::status::{State, StatusView};
use wave_abi::{Endpoint, Kind, Layout, Side};
use wave_host_shim::shm::SharedMemory;
use wave_policy::echo::EchoService;
use wave_policy::runtime::{Log, Port, Runtime, Tuning};

fn recv_msg(s: &UnixStream) -> Option<(i64, Option<OwnedFd>)> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 8];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg =
        recvmsg::<UnixAddr>(s.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()).ok()?;
    if msg.bytes != 8 {
        return None;
    }
    let mut fd = None;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: SCM_RIGHTS just gave this process a new fd that nothing else owns.
            fd = fds.first().map(|f| unsafe { OwnedFd::from_raw_fd(*f) });
        }
    }
    Some((i64::from_le_bytes(buf), fd))
}

/// The IPU's side of the handshake: the memfd and peer 0's eventfds (to ring the host).
fn handshake(path: &Path, vectors: usize) -> (UnixStream, SharedMemory, Vec<EventFd>) {
    let stream = UnixStream::connect(path).expect("connect to the service's ivshmem socket");
    let mut msgs = Vec::new();
    for _ in 0..3 + 2 * vectors {
        msgs.push(recv_msg(&stream).expect("handshake message"));
    }
    let shm = SharedMemory::from_fd(msgs[2].1.take().expect("memfd")).unwrap();
    let host_fds = msgs[3..3 + vectors]
        .iter_mut()
        // SAFETY: the server sends eventfds in these messages.
        .map(|m| unsafe { EventFd::from_owned_fd(m.1.take().expect("eventfd")) })
        .collect();
    (stream, shm, host_fds)
}

/// A polling port for the fake IPU: rings the host's eventfds, sleeps 1 ms at most.
struct FakePort<'a> {
    origin: Instant,
    host_fds: &'a [EventFd],
    stop: &'a AtomicBool,
}

impl Log for FakePort<'_> {
    fn log(&mut self, _line: std::fmt::Arguments<'_>) {}
}

impl Port for FakePort<'_> {
    fn now_ns(&mut self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
    fn notify(&mut self, vector: u16) {
        if let Some(fd) = self.host_fds.get(vector as usize) {
            let _ = fd.write(1);
        }
    }
    fn wait(&mut self, _mask: u64, timeout_ns: u64, still_idle: &mut dyn FnMut() -> bool) -> u64 {
        if still_idle() {
            std::thread::sleep(Duration::from_nanos(timeout_ns.min(1_000_000)));
        }
        0
    }
    fn stop_requested(&mut self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stats_json(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_wave-host"))
        .args(["stats", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn field(json: &str, key: &str) -> String {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    json[at + key.len() + 3..]
        .split([',', '}'])
        .next()
        .unwrap()
        .trim_matches('"')
        .to_string()
}

/// Starts `wave-host stats --listen 127.0.0.1:0`, scrapes /metrics once, stops it.
fn scrape(config: &Path) -> String {
    use std::io::{BufRead, Read, Write};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wave-host"))
        .args(["stats", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    let _ = child.kill();
    let _ = child.wait();
    out
}

struct Service {
    child: Child,
    dir: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn service_serves_live_stats_and_sigterm_leaves_nothing() {
    let dir = std::env::temp_dir().join(format!("wave-service-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("ivshmem.sock");
    let control_dir = dir.join("ctl");
    let config = dir.join("wave.toml");
    std::fs::write(
        &config,
        format!(
            "[link]\nsocket = \"{}\"\n[control]\nsocket = \"{}\"\n[subsystems]\nenabled = [\"echo\", \"sched\"]\n\
             [echo]\nprobe_interval_ms = 20\n[thresholds]\nstats_interval_ms = 50\nlog_interval_s = 0\n",
            link.display(),
            control_dir.join("control.sock").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_wave-host"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut svc = Service {
        child,
        dir: dir.clone(),
    };
    wait_for("the link socket", || link.exists());
    let vectors = wave_abi::sched::CPU_VECTOR_BASE as usize + 2; // host_cpus = 2
    let (stream, shm, host_fds) = handshake(&link, vectors);
    let region = shm.region();
    let layout = Layout::read(&region).unwrap();
    let stop = AtomicBool::new(false);
    let host_state = || {
        StatusView::new(&region, layout.place(Kind::HostStatus).offset)
            .unwrap()
            .snapshot()
            .state
    };
    let (first, second) = std::thread::scope(|s| {
        s.spawn(|| {
            let epoch = wave_abi::status::next_epoch(0);
            let mut ep = Endpoint::new(region, &layout, Side::Ipu, epoch).unwrap();
            let mut echo = EchoService::new();
            let mut port = FakePort {
                origin: Instant::now(),
                host_fds: &host_fds,
                stop: &stop,
            };
            Runtime::new(Tuning::HOST).run(&mut ep, &mut port, &mut [&mut echo]);
        });
        wait_for("the control socket", || {
            control_dir.join("control.sock").exists()
        });
        wait_for("the link up in the stats", || {
            let j = stats_json(&config);
            field(&j, "ipu_state") == "ready" && field(&j, "host_state") == "ready"
        });
        let first = stats_json(&config);
        let metrics = scrape(&config);
        assert!(metrics.starts_with("HTTP/1.0 200 OK"), "{metrics}");
        assert!(metrics.contains("\nwave_ipu_up 1\n"), "{metrics}");
        assert!(
            metrics.contains("wave_decisions_total{subsystem=\"echo\"}"),
            "{metrics}"
        );
        std::thread::sleep(Duration::from_millis(300));
        let second = stats_json(&config);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(svc.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        wait_for("STOPPED from the host", || host_state() == State::Stopped);
        stop.store(true, Ordering::Release);
        (first, second)
    });
    let beat = |j: &str| field(j, "ipu_heartbeat").parse::<u64>().unwrap();
    assert!(
        beat(&second) > beat(&first),
        "heartbeat moves:\n{first}\n{second}"
    );
    assert!(
        first.contains("\"name\":\"echo\",\"ipu_core\":1"),
        "{first}"
    );
    assert!(
        first.contains("\"name\":\"sched\",\"ipu_core\":2"),
        "{first}"
    );
    assert_eq!(field(&second, "fallback"), "none");
    // The echo subsystem's host side (the link probe) runs: answered probes grow, none lost,
    // and the IPU's echo service counts them.
    let answered = |j: &str| field(j, "answered").parse::<u64>().unwrap();
    assert!(
        answered(&second) > answered(&first),
        "probes:\n{first}\n{second}"
    );
    assert_eq!(field(&second, "lost"), "0", "{second}");
    let echo = |j: &str| {
        let at = j.find("\"name\":\"echo\"").unwrap();
        field(&j[at..], "decisions").parse::<u64>().unwrap()
    };
    assert!(echo(&second) > 0, "{second}");
    assert_eq!(field(&second, "host_bad_stamps"), "0", "{second}");
    // No scheduling mechanism runs in the service: no transaction counts are made up.
    assert!(second.trim_end().ends_with("\"txns\":null}]}"), "{second}");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = svc.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the service did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    drop(stream);
    assert!(!link.exists(), "link socket removed");
    assert!(
        !control_dir.exists(),
        "control socket and its directory removed"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("wave.toml")],
        "nothing else left behind"
    );
}
