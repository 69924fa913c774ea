//! The cl100k vocabulary as hash maps from token bytes to rank, and the count of one
//! pre-tokenized chunk by tiktoken's rules.

use std::sync::LazyLock;

use bpe_openai::byte_pair_encoding::BytePairEncoding;
use rustc_hash::FxHashMap;

/// Chunks of up to this many bytes that are not a token are merged here, in a few hundred
/// nanoseconds and without allocating; longer ones go to `bpe`'s linear-time counter, which
/// allocates per call but never slows down quadratically. Measured on the chunks of the
/// documentation corpus that are not tokens: the merge is 2-3 times faster up to 8 bytes,
/// faster at 9-10, even at 11-12 and 1.2-1.5 times slower at 13-16.
const MERGE_MAX: usize = 12;

/// The cl100k vocabulary.
///
/// Look-ups are most of the time a count takes, so the ranks are kept by length, with the
/// bytes as a little-endian integer for a key: integer keys hash and compare faster than
/// slices (no pointer to follow), small tables stay in cache, and a merge can build the key of
/// two joined parts from theirs with a shift.
pub(super) struct Vocab {
    /// The data shipped with `bpe-openai`: token id `i` is tiktoken's rank `i`.
    bpe: &'static BytePairEncoding,
    /// The ranks of the tokens of 2 bytes, indexed by their key (`u32::MAX`: not a token).
    pairs: Box<[u32]>,
    /// The ranks of the tokens of 3 to 8 bytes, one map per length.
    short: [FxHashMap<u64, u32>; 6],
    /// The ranks of the tokens of 9 to 16 bytes, one map per length.
    medium: [FxHashMap<u128, u32>; 8],
    /// The ranks of the longer tokens.
    long: FxHashMap<&'static [u8], u32>,
    /// The length of the longest token: longer byte strings need no look-up.
    max_token_len: usize,
}

/// Tokens of up to this many bytes have an integer key, and so have all the parts of a merge
/// (`MERGE_MAX` is at most this).
const KEYED_MAX: usize = 16;
const _: () = assert!(MERGE_MAX <= KEYED_MAX);

/// `bytes` (1 to 16 of them) as a little-endian integer: two overlapping loads, no copy.
#[inline]
fn key(bytes: &[u8]) -> u128 {
    let len = bytes.len();
    debug_assert!((1..=KEYED_MAX).contains(&len));
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let half = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    if len >= 8 {
        u128::from(word(0)) | u128::from(word(len - 8)) << (8 * (len - 8))
    } else if len >= 4 {
        u128::from(half(0)) | u128::from(half(len - 4)) << (8 * (len - 4))
    } else {
        bytes
            .iter()
            .rev()
            .fold(0, |key, &b| key << 8 | u128::from(b))
    }
}

static VOCAB: LazyLock<Vocab> = LazyLock::new(|| {
    let bpe = &bpe_openai::cl100k_base().bpe;
    let num_tokens = u32::try_from(bpe.num_tokens()).expect("cl100k has about 100k tokens");
    let mut vocab = Vocab {
        bpe,
        pairs: vec![u32::MAX; 1 << 16].into_boxed_slice(),
        short: Default::default(),
        medium: Default::default(),
        long: FxHashMap::default(),
        max_token_len: 0,
    };
    let mut singles = 0;
    for rank in 0..num_tokens {
        let bytes = bpe.token_bytes(rank);
        vocab.max_token_len = vocab.max_token_len.max(bytes.len());
        match bytes.len() {
            1 => singles += 1,
            2 => vocab.pairs[key(bytes) as usize] = rank,
            len @ 3..=8 => {
                vocab.short[len - 3].insert(key(bytes) as u64, rank);
            }
            len @ 9..=KEYED_MAX => {
                vocab.medium[len - 9].insert(key(bytes), rank);
            }
            _ => {
                vocab.long.insert(bytes, rank);
            }
        }
    }
    // `Vocab::chunk_count` counts any single byte as one token, and merges never ask for the
    // rank of one byte: every byte must be a token (byte-level BPE).
    assert_eq!(singles, 256, "every byte is a cl100k token");
    vocab
});

/// The vocabulary, built on first use (once per process).
pub(super) fn vocab() -> &'static Vocab {
    &VOCAB
}

impl Vocab {
    /// The rank of the token of `len` bytes (2 to [`KEYED_MAX`]) whose key is `key`, or
    /// `u32::MAX` when there is none.
    #[inline]
    fn keyed_rank(&self, len: usize, key: u128) -> u32 {
        let found = match len {
            2 => return self.pairs[key as usize],
            3..=8 => self.short[len - 3].get(&(key as u64)),
            _ => self.medium[len - 9].get(&key),
        };
        found.copied().unwrap_or(u32::MAX)
    }

    /// The rank of the token `bytes` (at least 2 bytes), or `u32::MAX` when they are not one.
    #[inline]
    fn rank(&self, bytes: &[u8]) -> u32 {
        match bytes.len() {
            len @ 2..=KEYED_MAX => self.keyed_rank(len, key(bytes)),
            len if len <= self.max_token_len => self.long.get(bytes).copied().unwrap_or(u32::MAX),
            _ => u32::MAX,
        }
    }

    /// The tokens of one chunk of the pre-tokenizer, as tiktoken's `encode_ordinary` makes
    /// them: a chunk that is a token is that token, any other is byte-pair merged.
    #[inline]
    pub(super) fn chunk_count(&self, chunk: &[u8]) -> usize {
        match chunk.len() {
            0 => 0,
            1 => 1,
            _ if self.rank(chunk) != u32::MAX => 1,
            len if len <= MERGE_MAX => self.merge_count(chunk),
            _ => self.bpe.count(chunk),
        }
    }

    /// The tokens of `piece` (2 to [`MERGE_MAX`] bytes) by tiktoken's merge rule: start from
    /// single bytes and repeatedly merge the adjacent pair whose concatenation is the token
    /// of lowest rank (the leftmost such pair on a tie) until no pair is a token.
    fn merge_count(&self, piece: &[u8]) -> usize {
        let len = piece.len();
        debug_assert!((2..=MERGE_MAX).contains(&len));
        // Part `k` is `piece[starts[k]..starts[k + 1]]` and `keys[k]` its key; `ranks[k]` is
        // the rank of part `k` joined with part `k + 1`. Fixed arrays: no allocation for the
        // short chunks that are most of the misses.
        let mut starts = [0u8; MERGE_MAX + 1];
        let mut keys = [0u128; MERGE_MAX];
        let mut ranks = [u32::MAX; MERGE_MAX];
        for (k, start) in starts.iter_mut().enumerate().take(len + 1) {
            *start = k as u8;
        }
        for (k, &b) in piece.iter().enumerate() {
            keys[k] = u128::from(b);
        }
        for (k, rank) in ranks.iter_mut().enumerate().take(len - 1) {
            *rank = self.pairs[usize::from(piece[k]) | usize::from(piece[k + 1]) << 8];
        }
        // The key of parts `k` and `k + 1` joined, and its length.
        let joined = |starts: &[u8], keys: &[u128], k: usize| {
            let (start, mid) = (usize::from(starts[k]), usize::from(starts[k + 1]));
            let key = keys[k] | keys[k + 1] << (8 * (mid - start));
            (key, usize::from(starts[k + 2]) - start)
        };
        // The rank of parts `k` and `k + 1` joined.
        let join = |starts: &[u8], keys: &[u128], k: usize| {
            let (key, len) = joined(starts, keys, k);
            self.keyed_rank(len, key)
        };
        let mut parts = len;
        loop {
            let (mut best, mut at) = (u32::MAX, 0);
            for (k, &rank) in ranks[..parts - 1].iter().enumerate() {
                if rank < best {
                    best = rank;
                    at = k;
                }
            }
            if best == u32::MAX {
                return parts;
            }
            // Part `at` absorbs part `at + 1`; the parts and pairs after it move down one
            // place, and the two pairs that hold the new part are looked up again.
            keys[at] = joined(&starts, &keys, at).0;
            starts.copy_within(at + 2..=parts, at + 1);
            if at + 2 < parts {
                keys.copy_within(at + 2..parts, at + 1);
                ranks.copy_within(at + 2..parts - 1, at + 1);
            }
            parts -= 1;
            ranks[at] = if at + 1 < parts {
                join(&starts, &keys, at)
            } else {
                u32::MAX
            };
            if at > 0 {
                ranks[at - 1] = join(&starts, &keys, at - 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keys_are_the_bytes_in_little_endian_order() {
        for len in 1..=KEYED_MAX {
            let bytes: Vec<u8> = (1..=len as u8).map(|b| b.wrapping_mul(37)).collect();
            let expected = bytes
                .iter()
                .enumerate()
                .fold(0u128, |key, (i, &b)| key | u128::from(b) << (8 * i));
            assert_eq!(key(&bytes), expected, "{len} bytes");
        }
    }

    #[test]
    fn every_token_is_found_by_its_bytes() {
        let vocab = vocab();
        for rank in 0..vocab.bpe.num_tokens() as u32 {
            let bytes = vocab.bpe.token_bytes(rank);
            if bytes.len() > 1 {
                assert_eq!(vocab.rank(bytes), rank, "{bytes:?}");
            }
            assert_eq!(vocab.chunk_count(bytes), 1, "{bytes:?}");
        }
    }

    #[test]
    fn ranks_are_tiktoken_ranks() {
        let tiktoken = tiktoken_rs::cl100k_base_singleton();
        let vocab = vocab();
        assert_eq!(vocab.bpe.num_tokens(), 100_256);
        for rank in 0..vocab.bpe.num_tokens() as u32 {
            let bytes = tiktoken.decode_bytes(&[rank]).expect("a tiktoken rank");
            assert_eq!(vocab.bpe.token_bytes(rank), bytes, "rank {rank}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The merge makes as many tokens as `bpe`'s own counter, an independent algorithm, on
        /// strings of bytes that are often pieces of tokens.
        #[test]
        fn merges_count_as_bpe_does(
            piece in prop::collection::vec(
                prop_oneof![
                    Just(b'a'), Just(b'e'), Just(b' '), Just(b'n'), Just(b't'), Just(b'\n'),
                    b'a'..=b'z', any::<u8>(),
                ],
                2..=MERGE_MAX,
            )
        ) {
            let vocab = vocab();
            prop_assert_eq!(vocab.merge_count(&piece), vocab.bpe.count(&piece), "{:?}", piece);
        }
    }
}
