//! CPU placement of the memory demo's threads, identical in every mode (`none`, `host`,
//! `ipu`): the key-value thread (which busy-polls its open-loop arrivals) alone on the last
//! CPU the process may use, at the highest priority it can get, and everything else (the
//! mechanism, the on-host policy, QEMU) on the other CPUs. The read sampler's fault handler
//! also goes on the key-value CPU: it only ever runs while the key-value thread is blocked in
//! a sample fault, so that CPU is free exactly when the handler is needed.
//!
//! Also the per-thread evidence a run reports about the key-value thread: CPU time, time off
//! the CPU, and context switches (voluntary: blocked, e.g. in a userfaultfd fault; involuntary:
//! preempted by another runnable thread).

use std::time::Instant;

/// The CPUs this process may run on (empty if unreadable).
fn allowed() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..nix::sched::CpuSet::count())
        .filter(|&c| set.is_set(c).unwrap_or(false))
        .collect()
}

/// The placement of one run: the key-value CPU and the rest (`None` on a single CPU: then
/// nothing is pinned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The CPU of the key-value thread (and the sampler's fault handler).
    pub kv_cpu: usize,
    /// The CPUs of every other thread of the run (the mechanism, the policy, QEMU).
    pub control: Vec<usize>,
}

impl Placement {
    /// The last allowed CPU for the key-value thread, the others for the rest; `None` with
    /// fewer than two CPUs. Decided once per process, from the CPUs allowed at the first call
    /// (later calls come from threads already pinned to the control CPUs).
    pub fn detect() -> Option<Placement> {
        static ONCE: std::sync::OnceLock<Option<Placement>> = std::sync::OnceLock::new();
        ONCE.get_or_init(Self::from_allowed).clone()
    }

    fn from_allowed() -> Option<Placement> {
        let mut cpus = allowed();
        let kv_cpu = cpus.pop()?;
        if cpus.is_empty() {
            return None;
        }
        Some(Placement {
            kv_cpu,
            control: cpus,
        })
    }

    /// Pins the calling thread (and what it spawns later, QEMU included) to the control CPUs,
    /// and raises the process's scheduling group: with autogroups on, a thread's nice value
    /// only ranks it inside its own session's group, and every other session (other users'
    /// builds) gets an equal share of each CPU whatever the nice values.
    pub fn pin_control(&self) {
        pin_tid(0, &self.control);
        // best effort (needs CAP_SYS_NICE; absent without CONFIG_SCHED_AUTOGROUP)
        let _ = std::fs::write("/proc/self/autogroup", "-20");
    }

    /// Pins the calling thread to the key-value CPU at the highest priority allowed.
    pub fn pin_kv(&self) {
        pin_tid(0, &[self.kv_cpu]);
        raise_priority(0);
    }

    /// Pins thread `tid` (0: the caller) to the key-value CPU at the highest priority allowed.
    pub fn pin_to_kv(&self, tid: i32) {
        pin_tid(tid, &[self.kv_cpu]);
        raise_priority(tid);
    }

    /// A line for the report.
    pub fn describe(&self) -> String {
        format!(
            "key-value thread and sampler fault handler on CPU {} (nice -20, process group nice -20, if allowed); mechanism, policy and QEMU on CPU {:?}",
            self.kv_cpu, self.control
        )
    }
}

/// Best-effort `sched_setaffinity` of thread `tid` (0: the caller).
fn pin_tid(tid: i32, cpus: &[usize]) {
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        let _ = set.set(c);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set);
}

/// Best-effort nice -20 for thread `tid` (0: the caller; needs CAP_SYS_NICE, else unchanged).
fn raise_priority(tid: i32) {
    // SAFETY: setpriority takes plain integers; PRIO_PROCESS with a thread id changes only
    // that thread's nice value on Linux.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -20);
    }
}

/// The calling thread's kernel thread id.
pub(super) fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Scheduling evidence about one thread over an interval of its life.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThreadStats {
    /// Wall time covered, s.
    pub wall_s: f64,
    /// CPU time the thread used, s.
    pub cpu_s: f64,
    /// Context switches because the thread blocked (a fault waiting for the handler, a sleep).
    pub voluntary: u64,
    /// Context switches because another thread took the CPU (preemption).
    pub involuntary: u64,
    /// TLB-shootdown interrupts the thread's CPU took (from anyone: whoever unmaps or
    /// write-protects pages of a process that ran there), if the thread was pinned to one.
    pub tlb_shootdowns: u64,
}

impl ThreadStats {
    /// Wall time the thread was not on a CPU (for a thread that never sleeps on purpose:
    /// time preempted or blocked).
    pub fn off_cpu_s(&self) -> f64 {
        (self.wall_s - self.cpu_s).max(0.0)
    }
}

/// A running measurement of the calling thread (start with [`ThreadMeter::start`]).
pub struct ThreadMeter {
    t0: Instant,
    cpu0: u64,
    csw0: (u64, u64),
    cpu: Option<usize>,
    tlb0: u64,
}

/// TLB shootdowns CPU `cpu` has taken since boot (`/proc/interrupts`; 0 if unreadable).
pub fn tlb_shootdowns(cpu: usize) -> u64 {
    let s = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    s.lines()
        .find(|l| l.trim_start().starts_with("TLB:"))
        .and_then(|l| l.split_whitespace().nth(1 + cpu)?.parse().ok())
        .unwrap_or(0)
}

/// The calling thread's (voluntary, involuntary) context switches.
fn ctx_switches() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

impl ThreadMeter {
    /// Starts measuring the calling thread (pinned to `cpu`, if it is).
    pub fn start(cpu: Option<usize>) -> ThreadMeter {
        ThreadMeter {
            t0: Instant::now(),
            cpu0: crate::engine::thread_cpu_ns(),
            csw0: ctx_switches(),
            cpu,
            tlb0: cpu.map_or(0, tlb_shootdowns),
        }
    }

    /// What the calling thread (the one that started the meter) did since.
    pub fn stop(&self) -> ThreadStats {
        let csw = ctx_switches();
        ThreadStats {
            wall_s: self.t0.elapsed().as_secs_f64(),
            cpu_s: crate::engine::thread_cpu_ns().saturating_sub(self.cpu0) as f64 / 1e9,
            voluntary: csw.0.saturating_sub(self.csw0.0),
            involuntary: csw.1.saturating_sub(self.csw0.1),
            tlb_shootdowns: self
                .cpu
                .map_or(0, |c| tlb_shootdowns(c).saturating_sub(self.tlb0)),
        }
    }
}

/// CLOCK_MONOTONIC in ns: one clock for every thread's timestamps (the key-value thread's
/// slow operations and the mechanism's work), so they can be lined up.
pub fn mono_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Most events either log keeps.
pub const LOG_CAP: usize = 200_000;

/// What the mechanism was doing: kinds of [`MechEvent`].
pub const MECH_KINDS: [&str; 5] = ["reclaim", "promote", "collapse", "scan", "arm samples"];

/// One piece of the mechanism's work: start (CLOCK_MONOTONIC ns), duration (ns), kind (an
/// index into [`MECH_KINDS`]).
pub type MechEvent = (u64, u64, u8);

/// Slow operations of the key-value thread attributed to the mechanism's work that overlapped
/// them: per kind of [`MECH_KINDS`] and a last bucket for "nothing of the mechanism's"
/// (preempted by something else, a far-tier fault, a sample fault): `(count, total ns)`.
/// `slow` holds (start, duration) in CLOCK_MONOTONIC ns; `mech` is sorted by start.
pub fn attribute(slow: &[(u64, u64)], mech: &[MechEvent]) -> [(u64, u64); 6] {
    let mut out = [(0u64, 0u64); 6];
    let longest = mech.iter().map(|e| e.1).max().unwrap_or(0);
    for &(s, d) in slow {
        let first = mech.partition_point(|e| e.0 + longest < s);
        let kind = mech[first..]
            .iter()
            .take_while(|e| e.0 <= s + d)
            .filter(|e| e.0 + e.1 >= s)
            .map(|e| e.2 as usize)
            .min_by_key(|&k| [2, 0, 1, 4, 3].iter().position(|&p| p == k))
            .unwrap_or(5);
        out[kind].0 += 1;
        out[kind].1 += d;
    }
    out
}
