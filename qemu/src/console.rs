//! The serial console: splitting the byte stream into text lines and `defmt` frames
//! (docs/firmware.md, "Console"), turning both into printable lines, and reading the boot report.
//!
//! Framing: outside a frame, `0x01` starts a frame and every other byte is text (lines end at
//! `\n`; a stray `0x00` is dropped). Inside a frame every byte up to the next `0x00` belongs to the
//! frame, except zeros right after the `0x01` (skipped: see [`Demux::push`]). Nothing here can fail or panic on any input: over-long frames and lines are cut and
//! reported, invalid UTF-8 is replaced.

use crate::defmt::DefmtDecoder;

/// Starts a `defmt` frame.
pub const FRAME_START: u8 = 0x01;
/// Ends a `defmt` frame.
pub const FRAME_END: u8 = 0x00;
/// A frame longer than this is not a frame (the firmware's are far smaller): it is dropped.
pub const MAX_FRAME: usize = 16 * 1024;
/// A text line longer than this is broken.
pub const MAX_LINE: usize = 4096;

/// One unit of console output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A text line, without its line ending.
    Text(String),
    /// A complete `defmt` frame (rzCOBS bytes, without the `0x01`/`0x00` delimiters).
    Frame(Vec<u8>),
    /// Something the runner had to drop, explained.
    Dropped(String),
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Text,
    Frame,
    /// An over-long frame: skip to its `0x00`.
    SkipFrame(usize),
}

/// The byte-stream demultiplexer. Feed it reads of any size; it keeps partial lines and frames
/// across calls.
#[derive(Debug, Default)]
pub struct Demux {
    state: State,
    line: Vec<u8>,
    frame: Vec<u8>,
}

fn text_line(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' && c != '\x1b' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

impl Demux {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes `bytes`, appending the complete events to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        for &b in bytes {
            match self.state {
                State::Text => match b {
                    FRAME_START => {
                        self.state = State::Frame;
                        self.frame.clear();
                    }
                    FRAME_END => {}
                    b'\n' => out.push(Event::Text(text_line(&std::mem::take(&mut self.line)))),
                    _ => {
                        self.line.push(b);
                        if self.line.len() >= MAX_LINE {
                            out.push(Event::Text(text_line(&std::mem::take(&mut self.line))));
                        }
                    }
                },
                State::Frame => {
                    if b == FRAME_END && self.frame.is_empty() {
                        // Leading zeros: defmt's rzCOBS encoder emits one 0x00 before its very
                        // first frame (so the wire shows 0x01 0x00 <frame> 0x00). An encoded
                        // frame is never empty, so skipping them loses nothing; defmt-decoder's
                        // own stream decoder skips them the same way.
                    } else if b == FRAME_END {
                        self.state = State::Text;
                        out.push(Event::Frame(std::mem::take(&mut self.frame)));
                    } else if self.frame.len() >= MAX_FRAME {
                        self.frame.clear();
                        self.state = State::SkipFrame(MAX_FRAME + 1);
                    } else {
                        self.frame.push(b);
                    }
                }
                State::SkipFrame(n) => {
                    if b == FRAME_END {
                        self.state = State::Text;
                        out.push(Event::Dropped(format!(
                            "dropped a {n}-byte defmt frame (longer than {MAX_FRAME} bytes: \
                             garbage on the line?)"
                        )));
                    } else {
                        self.state = State::SkipFrame(n + 1);
                    }
                }
            }
        }
    }

    /// End of stream: flushes a partial line and reports an unfinished frame.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        match std::mem::take(&mut self.state) {
            State::Text => {}
            State::Frame => out.push(Event::Dropped(format!(
                "the output ended inside a defmt frame ({} bytes, no closing 0x00)",
                std::mem::take(&mut self.frame).len()
            ))),
            State::SkipFrame(n) => out.push(Event::Dropped(format!(
                "the output ended inside an over-long defmt frame ({n} bytes)"
            ))),
        }
        if !self.line.is_empty() {
            out.push(Event::Text(text_line(&std::mem::take(&mut self.line))));
        }
    }
}

/// The console as a whole: demultiplexer + `defmt` decoder, producing printable lines.
pub struct Console {
    demux: Demux,
    defmt: DefmtDecoder,
    events: Vec<Event>,
}

impl Console {
    pub fn new(defmt: DefmtDecoder) -> Self {
        Self {
            demux: Demux::new(),
            defmt,
            events: Vec::new(),
        }
    }

    fn render(&mut self, lines: &mut Vec<String>) {
        for event in self.events.drain(..) {
            match event {
                Event::Text(t) => lines.push(t),
                Event::Frame(f) => lines.extend(self.defmt.decode(&f)),
                Event::Dropped(why) => lines.push(format!("wave: {why}")),
            }
        }
    }

    /// Consumes bytes read from the serial port; returns the lines they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        self.demux.push(bytes, &mut self.events);
        self.render(&mut lines);
        lines
    }

    /// End of output; returns the last lines.
    pub fn finish(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        self.demux.finish(&mut self.events);
        self.render(&mut lines);
        lines
    }
}

/// The boot report's `cores online: N/M` (docs/firmware.md, "The boot report"): `Some((N, M))`
/// from the first such line.
pub fn cores_online(console: &str) -> Option<(u32, u32)> {
    console.lines().find_map(|line| {
        let rest = line.split("cores online:").nth(1)?.trim();
        let (up, total) = rest.split_once('/')?;
        let total: String = total.chars().take_while(char::is_ascii_digit).collect();
        Some((up.trim().parse().ok()?, total.parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demux_all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut d = Demux::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out);
        }
        d.finish(&mut out);
        out
    }

    fn text(s: &str) -> Event {
        Event::Text(s.into())
    }

    #[test]
    fn plain_text_passes_through() {
        assert_eq!(
            demux_all(&[b"wave: boot report\r\n  cores online: 2/2\n"]),
            vec![text("wave: boot report"), text("  cores online: 2/2")]
        );
    }

    #[test]
    fn frames_and_text_split_across_reads() {
        let stream: &[u8] = b"hello\n\x01\x05\x01\x02\x00ab\x01\x07\x00c\n";
        let whole = demux_all(&[stream]);
        assert_eq!(
            whole,
            vec![
                text("hello"),
                Event::Frame(vec![5, 1, 2]),
                Event::Frame(vec![7]),
                text("abc"),
            ]
        );
        // Every way of splitting it in two, and byte by byte, gives the same events.
        for cut in 0..=stream.len() {
            assert_eq!(
                demux_all(&[&stream[..cut], &stream[cut..]]),
                whole,
                "cut {cut}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(demux_all(&bytes), whole);
    }

    #[test]
    fn leading_zeros_of_a_frame_are_skipped() {
        // What defmt's encoder puts on the wire for its first frame: 0x01 0x00 <frame> 0x00,
        // where the frame itself may start with 0x01.
        let out = demux_all(&[b"boot\r\n\x01\x00\x01\xab\x7f\x00\x01\x02\x00text\n"]);
        assert_eq!(
            out,
            vec![
                text("boot"),
                Event::Frame(vec![0x01, 0xab, 0x7f]),
                Event::Frame(vec![0x02]),
                text("text"),
            ]
        );
    }

    #[test]
    fn garbage_is_survived_and_reported() {
        // Stray 0x00, invalid UTF-8, control bytes, an unterminated frame at the end.
        let out = demux_all(&[b"\x00ok\xff\xfe\x07\n\x01\x09\x09"]);
        assert_eq!(out[0], text("ok\u{fffd}\u{fffd}\u{fffd}"));
        assert!(matches!(&out[1], Event::Dropped(m) if m.contains("ended inside a defmt frame")));

        let mut long = vec![FRAME_START];
        long.extend(std::iter::repeat_n(0x55, MAX_FRAME + 10));
        long.extend(b"\x00after\n");
        let out = demux_all(&[&long]);
        assert!(matches!(&out[0], Event::Dropped(m) if m.contains("longer than")));
        assert_eq!(out[1], text("after"));

        let out = demux_all(&[&vec![b'x'; MAX_LINE * 2 + 3]]);
        assert_eq!(out.len(), 3);

        let mut x = 0x9e37_79b9u32;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut console = Console::new(DefmtDecoder::without_table("test"));
        for chunk in noise.chunks(977) {
            console.feed(chunk);
        }
        console.finish();
    }

    #[test]
    fn frames_without_a_table_become_hex_dumps() {
        let mut console = Console::new(DefmtDecoder::without_table("no .defmt section"));
        let lines = console.feed(b"\x01\xab\xcd\x00text\n");
        assert!(
            lines[0].contains("warning") && lines[0].contains("no .defmt section"),
            "{lines:?}"
        );
        assert!(lines[1].contains("ab cd"), "{lines:?}");
        assert_eq!(lines[2], "text");
        // The warning is printed once.
        let lines = console.feed(b"\x01\x01\x00");
        assert_eq!(lines.len(), 1, "{lines:?}");
    }

    #[test]
    fn reads_cores_online() {
        let report =
            "wave: boot report\n  cpu 0 mpidr 0x0 online (boot core)\n  cores online: 3/4\n";
        assert_eq!(cores_online(report), Some((3, 4)));
        assert_eq!(cores_online("  cores online: 4/4"), Some((4, 4)));
        assert_eq!(
            cores_online("[INFO core 0] cores online: 1/1 (x)"),
            Some((1, 1))
        );
        assert_eq!(cores_online("cores online: x/4"), None);
        assert_eq!(cores_online("nothing"), None);
    }
}
