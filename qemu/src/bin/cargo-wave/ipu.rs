//! `cargo wave ipu`: the emulated IPU unit's front end (options to [`wave_qemu::ipu_unit`],
//! the outcome to the documented exit code).

use std::time::Duration;

use crate::cli::IpuArgs;

/// Runs the unit; the exit code is the boot verdict's.
pub fn run(args: IpuArgs) -> anyhow::Result<u8> {
    let config =
        wave_host_shim::service::Config::load(&args.config).map_err(|e| anyhow::anyhow!(e))?;
    let work_dir = std::env::var_os("RUNTIME_DIRECTORY")
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("wave-ipu-{}", std::process::id())));
    let unit = wave_qemu::ipu_unit::IpuUnit {
        config,
        firmware: args.firmware,
        work_dir: work_dir.clone(),
        wait: Duration::from_secs(args.wait),
    };
    let outcome = wave_qemu::ipu_unit::run(&unit);
    if std::env::var_os("RUNTIME_DIRECTORY").is_none() {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    let outcome = outcome?;
    let verdict = outcome.verdict(&wave_qemu::ipu_unit::boot_config(&unit.config));
    println!("{}", verdict.explain());
    Ok(verdict.exit_code() as u8)
}
