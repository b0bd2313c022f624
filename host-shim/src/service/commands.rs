//! The service's subcommands of `wave-host` (`run`, `install`, `stats`, `policy`, `config`): their
//! options (clap) and what they do, kept here so `main.rs` only adds one line per command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::config::{Config, DEFAULT_FILE, DEFAULT_PATH};
use super::install::InstallPlan;
use crate::stats::{client, control};

/// `wave-host run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

/// `wave-host install`.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Install under this root instead of `/` (e.g. a package staging directory).
    #[arg(long, default_value = "/")]
    pub prefix: PathBuf,
    /// Print what would be installed; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `wave-host stats`.
#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// The control socket [default: the one in --config].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Configuration file naming the control socket.
    #[arg(long, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
    /// Print one JSON snapshot and exit.
    #[arg(long, conflicts_with = "listen")]
    pub json: bool,
    /// Serve the Prometheus text format at http://ADDR/metrics (loopback addresses only).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Seconds between refreshes of the terminal view.
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Refresh this many times, then exit (default: until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
}

/// `wave-host policy`.
#[derive(clap::Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    /// What to do.
    pub cmd: PolicyCmd,
    /// The control socket [default: the one in --config].
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Configuration file naming the control socket.
    #[arg(long, global = true, default_value = DEFAULT_PATH)]
    pub config: PathBuf,
}

/// `wave-host policy` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum PolicyCmd {
    /// Switch the running scheduling workload to policy NAME (fifo, shinjuku, fair) without
    /// restarting it; waits until the agent acknowledged the switch (exit 2 if it did not).
    Set {
        /// Policy name.
        name: String,
        /// A policy parameter, NAME=VALUE (repeatable); others take their defaults.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Show the policy in force and the workload's counters.
    Show,
}

/// `wave-host config`.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// Check this file and print the configuration it gives (exit 2 if it is refused).
    #[arg(long, value_name = "FILE")]
    pub check: Option<PathBuf>,
    /// Print the default file, every key documented.
    #[arg(long)]
    pub default: bool,
}

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("wave-host: {what}: {e}");
    ExitCode::from(2)
}

/// `wave-host run`.
pub fn run(a: &RunArgs) -> ExitCode {
    let cfg = match Config::load(&a.config) {
        Ok(c) => c,
        Err(e) => return fail("run", e),
    };
    match super::run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("run", e),
    }
}

/// `wave-host install`.
pub fn install(a: &InstallArgs) -> ExitCode {
    match InstallPlan::discover(a.prefix.clone()).apply(a.dry_run) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail("install", e),
    }
}

fn control_socket(socket: &Option<PathBuf>, config: &Path) -> Result<PathBuf, String> {
    if let Some(s) = socket {
        return Ok(s.clone());
    }
    if config.exists() {
        return Config::load(config).map(|c| c.control_socket);
    }
    Ok(Config::default().control_socket)
}

/// `wave-host policy`.
pub fn policy(a: &PolicyArgs) -> ExitCode {
    let socket = match control_socket(&a.socket, &a.config) {
        Ok(s) => s,
        Err(e) => return fail("policy", e),
    };
    let req = match &a.cmd {
        PolicyCmd::Show => control::Request::PolicyShow,
        PolicyCmd::Set { name, params } => {
            // Checked here for a quick answer; the shim checks again (its input is untrusted).
            if let Err(e) = wave_policy::registry::PolicyChoice::from_cli(name, None, params) {
                return fail("policy set", e);
            }
            control::Request::PolicySet {
                name: name.clone(),
                params: params.clone(),
            }
        }
    };
    // The line the shim parses: refuse here what it would refuse, with its words.
    if let Err(e) = control::Request::parse(&req.line()) {
        return fail("policy", e);
    }
    match control::query(&socket, req) {
        Ok(answer) => {
            print!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e) => fail("policy", e),
    }
}

/// `wave-host stats`.
pub fn stats(a: &StatsArgs) -> ExitCode {
    let socket = match control_socket(&a.socket, &a.config) {
        Ok(s) => s,
        Err(e) => return fail("stats", e),
    };
    let r = if a.json {
        control::query(&socket, control::Request::Json).map(|j| print!("{j}"))
    } else if let Some(addr) = &a.listen {
        client::listen(&socket, addr)
    } else {
        let secs = if a.interval.is_finite() {
            a.interval.clamp(0.05, 3600.0)
        } else {
            1.0
        };
        client::watch(&socket, Duration::from_secs_f64(secs), a.count)
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("stats", e),
    }
}

/// `wave-host config`.
pub fn config(a: &ConfigArgs) -> ExitCode {
    if a.default {
        print!("{DEFAULT_FILE}");
    }
    if let Some(f) = &a.check {
        match Config::load(f) {
            Ok(c) => println!("wave-host: {} is valid: {c:#?}", f.display()),
            Err(e) => return fail("config", e),
        }
    }
    if !a.default && a.check.is_none() {
        return fail("config", "pass --default or --check FILE");
    }
    ExitCode::SUCCESS
}
