//! The runner's ivshmem sockets: in a private directory (mode 0700, owned by this user:
//! `$XDG_RUNTIME_DIR/wave/`, `/run/wave/` as root, otherwise a fresh `/tmp/wave-<random>/`),
//! with unguessable names, and removed again on every way out the runner controls: the end of
//! the run, an error, Ctrl-C, SIGTERM or SIGHUP ([`install_signal_cleanup`]). A pre-created
//! file elsewhere cannot block a run, and another user cannot reach the socket (the server also
//! checks the peer's credentials).

use std::fs::DirBuilder;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Paths to remove when the runner ends: sockets, and a temporary directory (removed last).
static CREATED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn created() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    CREATED.lock().unwrap_or_else(|e| e.into_inner())
}

/// 64 random bits from the kernel.
fn random() -> io::Result<u64> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Checks that `dir` is a real directory (not a symlink), owned by us, mode 0700 or stricter.
fn check_private(dir: &Path) -> io::Result<()> {
    let m = std::fs::symlink_metadata(dir)?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.file_type().is_dir() || m.uid() != me || m.mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "{} is not a private directory (owner uid {}, mode {:o}; it must be a directory owned \
             by uid {me} with mode 700): remove it, or fix it with `chmod 700`",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

/// A private directory under `base` named `name` (created with mode 0700 if missing).
fn private_under(base: &Path, name: &str) -> io::Result<PathBuf> {
    let dir = base.join(name);
    match DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    check_private(&dir)?;
    Ok(dir)
}

/// The directory the runner's sockets go in (see the module doc).
pub fn socket_dir() -> io::Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if x.is_absolute() && x.is_dir() {
            return private_under(&x, "wave");
        }
    }
    if nix::unistd::geteuid().is_root() {
        return private_under(Path::new("/run"), "wave");
    }
    // A fresh directory with an unguessable name, created exclusively (as mkdtemp does),
    // once per runner process.
    static TMP: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(d) = TMP.get() {
        return Ok(d.clone());
    }
    let dir = std::env::temp_dir().join(format!("wave-{:016x}", random()?));
    DirBuilder::new().mode(0o700).create(&dir)?;
    check_private(&dir)?;
    created().insert(0, dir.clone());
    Ok(TMP.get_or_init(|| dir).clone())
}

/// A fresh, unguessable socket path in [`socket_dir`], removed at exit ([`cleanup`]).
pub fn socket_path() -> io::Result<PathBuf> {
    let dir = socket_dir()?;
    let path = dir.join(format!(
        "ipu-{}-{:016x}.sock",
        std::process::id(),
        random()?
    ));
    created().push(path.clone());
    Ok(path)
}

/// Removes `path` now (the run that used it ended) and forgets it.
pub fn release(path: &Path) {
    let _ = std::fs::remove_file(path);
    created().retain(|p| p != path);
}

/// Removes every socket and temporary directory the runner created and still holds.
pub fn cleanup() {
    let mut c = created();
    for p in c.iter().rev() {
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_dir(p);
    }
    c.clear();
}

/// Call first in `main`, before any other thread exists: blocks SIGINT, SIGTERM and SIGHUP in
/// every thread and handles them in one: remove what [`cleanup`] removes, then exit with
/// 128 + the signal (QEMU dies with the runner: it runs with a parent-death signal).
pub fn install_signal_cleanup() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            cleanup();
            eprintln!("wave: {sig:?}: stopped (QEMU ends with the runner; sockets removed)");
            std::process::exit(128 + sig as i32);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_private_unguessable_and_removed() {
        let a = socket_path().unwrap();
        let b = socket_path().unwrap();
        assert_ne!(a, b);
        let dir = a.parent().unwrap();
        check_private(dir).unwrap();
        std::fs::write(&a, b"x").unwrap();
        release(&a);
        assert!(!a.exists());
    }

    #[test]
    fn a_shared_directory_is_refused() {
        let d = std::env::temp_dir().join(format!("wave-test-{:016x}", random().unwrap()));
        DirBuilder::new().mode(0o777).create(&d).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let e = check_private(&d).unwrap_err().to_string();
        std::fs::remove_dir(&d).unwrap();
        assert!(e.contains("not a private directory"), "{e}");
    }
}
