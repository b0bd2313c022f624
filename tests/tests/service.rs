//! The service units' commands against a real emulated IPU: `wave-host run` (the host shim
//! unit) with a configuration file, `cargo wave ipu` (the IPU unit: QEMU booting the firmware
//! with the configured services against the shim's socket), `wave-host stats --json` from a
//! third process returning live, increasing counters, then SIGTERM to the shim: it exits 0 and
//! removes its sockets and control directory, and the IPU sees STOPPED and powers off cleanly.
//! With a scheduling workload configured, `wave-host policy set` switches the policy under load
//! (FIFO → Shinjuku → fair), each switch acknowledged, every request completed, 0 violations.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wave_tests::{run_with_timeout, workspace_root};

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds `wave-host` and returns its path.
fn wave_host_bin() -> PathBuf {
    let root = workspace_root();
    let ran = run_with_timeout(
        cargo()
            .args(["build", "-q", "-p", "wave-host-shim", "--bin", "wave-host"])
            .current_dir(&root),
        Duration::from_secs(600),
    );
    assert!(
        ran.status.is_some_and(|s| s.success()),
        "build: {}",
        ran.stderr
    );
    wave_qemu::workspace::target_dir(&root).join("debug/wave-host")
}

fn field(json: &str, key: &str) -> String {
    let Some(at) = json.find(&format!("\"{key}\":")) else {
        return String::new();
    };
    json[at + key.len() + 3..]
        .split([',', '}'])
        .next()
        .unwrap_or("")
        .trim_matches('"')
        .to_string()
}

fn stats(bin: &Path, config: &Path) -> String {
    let ran = run_with_timeout(
        Command::new(bin)
            .args(["stats", "--json", "--config"])
            .arg(config),
        Duration::from_secs(20),
    );
    ran.stdout
}

/// Kills a child on drop (a failed assertion must not leave QEMU or the shim running).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drain(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut out = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    })
}

fn wait_exit(p: &mut Proc, limit: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(s) = p.0.try_wait().expect("try_wait") {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn host_unit_and_ipu_unit_serve_live_stats_and_stop_cleanly() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let image = wave_qemu::image().expect("firmware image");
    let bin = wave_host_bin();
    let dir = std::env::temp_dir().join(format!("wave-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("ivshmem.sock");
    let control_dir = dir.join("ctl");
    let config = dir.join("wave.toml");
    std::fs::write(
        &config,
        format!(
            "[link]\nsocket = \"{}\"\n[control]\nsocket = \"{}\"\n[echo]\nprobe_interval_ms = 100\n[thresholds]\nstats_interval_ms = 200\n",
            link.display(),
            control_dir.join("control.sock").display()
        ),
    )
    .unwrap();
    let mut shim = Proc(
        Command::new(&bin)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut ipu = Proc(
        cargo()
            .args(["wave", "ipu", "--wait", "60", "--config"])
            .arg(&config)
            .arg("--firmware")
            .arg(&image.elf)
            .current_dir(workspace_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let console = drain(&mut ipu.0);
    let t = Instant::now();
    let first = loop {
        let j = stats(&bin, &config);
        if field(&j, "ipu_state") == "ready" && field(&j, "host_state") == "ready" {
            break j;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the IPU never came up: {j}"
        );
        assert!(
            ipu.0.try_wait().unwrap().is_none(),
            "the IPU unit ended early"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    std::thread::sleep(Duration::from_millis(1500));
    let second = stats(&bin, &config);
    let beat = |j: &str| field(j, "ipu_heartbeat").parse::<u64>().unwrap_or(0);
    assert!(
        beat(&second) > beat(&first),
        "live heartbeat:\n{first}\n{second}"
    );
    assert!(
        first.contains("\"name\":\"sched\",\"ipu_core\":1"),
        "{first}"
    );
    assert!(
        first.contains("\"name\":\"echo\",\"ipu_core\":2"),
        "{first}"
    );
    let term = Command::new("kill")
        .args(["-TERM", &shim.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let s = wait_exit(&mut shim, Duration::from_secs(20)).expect("the shim exits on SIGTERM");
    assert!(s.success(), "shim exit {s}");
    assert!(
        !link.exists() && !control_dir.exists(),
        "sockets and control directory removed"
    );
    let s = wait_exit(&mut ipu, Duration::from_secs(60)).expect("the IPU powers off");
    let console = console.join().unwrap_or_default();
    assert!(s.success(), "IPU unit exit {s}\n{console}");
    assert!(
        console.contains("core 1 runs sched") && console.contains("core 2 runs echo"),
        "{console}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `wave-host run` and the IPU unit against a configuration with a scheduling workload.
struct Units {
    dir: PathBuf,
    bin: PathBuf,
    config: PathBuf,
    link: PathBuf,
    control_dir: PathBuf,
    shim: Proc,
    shim_log: Option<std::thread::JoinHandle<String>>,
    ipu: Proc,
    console: Option<std::thread::JoinHandle<String>>,
    /// Last: released after both processes are gone.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// The workload pins its CPU threads and QEMU needs a core: one pair of units at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Units {
    fn start(tag: &str, sched: &str) -> Units {
        let one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let image = wave_qemu::image().expect("firmware image");
        let bin = wave_host_bin();
        let dir = std::env::temp_dir().join(format!("wave-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("ivshmem.sock");
        let control_dir = dir.join("ctl");
        let config = dir.join("wave.toml");
        std::fs::write(
            &config,
            format!(
                "[link]\nsocket = \"{}\"\n[control]\nsocket = \"{}\"\n[sched]\n{sched}\n\
                 [thresholds]\nstats_interval_ms = 200\n",
                link.display(),
                control_dir.join("control.sock").display()
            ),
        )
        .unwrap();
        let mut shim = Proc(
            Command::new(&bin)
                .args(["run", "--config"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let err = shim.0.stderr.take().expect("piped");
        let shim_log = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::BufReader::new(err).read_to_string(&mut s);
            s
        });
        let mut ipu = Proc(
            cargo()
                .args(["wave", "ipu", "--wait", "60", "--config"])
                .arg(&config)
                .arg("--firmware")
                .arg(&image.elf)
                .current_dir(workspace_root())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let console = Some(drain(&mut ipu.0));
        Units {
            dir,
            bin,
            config,
            link,
            control_dir,
            shim,
            shim_log: Some(shim_log),
            ipu,
            console,
            _one_at_a_time: one_at_a_time,
        }
    }

    fn stats(&self) -> String {
        stats(&self.bin, &self.config)
    }

    fn policy(&self, args: &[&str]) -> (bool, String) {
        policy_cmd(&self.bin, &self.config, args)
    }

    /// Polls the stats until `done` holds (bounded; the IPU unit must stay up meanwhile).
    fn poll_until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let j = self.stats();
            if done(&j) {
                return j;
            }
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "{what}: never happened: {j}"
            );
            assert!(
                self.ipu.0.try_wait().unwrap().is_none(),
                "{what}: the IPU unit ended early"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM to the shim: it exits 0 leaving no socket or directory, the IPU powers off
    /// cleanly. Returns the shim's log and the IPU's console.
    fn terminate(mut self) -> (String, String) {
        let term = Command::new("kill")
            .args(["-TERM", &self.shim.0.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let s =
            wait_exit(&mut self.shim, Duration::from_secs(60)).expect("the shim exits on SIGTERM");
        let log = self.shim_log.take().unwrap().join().unwrap_or_default();
        eprintln!("wave-host run's log:\n{log}");
        assert!(s.success(), "shim exit {s}\n{log}");
        assert!(
            !self.link.exists() && !self.control_dir.exists(),
            "sockets and control directory removed"
        );
        let s = wait_exit(&mut self.ipu, Duration::from_secs(60)).expect("the IPU powers off");
        let console = self.console.take().unwrap().join().unwrap_or_default();
        assert!(s.success(), "IPU unit exit {s}\n{console}");
        let _ = std::fs::remove_dir_all(&self.dir);
        (log, console)
    }
}

fn policy_cmd(bin: &Path, config: &Path, args: &[&str]) -> (bool, String) {
    let ran = run_with_timeout(
        Command::new(bin)
            .arg("policy")
            .args(args)
            .arg("--config")
            .arg(config),
        Duration::from_secs(60),
    );
    let ok = ran.status.is_some_and(|s| s.success());
    (ok, format!("{}{}", ran.stdout, ran.stderr))
}

fn num(json: &str, key: &str) -> u64 {
    field(json, key).parse().unwrap_or(0)
}

#[test]
fn policy_set_switches_fifo_shinjuku_fair_under_load_losing_nothing() {
    let mut u = Units::start(
        "swap",
        "policy = \"fifo\"\nworkload_rate = 500\nworkload_duration_s = 15\nworkload_handlers = 32",
    );
    // Under load: the workload runs and has completed requests.
    let j = u.poll_until("load", |j| {
        field(j, "running") == "true" && num(j, "completed") > 0
    });
    assert_eq!(field(&j, "policy"), "fifo", "{j}");
    eprintln!("wave-host stats --json under load:\n{j}");
    let (ok, out) = u.policy(&["set", "shinjuku"]);
    assert!(ok && out.starts_with("confirmed: policy shinjuku"), "{out}");
    eprintln!("wave-host policy set shinjuku: {}", out.trim());
    let after_first = num(&u.stats(), "completed");
    u.poll_until("load after a swap", |j| {
        num(j, "completed") > after_first + 50
    });
    let (ok, out) = u.policy(&["set", "fair", "--param", "slice_ns=50000"]);
    assert!(ok && out.starts_with("confirmed: policy fair"), "{out}");
    eprintln!("wave-host policy set fair: {}", out.trim());
    // The load ends by itself; timing gates nothing: poll until it finished.
    let end = u.poll_until("end of load", |j| field(j, "finished") == "true");
    eprintln!("wave-host stats --json after the load:\n{end}");
    assert_eq!(num(&end, "swaps"), 2, "{end}");
    assert!(num(&end, "generated") > 0, "{end}");
    assert_eq!(num(&end, "completed"), num(&end, "generated"), "{end}");
    assert_eq!(field(&end, "violations"), "0", "{end}");
    assert_eq!(field(&end, "policy"), "fair", "{end}");
    assert!(num(&end, "committed") > 0, "{end}");
    // Refusals: the load has ended; an unknown policy names the known ones.
    let (ok, out) = u.policy(&["set", "fifo"]);
    assert!(!ok && out.contains("has ended"), "{out}");
    let (ok, out) = u.policy(&["set", "lottery"]);
    assert!(!ok && out.contains("known: fifo, shinjuku, fair"), "{out}");
    let (log, console) = u.terminate();
    assert!(log.contains("policy set fair: confirmed"), "{log}");
    // The IPU rebuilt its agent with each policy in turn.
    for p in ["fifo policy", "shinjuku policy", "fair policy"] {
        assert!(console.contains(p), "{p}:\n{console}");
    }
}

/// An open-ended workload (`workload_duration_s = 0`) runs until SIGTERM, which ends the load,
/// drains it (every request completed) and only then publishes STOPPED.
#[test]
fn sigterm_drains_an_open_ended_workload_then_stops() {
    let mut u = Units::start(
        "open",
        "policy = \"shinjuku\"\nworkload_rate = 500\nworkload_handlers = 32",
    );
    u.poll_until("load", |j| {
        field(j, "running") == "true" && num(j, "completed") > 100
    });
    let (ok, out) = u.policy(&["show"]);
    assert!(
        ok && out.contains("sched workload: running, policy shinjuku"),
        "{out}"
    );
    let table = run_with_timeout(
        Command::new(&u.bin)
            .args(["stats", "--count", "1", "--config"])
            .arg(&u.config),
        Duration::from_secs(20),
    );
    eprintln!("wave-host stats --count 1 under load:\n{}", table.stdout);
    assert!(
        table.stdout.contains("sched workload: running"),
        "{}",
        table.stdout
    );
    let (log, _) = u.terminate();
    let ended = log
        .lines()
        .find(|l| l.contains("the scheduling workload ended"))
        .unwrap_or_else(|| panic!("no end of load:\n{log}"));
    // "N of N requests completed, 0 invariant violations".
    let words: Vec<&str> = ended.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "of").expect("N of M");
    assert_eq!(words[at - 1], words[at + 1], "{ended}");
    assert!(ended.contains(" 0 invariant violations"), "{ended}");
    let drained = log.find("the scheduling workload ended").unwrap();
    let stopped = log.find("published STOPPED").expect("STOPPED published");
    assert!(drained < stopped, "drain, then STOPPED:\n{log}");
}

/// The flat JSON object `key` of a stats snapshot (`""` if absent or `null`).
fn object<'a>(json: &'a str, key: &str) -> &'a str {
    let Some(at) = json.find(&format!("\"{key}\":{{")) else {
        return "";
    };
    json[at..].split('}').next().unwrap_or("")
}

/// With `mem` and `net` enabled and their workloads configured, the service runs both host
/// sides as lanes of its link keeper (sched enabled, no scheduling workload) once the IPU
/// connects; each ends by itself with its checks held, the stats show them finished, and
/// SIGTERM then stops everything cleanly.
#[test]
fn mem_and_net_workloads_run_as_lanes_then_the_service_stops_cleanly() {
    let mut u = Units::start(
        "lanes",
        "workload_rate = 0\n[subsystems]\nenabled = [\"sched\", \"mem\", \"net\"]\n\
         [mem]\nworkload_table_mib = 64\nworkload_rate = 3000\nworkload_duration_s = 4\n\
         [net]\nworkload_workers = 2\nworkload_duration_s = 4",
    );
    // The runs end by themselves; timing gates nothing: poll until both finished.
    let end = u.poll_until("both workloads finished", |j| {
        field(object(j, "mem_workload"), "finished") == "true"
            && field(object(j, "net_workload"), "finished") == "true"
    });
    eprintln!("wave-host stats --json after the workloads:\n{end}");
    let (mem, net) = (object(&end, "mem_workload"), object(&end, "net_workload"));
    assert_eq!(field(mem, "failed"), "false", "{end}");
    assert!(num(mem, "ops") > 0, "{end}");
    assert_eq!(field(mem, "checksum_failures"), "0", "{end}");
    assert_eq!(field(mem, "invariant_violations"), "0", "{end}");
    assert_eq!(field(net, "failed"), "false", "{end}");
    assert!(num(net, "sent") > 0, "{end}");
    assert_eq!(num(net, "answered"), num(net, "sent"), "{end}");
    let zram = field(mem, "far_tier_zram") == "1";
    let (log, console) = u.terminate();
    assert!(log.contains("the mem workload ended"), "{log}");
    assert!(log.contains("the net workload ended"), "{log}");
    assert!(
        console.contains("core 2 runs mem") && console.contains("core 3 runs net"),
        "{console}"
    );
    if zram {
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        assert!(!swaps.contains("zram0"), "zram swap left behind:\n{swaps}");
    }
}
