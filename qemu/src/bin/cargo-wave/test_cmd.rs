//! `cargo wave test`: every test of the project in three stages (host unit tests, the image
//! build, the QEMU end-to-end tests), with a heading per stage and a closing summary that adds
//! up cargo's `test result:` lines.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::cli::TestArgs;
use anyhow::Context;

/// Totals parsed from `test result: ok. 5 passed; 0 failed; 1 ignored; …` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    /// Adds the counts of one libtest summary line, if `line` is one.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }

    fn plus(self, o: Counts) -> Counts {
        Counts {
            passed: self.passed + o.passed,
            failed: self.failed + o.failed,
            ignored: self.ignored + o.ignored,
        }
    }
}

struct Stage {
    name: &'static str,
    ok: Option<bool>,
    counts: Counts,
}

fn heading(n: usize, text: &str) {
    println!();
    println!("==== wave test [{n}/3]: {text} ====");
    let _ = std::io::stdout().flush();
}

/// Runs `cargo args` from the workspace root, copying its stdout through while counting tests.
fn cargo_test(root: &std::path::Path, args: &[&str]) -> anyhow::Result<(bool, Counts)> {
    println!("wave: $ cargo {}", args.join(" "));
    let mut child = Command::new(wave_qemu::firmware::cargo())
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start cargo; is the Rust toolchain on PATH?")?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().expect("piped");
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        counts.add_line(&line);
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    let status = child.wait().context("waiting for cargo")?;
    Ok((status.success(), counts))
}

pub fn run(_args: TestArgs) -> anyhow::Result<u8> {
    let start = Instant::now();
    let root = wave_qemu::workspace::root()?;
    let mut stages = [
        Stage {
            name: "host unit tests",
            ok: None,
            counts: Counts::default(),
        },
        Stage {
            name: "firmware image",
            ok: None,
            counts: Counts::default(),
        },
        Stage {
            name: "QEMU end-to-end tests",
            ok: None,
            counts: Counts::default(),
        },
    ];

    heading(
        1,
        "host unit tests (cargo test --workspace --exclude wave-tests)",
    );
    let (ok, counts) = cargo_test(&root, &["test", "--workspace", "--exclude", "wave-tests"])?;
    stages[0].ok = Some(ok);
    stages[0].counts = counts;

    heading(2, "firmware image (cargo wave image)");
    match wave_qemu::build_image(None) {
        Ok(img) => {
            println!(
                "wave: image ok: {} ({} bytes), {}",
                img.bin.display(),
                img.bin_len,
                img.elf.display()
            );
            stages[1].ok = Some(true);
        }
        Err(e) => {
            println!("wave: error: {e}");
            stages[1].ok = Some(false);
        }
    }

    heading(
        3,
        "QEMU end-to-end tests (cargo test -p wave-tests -- --test-threads=1)",
    );
    if stages[1].ok == Some(true) {
        match wave_qemu::install::qemu() {
            Ok(q) => {
                println!("wave: using {}", q.path.display());
                let (ok, counts) = cargo_test(
                    &root,
                    &["test", "-p", "wave-tests", "--", "--test-threads=1"],
                )?;
                stages[2].ok = Some(ok);
                stages[2].counts = counts;
            }
            Err(e) => {
                println!("wave: error: {e}");
                stages[2].ok = Some(false);
            }
        }
    } else {
        println!("wave: skipped: there is no image to boot (stage 2 failed)");
    }

    println!();
    println!(
        "==== wave test summary ({:.1} s) ====",
        start.elapsed().as_secs_f64()
    );
    let mut total = Counts::default();
    for s in &stages {
        let state = match s.ok {
            Some(true) => "ok",
            Some(false) => "FAILED",
            None => "skipped",
        };
        if s.counts == Counts::default() {
            println!("  {:<24} {state}", s.name);
        } else {
            println!(
                "  {:<24} {state} ({} passed, {} failed, {} ignored)",
                s.name, s.counts.passed, s.counts.failed, s.counts.ignored
            );
        }
        total = total.plus(s.counts);
    }
    let all_ok = stages.iter().all(|s| s.ok == Some(true));
    // Counts failed stages that produced no test count (a build error) as one failure each,
    // so the closing line never claims "0 failed" for a failed run.
    let silent_failures = stages
        .iter()
        .filter(|s| s.ok == Some(false) && s.counts.failed == 0)
        .count() as u64;
    println!(
        "wave-test: {} passed, {} failed",
        total.passed,
        total.failed + silent_failures
    );
    // 1 = some test or stage failed (cargo test's convention).
    Ok(if all_ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_summaries() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("test foo ... ok");
        c.add_line("running 3 tests");
        assert_eq!(
            c,
            Counts {
                passed: 15,
                failed: 2,
                ignored: 1
            }
        );
    }
}
