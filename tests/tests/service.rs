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

fn policy_set(bin: &Path, config: &Path, args: &[&str]) -> (bool, String) {
    let ran = run_with_timeout(
        Command::new(bin)
            .args(["policy", "set"])
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

/// Polls the stats until `done` holds (bounded; the IPU unit must stay up meanwhile).
fn poll_until(
    bin: &Path,
    config: &Path,
    ipu: &mut Proc,
    limit: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let t = Instant::now();
    loop {
        let j = stats(bin, config);
        if done(&j) {
            return j;
        }
        assert!(t.elapsed() < limit, "{what}: never happened: {j}");
        assert!(
            ipu.0.try_wait().unwrap().is_none(),
            "{what}: the IPU unit ended early"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn policy_set_switches_fifo_shinjuku_fair_under_load_losing_nothing() {
    let image = wave_qemu::image().expect("firmware image");
    let bin = wave_host_bin();
    let dir = std::env::temp_dir().join(format!("wave-swap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("ivshmem.sock");
    let control_dir = dir.join("ctl");
    let config = dir.join("wave.toml");
    std::fs::write(
        &config,
        format!(
            "[link]\nsocket = \"{}\"\n[control]\nsocket = \"{}\"\n[sched]\npolicy = \"fifo\"\n\
             workload_rate = 500\nworkload_duration_s = 15\nworkload_handlers = 32\n\
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
    let limit = Duration::from_secs(300);
    // Under load: the workload runs and has completed requests.
    let j = poll_until(&bin, &config, &mut ipu, limit, "load", |j| {
        field(j, "running") == "true" && num(j, "completed") > 0
    });
    assert_eq!(field(&j, "policy"), "fifo", "{j}");
    eprintln!("wave-host stats --json under load:\n{j}");
    let (ok, out) = policy_set(&bin, &config, &["shinjuku"]);
    assert!(ok && out.starts_with("confirmed: policy shinjuku"), "{out}");
    eprintln!("wave-host policy set shinjuku: {}", out.trim());
    let after_first = num(&stats(&bin, &config), "completed");
    poll_until(&bin, &config, &mut ipu, limit, "load after a swap", |j| {
        num(j, "completed") > after_first + 50
    });
    let (ok, out) = policy_set(&bin, &config, &["fair", "--param", "slice_ns=50000"]);
    assert!(ok && out.starts_with("confirmed: policy fair"), "{out}");
    eprintln!("wave-host policy set fair: {}", out.trim());
    // The load ends by itself; timing gates nothing: poll until it finished.
    let end = poll_until(&bin, &config, &mut ipu, limit, "end of load", |j| {
        field(j, "finished") == "true"
    });
    eprintln!("wave-host stats --json after the load:\n{end}");
    assert_eq!(num(&end, "swaps"), 2, "{end}");
    assert!(num(&end, "generated") > 0, "{end}");
    assert_eq!(num(&end, "completed"), num(&end, "generated"), "{end}");
    assert_eq!(field(&end, "violations"), "0", "{end}");
    assert_eq!(field(&end, "policy"), "fair", "{end}");
    assert!(num(&end, "committed") > 0, "{end}");
    // Refusals: the load has ended; an unknown policy names the known ones.
    let (ok, out) = policy_set(&bin, &config, &["fifo"]);
    assert!(!ok && out.contains("has ended"), "{out}");
    let (ok, out) = policy_set(&bin, &config, &["lottery"]);
    assert!(!ok && out.contains("known: fifo, shinjuku, fair"), "{out}");
    let term = Command::new("kill")
        .args(["-TERM", &shim.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let s = wait_exit(&mut shim, Duration::from_secs(30)).expect("the shim exits on SIGTERM");
    assert!(s.success(), "shim exit {s}");
    assert!(
        !link.exists() && !control_dir.exists(),
        "sockets and control directory removed"
    );
    let s = wait_exit(&mut ipu, Duration::from_secs(60)).expect("the IPU powers off");
    let console = console.join().unwrap_or_default();
    assert!(s.success(), "IPU unit exit {s}\n{console}");
    // The IPU rebuilt its agent with each policy in turn.
    for p in ["fifo policy", "shinjuku policy", "fair policy"] {
        assert!(console.contains(p), "{p}:\n{console}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
