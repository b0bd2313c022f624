//! The one list of scheduling policies: wire id (word 2 of the ABI's `SchedConfig`), name (the
//! `--policy` value), parameter table (the configuration's parameter block) and constructor.
//! The CLIs, the host engine, the on-host agent and the firmware all choose policies here.
//!
//! Adding a policy: write its [`Plugin`] discipline in its own file, then add one line to the
//! `policies!` invocation below (a new, never reused wire id).

use crate::discipline::{Param, Params, Plugin};
use crate::sched::SchedCore;
use crate::types::{ConfigError, DecisionSink, Event, PolicyStats};
use crate::Policy;
use wave_abi::sched::PARAM_WORDS;

/// What the registry knows about one policy (no const parameters, so it can be a table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Wire id in the scheduling configuration (non-zero, never reused).
    pub id: u32,
    /// Name on the command line and in reports.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Parameters, in parameter-block order.
    pub params: &'static [Param],
}

impl PolicyInfo {
    /// The parameter called `name`, with its index in the block.
    pub fn param(&self, name: &str) -> Option<(usize, &'static Param)> {
        self.params.iter().enumerate().find(|(_, p)| p.name == name)
    }
}

macro_rules! policies {
    ($($variant:ident = $id:literal, $name:literal, $disc:ident;)+) => {
        /// Every policy, in wire-id order.
        // `<D<1> as Plugin>`: the table does not depend on the thread capacity.
        pub const POLICIES: &[PolicyInfo] = &[$(PolicyInfo {
            id: $id,
            name: $name,
            about: <$disc<1> as Plugin>::ABOUT,
            params: <$disc<1> as Plugin>::PARAMS,
        }),+];

        /// Which registered policy (a validated wire id).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Which {
            $(
                #[doc = $name]
                $variant,
            )+
        }

        /// Any registered policy, chosen at run time (what an agent holds).
        #[allow(clippy::large_enum_variant)]
        pub enum AnyPolicy<const C: usize, const T: usize> {
            $(
                #[doc = $name]
                $variant(SchedCore<C, T, $disc<T>>),
            )+
        }

        impl<const C: usize, const T: usize> AnyPolicy<C, T> {
            /// Builds policy `id` for `n_cpus` cpus from a raw parameter block (0 = default),
            /// refusing unknown ids and out-of-range parameters.
            pub fn build(
                id: u32,
                n_cpus: usize,
                raw: &[u64; PARAM_WORDS],
            ) -> Result<Self, ConfigError> {
                let (which, params) = Self::check(id, n_cpus, raw)?;
                Ok(Self::build_checked(which, n_cpus, &params))
            }

            /// Validates everything [`Self::build`] would refuse, building nothing.
            pub fn check(
                id: u32,
                n_cpus: usize,
                raw: &[u64; PARAM_WORDS],
            ) -> Result<(Which, Params), ConfigError> {
                let info = by_id(id).ok_or(ConfigError::UnknownPolicy(id))?;
                let params = Params::resolve(info.params, raw)?;
                // The cpu bound does not depend on the discipline.
                SchedCore::<C, T, crate::fifo::Fifo<T>>::check_cpus_count(n_cpus)?;
                match id {
                    $($id => Ok((Which::$variant, params)),)+
                    _ => Err(ConfigError::UnknownPolicy(id)),
                }
            }

            /// Builds what [`Self::check`] accepted. Infallible and inlined, so the tens of
            /// KiB of a policy are written in place rather than copied through the stack
            /// (the firmware's stack is only a few policies deep).
            #[inline(always)]
            pub fn build_checked(which: Which, n_cpus: usize, params: &Params) -> Self {
                match which {
                    $(Which::$variant => AnyPolicy::$variant(SchedCore::build(
                        n_cpus,
                        $disc::<T>::from_params(params),
                    )),)+
                }
            }

            fn inner(&self) -> &dyn Policy {
                match self {
                    $(AnyPolicy::$variant(p) => p,)+
                }
            }

            fn inner_mut(&mut self) -> &mut dyn Policy {
                match self {
                    $(AnyPolicy::$variant(p) => p,)+
                }
            }
        }
    };
}

use crate::fair::FairQueue;
use crate::fifo::Fifo;
use crate::shinjuku::ShinjukuQueue;

policies! {
    Fifo = 1, "fifo", Fifo;
    Shinjuku = 2, "shinjuku", ShinjukuQueue;
    Fair = 3, "fair", FairQueue;
}

/// The policy with wire id `id`.
pub fn by_id(id: u32) -> Option<&'static PolicyInfo> {
    POLICIES.iter().find(|p| p.id == id)
}

/// The policy called `name`.
pub fn by_name(name: &str) -> Option<&'static PolicyInfo> {
    POLICIES.iter().find(|p| p.name == name)
}

/// A policy and its raw parameter block: what a host publishes in the scheduling configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyChoice {
    /// The policy.
    pub info: &'static PolicyInfo,
    /// Parameter block (0 = the parameter's default).
    pub params: [u64; PARAM_WORDS],
}

impl PolicyChoice {
    /// Policy `name` with default parameters.
    pub fn named(name: &str) -> Result<Self, ChoiceError> {
        let info = by_name(name).ok_or(ChoiceError::UnknownPolicy)?;
        Ok(PolicyChoice {
            info,
            params: [0; PARAM_WORDS],
        })
    }

    /// Sets parameter `name` (checked against the policy's table).
    pub fn set(&mut self, name: &str, value: u64) -> Result<(), ChoiceError> {
        let (i, p) = self.info.param(name).ok_or(ChoiceError::UnknownParam)?;
        if !(p.min..=p.max).contains(&value) {
            return Err(ChoiceError::OutOfRange {
                min: p.min,
                max: p.max,
            });
        }
        self.params[i] = value;
        Ok(())
    }

    /// The value parameter `name` will have (its default if unset), if the policy has it.
    pub fn get(&self, name: &str) -> Option<u64> {
        let (i, p) = self.info.param(name)?;
        Some(if self.params[i] == 0 {
            p.default
        } else {
            self.params[i]
        })
    }

    /// For reports: the name, then the slice (if the policy has one) and every parameter not
    /// at its default, e.g. `shinjuku(slice 30 µs)`, `fair(slice 40 µs, steal_after 1 ms)`.
    #[cfg(any(test, feature = "std"))]
    pub fn describe(&self) -> std::string::String {
        let ps: std::vec::Vec<std::string::String> = self
            .info
            .params
            .iter()
            .filter(|p| p.name == "slice_ns" || self.get(p.name) != Some(p.default))
            .map(|p| {
                let v = self.get(p.name).unwrap_or(0);
                let name = p.name.strip_suffix("_ns").unwrap_or(p.name);
                if p.name.ends_with("_ns") {
                    std::format!("{name} {}", fmt_ns(v))
                } else {
                    std::format!("{name} {v}")
                }
            })
            .collect();
        if ps.is_empty() {
            self.info.name.into()
        } else {
            std::format!("{}({})", self.info.name, ps.join(", "))
        }
    }
}

/// `30 µs`, `2 ms`, `1500 ns`, `never` (u64::MAX).
#[cfg(any(test, feature = "std"))]
fn fmt_ns(v: u64) -> std::string::String {
    match v {
        u64::MAX => "never".into(),
        v if v % 1_000_000 == 0 && v > 0 => std::format!("{} ms", v / 1_000_000),
        v if v % 1_000 == 0 && v > 0 => std::format!("{} µs", v / 1_000),
        v => std::format!("{v} ns"),
    }
}

#[cfg(any(test, feature = "std"))]
impl PolicyChoice {
    /// The command-line form shared by `wave-host sched` and `cargo wave demo`: `--policy
    /// NAME`, the legacy `--slice-us US` (for policies with a `slice_ns` parameter) and any
    /// number of `--param NAME=VALUE`. Errors say what is wrong and what is accepted.
    pub fn from_cli(
        name: &str,
        slice_us: Option<u64>,
        params: &[std::string::String],
    ) -> Result<Self, std::string::String> {
        let all = || names().collect::<std::vec::Vec<_>>().join(", ");
        let mut c = PolicyChoice::named(name)
            .map_err(|_| std::format!("unknown policy `{name}` (known: {})", all()))?;
        if let Some(us) = slice_us {
            let ns = us.saturating_mul(1_000);
            c.set("slice_ns", ns)
                .map_err(|e| std::format!("--slice-us {us}: {}", c.explain(e, "slice_ns")))?;
        }
        for kv in params {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| std::format!("--param `{kv}`: expected NAME=VALUE"))?;
            let v: u64 = v
                .trim()
                .parse()
                .map_err(|_| std::format!("--param `{kv}`: `{v}` is not a whole number"))?;
            c.set(k.trim(), v)
                .map_err(|e| std::format!("--param `{kv}`: {}", c.explain(e, k.trim())))?;
        }
        Ok(c)
    }

    fn explain(&self, e: ChoiceError, param: &str) -> std::string::String {
        let info = self.info;
        match e {
            ChoiceError::UnknownPolicy => std::format!("unknown policy `{}`", info.name),
            ChoiceError::UnknownParam => {
                let ps: std::vec::Vec<_> = info.params.iter().map(|p| p.name).collect();
                std::format!(
                    "policy {} has no parameter `{param}` (it has: {})",
                    info.name,
                    ps.join(", ")
                )
            }
            ChoiceError::OutOfRange { min, max } => {
                std::format!("`{param}` must be in {min}..={max}")
            }
        }
    }
}

/// Why a host-side policy choice was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChoiceError {
    /// No policy of that name.
    UnknownPolicy,
    /// The policy has no parameter of that name.
    UnknownParam,
    /// The value is outside the parameter's range.
    OutOfRange {
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
}

/// Names of all policies, in wire-id order (for help and error messages).
pub fn names() -> impl Iterator<Item = &'static str> {
    POLICIES.iter().map(|p| p.name)
}

impl<const C: usize, const T: usize> Policy for AnyPolicy<C, T> {
    fn name(&self) -> &'static str {
        self.inner().name()
    }
    fn on_event(&mut self, ev: Event, now_ns: u64) {
        self.inner_mut().on_event(ev, now_ns)
    }
    fn poll(&mut self, now_ns: u64, out: &mut dyn DecisionSink) -> usize {
        self.inner_mut().poll(now_ns, out)
    }
    fn next_deadline(&self, now_ns: u64) -> Option<u64> {
        self.inner().next_deadline(now_ns)
    }
    fn stats(&self) -> &PolicyStats {
        self.inner().stats()
    }
    fn check_invariants(&self) -> Result<(), &'static str> {
        self.inner().check_invariants()
    }
}
