//! Decoding `defmt` log frames against the firmware ELF's `.defmt` table, with `defmt-decoder`'s
//! rzCOBS stream decoder. Without a table (an ELF built without `defmt`, or unreadable), frames
//! are shown as hex dumps after a one-time warning. A frame that does not decode is shown as hex
//! too; decoding never stops the runner.

use std::path::Path;

use defmt_decoder::{Encoding, Table};

/// Turns frames into printable lines.
pub struct DefmtDecoder {
    table: Option<Table>,
    /// Why there is no table (for the warning).
    missing: String,
    warned: bool,
}

/// `ab cd ef …`, cut after 64 bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s: Vec<String> = bytes.iter().take(64).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 64 {
        s.push(format!("… (+{} bytes)", bytes.len() - 64));
    }
    s.join(" ")
}

impl DefmtDecoder {
    /// A decoder with `table`.
    pub fn with_table(table: Table) -> Self {
        Self {
            table: Some(table),
            missing: String::new(),
            warned: false,
        }
    }

    /// A decoder that hex-dumps frames, warning once with `reason`.
    pub fn without_table(reason: impl Into<String>) -> Self {
        Self {
            table: None,
            missing: reason.into(),
            warned: false,
        }
    }

    /// Reads the table from ELF bytes.
    pub fn from_elf(elf: &[u8]) -> Self {
        match Table::parse(elf) {
            Ok(Some(table)) => Self::with_table(table),
            Ok(None) => Self::without_table("the firmware ELF has no .defmt section"),
            Err(e) => {
                Self::without_table(format!("the firmware ELF's defmt table is unusable: {e}"))
            }
        }
    }

    /// Reads the table from an ELF file.
    pub fn from_elf_file(path: &Path) -> Self {
        match std::fs::read(path) {
            Ok(bytes) => Self::from_elf(&bytes),
            Err(e) => Self::without_table(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Whether a table was found.
    pub fn has_table(&self) -> bool {
        self.table.is_some()
    }

    /// Decodes one frame (the bytes between `0x01` and `0x00`) into lines.
    pub fn decode(&mut self, frame: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(table) = &self.table else {
            if !self.warned {
                self.warned = true;
                lines.push(format!(
                    "wave: warning: cannot decode defmt frames ({}); showing them as hex. Build \
                     the firmware with its defmt table, or decode the raw console with \
                     `defmt-print -e target/wave/wave-firmware.elf`",
                    self.missing
                ));
            }
            lines.push(format!(
                "[defmt frame, {} bytes] {}",
                frame.len(),
                hex(frame)
            ));
            return lines;
        };
        if table.encoding() != Encoding::Rzcobs && !self.warned {
            self.warned = true;
            lines.push(format!(
                "wave: warning: the firmware's defmt encoding is {:?}, not rzcobs as \
                 docs/firmware.md says; frames may not decode",
                table.encoding()
            ));
        }
        // A hostile frame can make defmt-decoder panic (it trusts length fields inside the
        // frame); the runner must survive any bytes, so a panic is caught and reported as an
        // undecodable frame.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut stream = table.new_stream_decoder();
            stream.received(frame);
            stream.received(&[0]);
            stream.decode().map(|f| {
                (
                    f.level().map(|l| l.as_str().to_uppercase()),
                    f.display_timestamp().map(|t| t.to_string()),
                    f.display_message().to_string(),
                )
            })
        }));
        let decoded = match decoded {
            Ok(r) => r.map_err(|e| format!("{e:?}")),
            Err(_) => Err("decoder panicked".to_string()),
        };
        match decoded {
            Ok((level, stamp, message)) => {
                let prefix = match (level, stamp) {
                    (Some(l), Some(t)) => format!("[{l} {t}] "),
                    (Some(l), None) => format!("[{l}] "),
                    (None, Some(t)) => format!("[{t}] "),
                    (None, None) => String::new(),
                };
                let mut message_lines = message.lines();
                lines.push(format!("{prefix}{}", message_lines.next().unwrap_or("")));
                let indent = " ".repeat(prefix.chars().count());
                lines.extend(message_lines.map(|l| format!("{indent}{l}")));
            }
            Err(e) => lines.push(format!(
                "wave: undecodable defmt frame ({e}, {} bytes): {}",
                frame.len(),
                hex(frame)
            )),
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::Console;

    /// defmt's own rzCOBS encoder (defmt 1.2 src/encoding/rzcobs.rs), for one whole frame.
    fn rzcobs(data: &[u8]) -> Vec<u8> {
        let (mut run, mut zeros, mut out) = (0u8, 0u8, Vec::new());
        for &byte in data {
            if run < 7 {
                if byte == 0 {
                    zeros |= 1 << run;
                } else {
                    out.push(byte);
                }
                run += 1;
                if run == 7 && zeros != 0 {
                    out.push(zeros);
                    run = 0;
                    zeros = 0;
                }
            } else if byte == 0 {
                out.push((run - 7) | 0x80);
                run = 0;
                zeros = 0;
            } else {
                out.push(byte);
                run += 1;
                if run == 134 {
                    out.push(0xff);
                    run = 0;
                    zeros = 0;
                }
            }
        }
        match run {
            0 => {}
            1..=6 => out.push((zeros | (0xff << run)) & 0x7f),
            _ => out.push((run - 7) | 0x80),
        }
        out
    }

    /// A table like the firmware's: a `core {=u8}` timestamp and a few messages.
    fn table() -> Table {
        serde_json::from_str(
            r#"{
              "timestamp": {"string": {"tag": "Timestamp", "string": "core {=u8}"}, "raw_symbol": "ts"},
              "entries": {
                "1": {"string": {"tag": "Info", "string": "agent {=u32} started"}, "raw_symbol": "a"},
                "2": {"string": {"tag": "Error", "string": "ring {=u16} overflow: {=str}"}, "raw_symbol": "b"},
                "3": {"string": {"tag": "Warn", "string": "slice {=[?]}"}, "raw_symbol": "c"},
                "4": {"string": {"tag": "Prim", "string": "{=u8}"}, "raw_symbol": "d"}
              },
              "bitflags": {},
              "encoding": "Rzcobs"
            }"#,
        )
        .expect("test table")
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x01];
        v.extend(rzcobs(payload));
        v.push(0x00);
        v
    }

    #[test]
    fn decodes_frames_with_level_and_core() {
        let mut console = Console::new(DefmtDecoder::with_table(table()));
        // index 1 (u16 LE), timestamp core=2, u32 = 7
        let mut stream = b"plain\n".to_vec();
        // The first frame as defmt's encoder sends it: with a leading 0x00.
        stream.extend([0x01, 0x00]);
        stream.extend(&framed(&[1, 0, 2, 7, 0, 0, 0])[1..]);
        stream.extend(framed(&[2, 0, 0, 3, 0, 4, 0, 0, 0, b'f', b'u', b'l', b'l']));
        let mut lines = Vec::new();
        for chunk in stream.chunks(3) {
            lines.extend(console.feed(chunk));
        }
        lines.extend(console.finish());
        assert_eq!(
            lines,
            vec![
                "plain",
                "[INFO core 2] agent 7 started",
                "[ERROR core 0] ring 3 overflow: full",
            ]
        );
    }

    #[test]
    fn undecodable_frames_are_shown_not_fatal() {
        let mut d = DefmtDecoder::with_table(table());
        // Unknown index 99; a string shorter than its length prefix; empty frame; invalid rzCOBS.
        for frame in [
            rzcobs(&[99, 0, 0]),
            rzcobs(&[2, 0, 0, 3, 0, 9, 0, 0, 0, b'a']),
            vec![],
            vec![0x05],
        ] {
            let lines = d.decode(&frame);
            assert_eq!(lines.len(), 1);
            assert!(
                lines[0].starts_with("wave: undecodable defmt frame"),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn random_frames_never_panic() {
        let mut d = DefmtDecoder::with_table(table());
        let mut x = 0x2545_f491u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            // Valid indices (the slice one too, whose length prefix defmt-decoder trusts) with
            // random arguments.
            let mut payload = vec![[1u8, 2, 3, 4][(next() % 4) as usize], 0];
            payload.extend((0..len).map(|_| next() as u8));
            let _ = d.decode(&rzcobs(&payload));
            let raw: Vec<u8> = (0..len).map(|_| (next() as u8).max(1)).collect();
            let _ = d.decode(&raw);
        }
    }

    #[test]
    fn missing_table_from_a_non_defmt_elf() {
        let elf = crate::elf::synthetic_elf(&[(0x4008_0000, b"X", 1)]);
        let mut d = DefmtDecoder::from_elf(&elf);
        assert!(!d.has_table());
        let lines = d.decode(&[1, 2, 3]);
        assert!(lines[0].contains("warning"));
        assert_eq!(lines[1], "[defmt frame, 3 bytes] 01 02 03");
        let mut d = DefmtDecoder::from_elf_file(Path::new("/nonexistent/wave.elf"));
        assert!(d.decode(&[1]).len() == 2);
    }
}
