//! The host mechanism over a managed area: per-interval access tracking (exact write sets with
//! `PAGEMAP_SCAN` + userfaultfd async write-protect; fault-backs of far regions seen as
//! residency growth), one [`RegionRecord`] per changed region, and decisions applied as
//! transactions (reclaim with `MADV_PAGEOUT`, promote with `MADV_POPULATE_READ`, collapse with
//! `MADV_COLLAPSE`), each refused as stale if its region moved since the decision was made.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use wave_policy::mem::{
    MemAction, MemDecision, MemOutcome, OutcomeKind, RegionId, RegionRecord, Tier,
};
use wave_policy::Seq;

use super::area::{AreaConfig, Mapping, PAGE};
use super::sampler::Sampler;
use super::sys::{self, PageRegion, PmScanArg};

/// One region as the host knows it (the host is authoritative).
#[derive(Clone, Copy, Debug, Default)]
struct RegionState {
    seq: u32,
    far: bool,
    /// Collapsed and out of write tracking until this interval.
    huge_until: Option<u64>,
    /// Resident pages right after the region was reclaimed (growth = faulted back).
    present_at_reclaim: u64,
    /// Pages faulted back since the last record.
    faulted: u64,
    read: bool,
    written: bool,
}

/// Counters of the mechanism (all plain integers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MechStats {
    /// Scan intervals run.
    pub scans: u64,
    /// Wall time spent scanning, ns.
    pub scan_ns: u64,
    /// Pages reported written.
    pub written_pages: u64,
    /// Records posted.
    pub records: u64,
    /// Outcomes by kind (`[committed, stale, failed]`), and by action (`[reclaim, promote,
    /// collapse]`) for the committed ones.
    pub outcomes: [u64; 3],
    /// Committed decisions by action.
    pub committed: [u64; 3],
    /// Reclaims refused because no far tier (swap) is available.
    pub no_far_tier: u64,
    /// Decisions naming a region out of range.
    pub bad_region: u64,
    /// Pages moved to the far tier by committed reclaims.
    pub pages_out: u64,
    /// Wall time spent applying decisions, ns.
    pub apply_ns: u64,
    /// Read-sample faults handled (a sampled page was touched).
    pub sample_faults: u64,
    /// Sampler handler errors (a sample could not be put back at fault time; retried).
    pub sampler_errors: u64,
    /// Time the sampler's fault handler waited for the sample table's mutex (held by the
    /// mechanism for one page at a time): total and longest, ns.
    pub sampler_lock_wait_ns: [u64; 2],
    /// TLB shootdowns the key-value CPU took during each kind of the mechanism's work
    /// ([`super::place::MECH_KINDS`]; only with a [`super::place::Placement`]).
    pub tlb_by_kind: [u64; 5],
    /// Failed outcomes by reason: `[wrong tier (reclaim or collapse of a far region, promote
    /// of a resident one), nothing paged out, a syscall failed, already collapsed]`.
    pub failed_by: [u64; 4],
}

/// The mechanism's handle on a managed area.
pub struct Mechanism {
    /// First field: dropped first, so sampled pages go home while the area is still mapped.
    sampler: Option<Sampler>,
    map: Arc<Mapping>,
    cfg: AreaConfig,
    uffd: Arc<OwnedFd>,
    pagemap: OwnedFd,
    reg_mode: u64,
    regions: Vec<RegionState>,
    buf: Vec<PageRegion>,
    interval: u64,
    stats: MechStats,
    /// The mechanism's work over time (for lining it up with slow key-value operations).
    log: Vec<super::place::MechEvent>,
}

/// A userfaultfd with async write-protect (and `UFFDIO_MOVE` when sampling reads).
fn open_uffd(sampling: bool) -> io::Result<OwnedFd> {
    let uffd =
        sys::userfaultfd().map_err(|e| os_err("userfaultfd (needs CONFIG_USERFAULTFD)", e))?;
    let mut features = sys::UFFD_FEATURE_WP_ASYNC | sys::UFFD_FEATURE_WP_UNPOPULATED;
    if sampling {
        features |= sys::UFFD_FEATURE_MOVE;
    }
    let mut api = sys::UffdioApi {
        api: sys::UFFD_API,
        features,
        ioctls: 0,
    };
    sys::ioctl(&uffd, sys::UFFDIO_API, &mut api).map_err(|e| {
        os_err(
            "UFFDIO_API with WP_ASYNC (Linux 6.7+) and MOVE if sampling (6.8+)",
            e,
        )
    })?;
    Ok(uffd)
}

fn os_err(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

impl Mechanism {
    pub(super) fn new(map: Arc<Mapping>, cfg: AreaConfig) -> io::Result<Mechanism> {
        let sampling = cfg.read_samples > 0;
        let uffd = Arc::new(open_uffd(sampling)?);
        let pagemap: OwnedFd = File::open("/proc/self/pagemap")?.into();
        let mut reg_mode = sys::UFFDIO_REGISTER_MODE_WP;
        if sampling {
            // sampled pages fault as MISSING; populate first so nothing else does
            sys::madvise(map.addr, map.len, libc::MADV_POPULATE_WRITE)
                .map_err(|e| os_err("populating the area for read sampling", e))?;
            reg_mode |= sys::UFFDIO_REGISTER_MODE_MISSING;
        }
        let n = map.len / cfg.region_bytes;
        let mut m = Mechanism {
            map,
            cfg,
            uffd,
            pagemap,
            sampler: None,
            reg_mode,
            regions: vec![RegionState::default(); n],
            buf: vec![PageRegion::default(); 512],
            interval: 0,
            stats: MechStats::default(),
            log: Vec::new(),
        };
        m.track(0, m.map.len)?;
        if sampling {
            let (base, len, rb) = (m.map.addr, m.map.len, cfg.region_bytes);
            let s = Sampler::new(m.uffd.clone(), base, len, rb, cfg.read_samples as usize);
            m.sampler = Some(s.map_err(|e| os_err("read sampler (stash, handler thread)", e))?);
        }
        Ok(m)
    }

    /// Regions in the area.
    pub fn n_regions(&self) -> u32 {
        self.regions.len() as u32
    }

    /// Region size in bytes.
    pub fn region_bytes(&self) -> usize {
        self.cfg.region_bytes
    }

    /// The read sampler's fault-handler thread (kernel thread id), if sampling is on and the
    /// thread has started: for CPU placement.
    pub fn fault_handler_tid(&self) -> Option<i32> {
        self.sampler.as_ref().and_then(|s| s.handler_tid())
    }

    /// The mechanism's work over time: (start, duration, kind), CLOCK_MONOTONIC ns, kinds as
    /// in [`super::place::MECH_KINDS`] (at most [`super::place::LOG_CAP`] events).
    pub fn work_log(&self) -> &[super::place::MechEvent] {
        &self.log
    }

    /// TLB shootdowns of the key-value CPU so far (0 without a placement).
    fn tlb(&self) -> u64 {
        super::place::Placement::detect().map_or(0, |p| super::place::tlb_shootdowns(p.kv_cpu))
    }

    fn note(&mut self, start: u64, kind: u8, tlb0: u64) {
        let d = self.tlb().saturating_sub(tlb0);
        self.stats.tlb_by_kind[kind as usize] += d;
        if self.log.len() < super::place::LOG_CAP {
            let now = super::place::mono_ns();
            self.log.push((start, now.saturating_sub(start), kind));
        }
    }

    /// Counters.
    pub fn stats(&self) -> &MechStats {
        &self.stats
    }

    /// A region's current sequence number (`None` if out of range).
    pub fn region_seq(&self, r: RegionId) -> Option<Seq> {
        self.regions.get(r.0 as usize).map(|s| Seq(s.seq))
    }

    /// The tier the host holds a region in.
    pub fn region_tier(&self, r: RegionId) -> Option<Tier> {
        self.regions
            .get(r.0 as usize)
            .map(|s| if s.far { Tier::Far } else { Tier::Near })
    }

    fn span(&self, i: usize) -> (usize, usize) {
        (
            self.map.addr + i * self.cfg.region_bytes,
            self.cfg.region_bytes,
        )
    }

    /// Register `[off, off+len)` for async write-protect tracking and arm it (a write-protect
    /// pass that also discards what was written before).
    fn track(&mut self, off: usize, len: usize) -> io::Result<()> {
        let range = sys::UffdioRange {
            start: (self.map.addr + off) as u64,
            len: len as u64,
        };
        let mut reg = sys::UffdioRegister {
            range,
            mode: self.reg_mode,
            ioctls: 0,
        };
        sys::ioctl(&self.uffd, sys::UFFDIO_REGISTER, &mut reg)
            .map_err(|e| os_err("UFFDIO_REGISTER (WP)", e))?;
        self.pm_scan(off, len, true, sys::PAGE_IS_WRITTEN, |_| {})?;
        Ok(())
    }

    fn untrack(&mut self, off: usize, len: usize) -> io::Result<()> {
        let mut range = sys::UffdioRange {
            start: (self.map.addr + off) as u64,
            len: len as u64,
        };
        sys::ioctl(&self.uffd, sys::UFFDIO_UNREGISTER, &mut range).map(|_| ())
    }

    /// One `PAGEMAP_SCAN` over `[off, off+len)` for pages in any of `mask`'s categories, looping
    /// on `walk_end` (the kernel may stop early). `wp`: write-protect what matched (the
    /// written-since-last-scan query). Calls `f` with each matching run of pages.
    fn pm_scan(
        &mut self,
        off: usize,
        len: usize,
        wp: bool,
        mask: u64,
        mut f: impl FnMut(&PageRegion),
    ) -> io::Result<()> {
        let end = (self.map.addr + off + len) as u64;
        let mut start = (self.map.addr + off) as u64;
        while start < end {
            let mut arg = PmScanArg {
                size: size_of::<PmScanArg>() as u64,
                flags: if wp {
                    sys::PM_SCAN_WP_MATCHING | sys::PM_SCAN_CHECK_WPASYNC
                } else {
                    0
                },
                start,
                end,
                vec: self.buf.as_mut_ptr() as u64,
                vec_len: self.buf.len() as u64,
                // written: all of `mask` (as the kernel's selftests query it); else any of it
                category_mask: if wp { mask } else { 0 },
                category_anyof_mask: if wp { 0 } else { mask },
                return_mask: mask,
                ..PmScanArg::default()
            };
            let n = sys::ioctl(&self.pagemap, sys::PAGEMAP_SCAN, &mut arg)
                .map_err(|e| os_err("PAGEMAP_SCAN", e))?;
            self.buf[..n as usize].iter().for_each(&mut f);
            if arg.walk_end <= start {
                break; // no progress: never spin
            }
            start = arg.walk_end;
        }
        Ok(())
    }

    /// Pages of region `i` in any of the categories `mask`.
    fn count_pages(&mut self, i: usize, mask: u64) -> io::Result<u64> {
        let (off, len) = (i * self.cfg.region_bytes, self.cfg.region_bytes);
        let mut pages = 0;
        self.pm_scan(off, len, false, mask, |r| {
            pages += (r.end - r.start) / PAGE as u64
        })?;
        Ok(pages)
    }

    /// One scan interval: collect the write set of every tracked region (re-protecting it),
    /// notice far regions whose pages came back (read or written: a promotion), end the leases
    /// of collapsed regions, and append one record per changed region to `out` (each bumps the
    /// region's sequence number). Returns how many records were appended.
    pub fn scan(&mut self, out: &mut Vec<RegionRecord>) -> io::Result<usize> {
        let t0 = Instant::now();
        let (m0, tlb0) = (super::place::mono_ns(), self.tlb());
        self.interval += 1;
        if let Some(s) = &self.sampler {
            s.restore(None)?; // untouched samples home (write-protected: not a write)
        }
        self.scan_writes()?;
        self.note(m0, 3, tlb0);
        let (m1, tlb1) = (super::place::mono_ns(), self.tlb());
        self.arm_samples();
        self.note(m1, 4, tlb1);
        let (m0, tlb0) = (super::place::mono_ns(), self.tlb());
        self.scan_far()?;
        self.end_leases()?;
        let n = self.collect_records(out);
        self.stats.scans += 1;
        self.stats.records += n as u64;
        self.stats.scan_ns += t0.elapsed().as_nanos() as u64;
        self.note(m0, 3, tlb0);
        Ok(n)
    }

    /// Sample the next interval's reads: move a few pages per resident, tracked region out.
    fn arm_samples(&mut self) {
        let Some(s) = self.sampler.take() else { return };
        let ok: Vec<bool> = self
            .regions
            .iter()
            // A region written in this scan is known to be in use: its read sample is skipped
            // for the next interval, which spares hot regions the sample's fault.
            .map(|r| !r.far && r.huge_until.is_none() && !r.written)
            .collect();
        let (base, rb) = (self.map.addr, self.cfg.region_bytes);
        let (mut hits, interval) = (Vec::new(), self.interval);
        s.arm(
            |r| ok[r],
            |page| {
                let mut hit = false;
                let off = page - base;
                if self
                    .pm_scan(off, PAGE, true, sys::PAGE_IS_WRITTEN, |_| hit = true)
                    .is_ok()
                    && hit
                {
                    hits.push(off / rb);
                }
            },
            interval,
        );
        hits.into_iter()
            .for_each(|r| self.regions[r].written = true);
        (self.stats.sample_faults, self.stats.sampler_errors) = s.counts();
        let (total, max) = s.lock_wait_ns();
        self.stats.sampler_lock_wait_ns = [total, max];
        self.sampler = Some(s);
    }

    /// One record per region touched in the interval (bumping its sequence number).
    fn collect_records(&mut self, out: &mut Vec<RegionRecord>) -> usize {
        let mut n = 0;
        for (i, r) in self.regions.iter_mut().enumerate() {
            if r.huge_until.is_some() {
                r.read = true; // out of tracking while leased: assumed hot (see docs/memory.md)
            }
            if self.sampler.as_ref().is_some_and(|s| s.take_touched(i)) {
                r.read = true;
            }
            if r.read || r.written {
                r.seq = r.seq.wrapping_add(1);
                let tier = if r.far { Tier::Far } else { Tier::Near };
                let (read, written) = (r.read, r.written);
                out.push(RegionRecord {
                    region: RegionId(i as u32),
                    seq: Seq(r.seq),
                    read,
                    written,
                    tier,
                    faulted: if r.far {
                        r.faulted.min(u32::MAX as u64) as u32
                    } else {
                        0
                    },
                });
                (r.read, r.written, r.faulted) = (false, false, 0);
                n += 1;
            }
        }
        n
    }

    /// The write-set pass over every run of tracked (not leased) regions.
    fn scan_writes(&mut self) -> io::Result<()> {
        let rb = self.cfg.region_bytes;
        let mut i = 0;
        while i < self.regions.len() {
            if self.regions[i].huge_until.is_some() {
                i += 1;
                continue;
            }
            let first = i;
            while i < self.regions.len() && self.regions[i].huge_until.is_none() {
                i += 1;
            }
            let (base, mut marks) = (self.map.addr, Vec::new());
            self.pm_scan(
                first * rb,
                (i - first) * rb,
                true,
                sys::PAGE_IS_WRITTEN,
                |r| marks.push(*r),
            )?;
            for r in marks {
                self.stats.written_pages += (r.end - r.start) / PAGE as u64;
                let (a, b) = (
                    (r.start as usize - base) / rb,
                    (r.end as usize - 1 - base) / rb,
                );
                self.regions[a..=b]
                    .iter_mut()
                    .for_each(|s| s.written = true);
            }
        }
        Ok(())
    }

    /// Far regions with more resident pages than right after reclaim were accessed.
    fn scan_far(&mut self) -> io::Result<()> {
        for i in 0..self.regions.len() {
            if !self.regions[i].far {
                continue;
            }
            let present = self.count_pages(i, sys::PAGE_IS_PRESENT)?;
            let r = &mut self.regions[i];
            if present > r.present_at_reclaim {
                r.read = true;
                r.faulted += present - r.present_at_reclaim;
                r.present_at_reclaim = present;
            }
        }
        Ok(())
    }

    /// Put collapsed regions whose lease ran out back under write tracking.
    fn end_leases(&mut self) -> io::Result<()> {
        for i in 0..self.regions.len() {
            if self.regions[i]
                .huge_until
                .is_some_and(|t| t <= self.interval)
            {
                self.regions[i].huge_until = None;
                let (off, len) = (i * self.cfg.region_bytes, self.cfg.region_bytes);
                self.track(off, len)?;
            }
        }
        Ok(())
    }

    /// Written since the last scan (re-protects what it finds; the write is kept for the next
    /// record, so nothing is lost).
    fn written_now(&mut self, i: usize) -> io::Result<bool> {
        if self.regions[i].huge_until.is_some() {
            return Ok(false);
        }
        let (off, len) = (i * self.cfg.region_bytes, self.cfg.region_bytes);
        let mut hit = false;
        self.pm_scan(off, len, true, sys::PAGE_IS_WRITTEN, |_| hit = true)?;
        self.regions[i].written |= hit;
        Ok(hit)
    }

    /// Apply one decision as a transaction and report its outcome. Stale if the region's
    /// sequence number moved or it was written since the last scan (checked exactly, at apply
    /// time); failed if the kernel refused or there is no far tier.
    pub fn apply(&mut self, d: MemDecision) -> MemOutcome {
        let t0 = Instant::now();
        let (m0, tlb0) = (super::place::mono_ns(), self.tlb());
        let (action, txn, region, seq) = d.parts();
        let i = region.0 as usize;
        let kind = if i >= self.regions.len() {
            self.stats.bad_region += 1;
            OutcomeKind::Failed
        } else if seq.0 != self.regions[i].seq {
            OutcomeKind::Stale
        } else {
            match self.transact(action, i) {
                Ok(k) => k,
                Err(_) => {
                    self.stats.failed_by[2] += 1;
                    OutcomeKind::Failed
                }
            }
        };
        self.stats.outcomes[kind.index()] += 1;
        if kind == OutcomeKind::Committed {
            self.stats.committed[action.index()] += 1;
        }
        self.stats.apply_ns += t0.elapsed().as_nanos() as u64;
        self.note(m0, action.index() as u8, tlb0);
        let seq = Seq(self.regions.get(i).map_or(0, |r| r.seq));
        MemOutcome {
            txn,
            region,
            seq,
            kind,
        }
    }

    fn transact(&mut self, action: MemAction, i: usize) -> io::Result<OutcomeKind> {
        if let Some(s) = &self.sampler {
            s.restore(Some(i))?; // sampled pages go with the region (and before untracking)
        }
        let (addr, len) = self.span(i);
        let far = self.regions[i].far;
        match action {
            MemAction::Reclaim | MemAction::Collapse if far => {
                self.stats.failed_by[0] += 1;
                return Ok(OutcomeKind::Failed);
            }
            MemAction::Promote if !far => {
                self.stats.failed_by[0] += 1;
                return Ok(OutcomeKind::Failed);
            }
            MemAction::Promote => {
                if sys::madvise(addr, len, libc::MADV_POPULATE_READ).is_err() {
                    sys::madvise(addr, len, libc::MADV_WILLNEED)?;
                }
                self.regions[i].far = false;
            }
            MemAction::Reclaim => return self.reclaim(i),
            MemAction::Collapse => return self.collapse(i),
        }
        self.regions[i].seq = self.regions[i].seq.wrapping_add(1);
        Ok(OutcomeKind::Committed)
    }

    fn reclaim(&mut self, i: usize) -> io::Result<OutcomeKind> {
        if !far_tier_available() {
            self.stats.no_far_tier += 1;
            return Ok(OutcomeKind::Failed);
        }
        if self.written_now(i)? {
            return Ok(OutcomeKind::Stale);
        }
        let (addr, len) = self.span(i);
        if self.regions[i].huge_until.take().is_some() {
            self.track(i * self.cfg.region_bytes, len)?; // written pages keep their WP marker
        }
        self.pageout(addr, len)?;
        let swapped = self.count_pages(i, sys::PAGE_IS_SWAPPED)?;
        if swapped == 0 {
            self.stats.failed_by[1] += 1;
            return Ok(OutcomeKind::Failed);
        }
        let present = self.count_pages(i, sys::PAGE_IS_PRESENT)?;
        let r = &mut self.regions[i];
        (r.far, r.present_at_reclaim, r.seq) = (true, present, r.seq.wrapping_add(1));
        r.faulted = 0;
        self.stats.pages_out += swapped;
        Ok(OutcomeKind::Committed)
    }

    /// `MADV_PAGEOUT` of `[addr, addr+len)` in chunks with pauses ([`AreaConfig::pageout_chunk`]).
    fn pageout(&mut self, addr: usize, len: usize) -> io::Result<()> {
        let chunk = self
            .cfg
            .pageout_chunk
            .next_multiple_of(PAGE)
            .clamp(PAGE, len);
        let mut off = 0;
        while off < len {
            if off > 0 && self.cfg.pageout_pause_us > 0 {
                // a spin, not a sleep: on a loaded CPU a sleep's wake-up can take milliseconds,
                // which would cut the reclaim rate to a fraction of the quota
                let until = Instant::now()
                    + std::time::Duration::from_micros(self.cfg.pageout_pause_us as u64);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            let n = chunk.min(len - off);
            sys::madvise(addr + off, n, libc::MADV_PAGEOUT)?;
            off += n;
        }
        Ok(())
    }

    fn collapse(&mut self, i: usize) -> io::Result<OutcomeKind> {
        if self.regions[i].huge_until.is_some() {
            self.stats.failed_by[3] += 1;
            return Ok(OutcomeKind::Failed); // already collapsed
        }
        if self.written_now(i)? {
            return Ok(OutcomeKind::Stale);
        }
        let (addr, len) = self.span(i);
        let off = i * self.cfg.region_bytes;
        // MADV_COLLAPSE refuses write-protect-registered ranges (EINVAL): leave tracking
        self.untrack(off, len)?;
        if let Err(e) = sys::madvise(addr, len, libc::MADV_COLLAPSE) {
            self.track(off, len)?;
            return Err(e);
        }
        self.regions[i].huge_until = Some(self.interval + self.cfg.collapse_lease as u64);
        Ok(OutcomeKind::Committed)
    }

    /// Bytes of the region mapped by huge pages (`PAGEMAP_SCAN` for `PAGE_IS_HUGE`).
    pub fn huge_bytes(&mut self, r: RegionId) -> io::Result<u64> {
        let i = r.0 as usize;
        if i >= self.regions.len() {
            return Ok(0);
        }
        Ok(self.count_pages(i, sys::PAGE_IS_HUGE)? * PAGE as u64)
    }

    /// Resident pages of the area (with the read sampler's stashed pages, still in DRAM) and
    /// swapped pages (one `PAGEMAP_SCAN` pass each).
    pub fn residency(&mut self) -> io::Result<(u64, u64)> {
        let (m0, tlb0) = (super::place::mono_ns(), self.tlb());
        // sampled pages sit in the stash: still DRAM, so still resident
        let (mut present, mut swapped) = (self.sampler.as_ref().map_or(0, |s| s.stashed()), 0);
        let len = self.map.len;
        self.pm_scan(0, len, false, sys::PAGE_IS_PRESENT, |r| {
            present += (r.end - r.start) / PAGE as u64
        })?;
        self.pm_scan(0, len, false, sys::PAGE_IS_SWAPPED, |r| {
            swapped += (r.end - r.start) / PAGE as u64
        })?;
        self.note(m0, 3, tlb0);
        Ok((present, swapped))
    }
}

/// `true` if a swap device with free space is active (the far tier of `MADV_PAGEOUT`).
pub fn far_tier_available() -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/swaps") else {
        return false;
    };
    s.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 4 && f[2].parse::<u64>().unwrap_or(0) > f[3].parse::<u64>().unwrap_or(u64::MAX)
    })
}

/// A growable decision sink for the host side (`wave-policy` implements `MemSink` for `Vec`
/// only with its `std` feature, which this crate does not enable).
#[derive(Default, Debug)]
pub struct DecisionVec(pub Vec<MemDecision>);

impl wave_policy::mem::MemSink for DecisionVec {
    fn try_push(&mut self, d: MemDecision) -> bool {
        self.0.push(d);
        true
    }
}
