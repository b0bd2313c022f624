//! Messages carried in ring entries: tags, the link-test request/response, their checksum and
//! transform, and decoders that count what they reject (the IPU's echo service that answers
//! link-test requests is `wave_policy::echo`).
//!
//! Everything here works on an [`EntryBody`] already copied out of shared memory. Decoders
//! never panic: they check tag, length, reserved bytes, checksum and return a typed error,
//! bumping the matching counter in [`DecodeStats`]. See `docs/abi.md`, "Messages".

use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::Kind;
use crate::ring::{EntryBody, PAYLOAD_SIZE};
use crate::subsystem::{RingDesc, Subsystem};

/// The link-test subsystem (`docs/abi.md`, "Link test"): requests host→IPU, responses back;
/// no blocks, no extra vectors.
pub const LINK_TEST: Subsystem = Subsystem {
    name: "echo",
    to_ipu: RingDesc {
        kind: Kind::RingTestRequest,
        name: "RingTestRequest",
        optional: false,
    },
    to_host: RingDesc {
        kind: Kind::RingTestResponse,
        name: "RingTestResponse",
        optional: false,
    },
    blocks: &[],
    extra_vectors: 0,
};

/// Link-test request (host→IPU).
pub const TAG_TEST_REQUEST: u16 = 0x0101;
/// Link-test response (IPU→host).
pub const TAG_TEST_RESPONSE: u16 = 0x0102;
/// Payload words carried by a link-test message.
pub const TEST_WORDS: usize = 4;

/// Link-test payload (48 bytes, all little-endian).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct TestPayload {
    /// Sequence number chosen by the host; the response carries the request's.
    pub seq: U64,
    /// Data words.
    pub words: [U64; TEST_WORDS],
    /// [`test_checksum`] of tag, seq and words.
    pub checksum: U64,
}

const _: () = assert!(core::mem::size_of::<TestPayload>() == PAYLOAD_SIZE);
const _: () = assert!(core::mem::offset_of!(TestPayload, words) == 8);
const _: () = assert!(core::mem::offset_of!(TestPayload, checksum) == 40);

/// A decoded link-test message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestMessage {
    /// Sequence number.
    pub seq: u64,
    /// Data words.
    pub words: [u64; TEST_WORDS],
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a (64-bit) over the little-endian bytes of `tag` (2 bytes), `seq` (8) and `words`
/// (4 × 8): 42 bytes in that order.
pub fn test_checksum(tag: u16, seq: u64, words: &[u64; TEST_WORDS]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(FNV_PRIME);
        }
    };
    eat(&tag.to_le_bytes());
    eat(&seq.to_le_bytes());
    for w in words {
        eat(&w.to_le_bytes());
    }
    h
}

/// The transform the IPU applies: `out[i] = rotl(w[i], 13) ^ (seq + i)` (wrapping add,
/// `i` = 0..3). Its inverse is easy, its output depends on every input bit and on the slot.
pub fn test_transform(seq: u64, words: &[u64; TEST_WORDS]) -> [u64; TEST_WORDS] {
    let mut out = [0u64; TEST_WORDS];
    for (i, (o, w)) in out.iter_mut().zip(words).enumerate() {
        *o = w.rotate_left(13) ^ seq.wrapping_add(i as u64);
    }
    out
}

/// Encodes a link-test message with tag `tag`.
pub fn encode_test(tag: u16, seq: u64, words: &[u64; TEST_WORDS]) -> EntryBody {
    let p = TestPayload {
        seq: U64::new(seq),
        words: words.map(U64::new),
        checksum: U64::new(test_checksum(tag, seq, words)),
    };
    EntryBody::new(tag, 0, p.as_bytes())
}

/// Why an entry was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Tag not the one expected on this ring.
    BadTag(u16),
    /// `len` not what the tag requires.
    BadLength(u16),
    /// `aux` or payload bytes past `len` are not zero.
    Reserved,
    /// Checksum mismatch.
    Checksum,
}

/// Decoder counters: one per rejection reason, plus accepted entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Entries accepted.
    pub ok: u64,
    /// Wrong tag.
    pub bad_tag: u64,
    /// Wrong length.
    pub bad_length: u64,
    /// Non-zero reserved bytes.
    pub reserved: u64,
    /// Checksum mismatch.
    pub checksum: u64,
}

impl DecodeStats {
    /// Entries rejected for any reason.
    pub fn invalid(&self) -> u64 {
        self.bad_tag + self.bad_length + self.reserved + self.checksum
    }
    fn count(&mut self, r: &Result<TestMessage, DecodeError>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(DecodeError::BadTag(_)) => self.bad_tag += 1,
            Err(DecodeError::BadLength(_)) => self.bad_length += 1,
            Err(DecodeError::Reserved) => self.reserved += 1,
            Err(DecodeError::Checksum) => self.checksum += 1,
        }
    }
}

/// Decodes a link-test message with tag `tag` (no counting).
pub fn decode_test(tag: u16, body: &EntryBody) -> Result<TestMessage, DecodeError> {
    if body.tag.get() != tag {
        return Err(DecodeError::BadTag(body.tag.get()));
    }
    if body.len.get() as usize != PAYLOAD_SIZE {
        return Err(DecodeError::BadLength(body.len.get()));
    }
    if body.aux.get() != 0 {
        return Err(DecodeError::Reserved);
    }
    let p = TestPayload::read_from_bytes(&body.payload).map_err(|_| DecodeError::BadLength(0))?;
    let seq = p.seq.get();
    let words = p.words.map(|w| w.get());
    if p.checksum.get() != test_checksum(tag, seq, &words) {
        return Err(DecodeError::Checksum);
    }
    Ok(TestMessage { seq, words })
}

/// A counting decoder for one tag.
#[derive(Clone, Copy, Debug)]
pub struct TestDecoder {
    tag: u16,
    /// Counters.
    pub stats: DecodeStats,
}

impl TestDecoder {
    /// A decoder for `tag`.
    pub fn new(tag: u16) -> Self {
        Self {
            tag,
            stats: DecodeStats::default(),
        }
    }
    /// Decodes and counts.
    pub fn decode(&mut self, body: &EntryBody) -> Result<TestMessage, DecodeError> {
        let r = decode_test(self.tag, body);
        self.stats.count(&r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_transform() {
        let w = [1, 2, 3, u64::MAX];
        let b = encode_test(TAG_TEST_REQUEST, 42, &w);
        let m = decode_test(TAG_TEST_REQUEST, &b).unwrap();
        assert_eq!(m, TestMessage { seq: 42, words: w });
        let t = test_transform(42, &w);
        assert_eq!(t[0], (1u64 << 13) ^ 42);
        assert_eq!(t[3], u64::MAX ^ 45);
        assert_eq!(
            decode_test(TAG_TEST_RESPONSE, &b),
            Err(DecodeError::BadTag(TAG_TEST_REQUEST))
        );
    }

    #[test]
    fn checksum_vector() {
        // Known-answer value, also given in docs/abi.md so a second implementation can check.
        assert_eq!(
            test_checksum(TAG_TEST_REQUEST, 1, &[0, 0, 0, 0]),
            KNOWN_CHECKSUM
        );
    }

    pub(crate) const KNOWN_CHECKSUM: u64 = 0x5375_b9fe_14c0_9436;

    #[test]
    fn decoder_counts_each_reason() {
        let mut d = TestDecoder::new(TAG_TEST_REQUEST);
        let good = encode_test(TAG_TEST_REQUEST, 7, &[9; 4]);
        let mut bad_len = good;
        bad_len.len = 47.into();
        let mut bad_aux = good;
        bad_aux.aux = 1.into();
        let mut bad_sum = good;
        bad_sum.payload[10] ^= 1;
        for b in [good, bad_len, bad_aux, bad_sum, EntryBody::ZERO] {
            let _ = d.decode(&b);
        }
        assert_eq!(
            d.stats,
            DecodeStats {
                ok: 1,
                bad_tag: 1,
                bad_length: 1,
                reserved: 1,
                checksum: 1
            }
        );
    }
}
