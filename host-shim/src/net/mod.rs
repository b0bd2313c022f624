//! The network/RPC control plane's host side (issue 11, `docs/network.md`): a loopback RPC
//! server with W pinned workers over UDP or TCP ([`server`]), kernel steering through an eBPF `SK_REUSEPORT`
//! program and an mmapped 128-entry table ([`steer`]), the mechanism that applies the
//! control plane's decisions as epoch-checked transactions ([`server::Server::apply`]), the
//! control loop that posts telemetry and takes decisions over the link ([`control`]), and an
//! open-loop load generator ([`load`]).

pub mod control;
pub mod load;
pub mod server;
pub mod sock;
pub mod steer;
#[cfg(test)]
mod tests;

/// Pins the calling thread to core `slot % cores` (best effort).
pub(crate) fn pin_slot(slot: usize) {
    let n = crate::engine::cores();
    crate::engine::pin_to(&[slot % n.max(1)]);
}

/// 1 µs timer slack for the calling thread (timed waits end on time).
pub(crate) fn fine_timer_slack() {
    crate::engine::fine_timer_slack();
}

/// Nice value of the demo's latency-critical threads (server workers, load generator, control
/// thread, on-host policy) when the process may raise its priority (root).
pub const LATENCY_NICE: i32 = -10;

/// Raises the calling thread to [`LATENCY_NICE`] (best effort: without the privilege it stays
/// where it is). The batch job runs in `SCHED_IDLE` instead; on this shared 2-core machine it
/// keeps compilers and other sessions' work from delaying the server's wake-ups by tens of ms.
pub(crate) fn latency_priority() {
    // SAFETY: setpriority on the calling thread (PRIO_PROCESS with id 0 names the caller's
    // thread on Linux) takes no pointers.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, LATENCY_NICE) };
}

/// CPU time of the calling thread, ns.
pub(crate) fn thread_cpu_ns() -> u64 {
    crate::engine::thread_cpu_ns()
}
