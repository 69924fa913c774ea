//! [`SentencePieceCounter`]: Mistral's SentencePiece v1 tokenizer, counted exactly.
//!
//! The model is the 32,000-piece BPE vocabulary of Mistral 7B Instruct v0.1/v0.2 and Mixtral
//! 8x7B: `mistral_common/data/tokenizer.model.v1` from the Python package mistral-common
//! 1.13.1, © Mistral AI, licensed under the Apache License 2.0. It ships inside this crate as
//! `data/mistral-v1.model` (sha256 `dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055`;
//! `data/NOTICE.md` and `data/LICENSE-mistral-common` beside it), is compiled in with
//! `include_bytes!` and parsed once per process, on the first count; nothing is downloaded.
//!
//! The encoding is SentencePiece's BPE, written here from its algorithm: the text is
//! normalized (a `▁` is put before it, every space becomes `▁`), split into characters, and
//! the adjacent pair whose concatenation is the piece of highest score (the leftmost on ties)
//! is merged until no pair is a piece; a character that is no piece counts one byte piece per
//! UTF-8 byte. The model's settings are checked when it is parsed, and one this code does not
//! implement (a character map, no byte fallback, user-defined pieces, ...) panics with a
//! message instead of counting wrongly.
//!
//! For speed the text is cut where no piece can cross (before a `▁` that follows another
//! character, around line feeds, between ASCII characters that no piece holds side by side);
//! each part is counted alone, as 1 when it is a piece that encodes to itself, else by
//! merging. The result is the same because every merged symbol is a piece.
//!
//! Exactness was checked against the `sentencepiece` Python package 0.2.3 on this model,
//! with and without the dummy prefix: no difference on the 2,897 passages of the AWS Lambda
//! Developer Guide corpus, on 100,000 random strings of spaces, `▁`, line breaks, tabs,
//! digits, punctuation, accented letters, CJK and emoji, and on 150,000 strings of random
//! pieces, random code points and every piece alone. The unit tests pin counts it gave, and
//! the workspace's `tests/tokenizers.rs` compares with the real `sentencepiece` (installed by
//! the test command) on the corpus and on random text at every run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::OnceLock;

use rustc_hash::{FxHashMap, FxHashSet};

use super::TokenCounter;

/// The shipped model file (see the module doc for where it comes from).
static MISTRAL_V1: &[u8] = include_bytes!("../../data/mistral-v1.model");

/// SentencePiece's escaped space.
const SPACE_MARK: char = '\u{2581}';

/// No piece: a character outside the vocabulary, or a pair that is not a piece.
const NONE: u32 = u32::MAX;

/// A dead symbol in the heap-based merge (merged into its left neighbour).
const DEAD: u32 = u32::MAX - 1;

/// Segments of at most this many symbols are merged by scanning the pairs, which is faster
/// than a heap for the short words of ordinary text; longer ones use the heap.
const SCAN_MAX_SYMBOLS: usize = 32;

/// Counts tokens exactly as SentencePiece encodes them with Mistral's v1 tokenizer.
///
/// [`TokenCounter::count`] is `len(sp.encode(text))` of the `sentencepiece` package (the
/// dummy `▁` prefix included, no BOS); [`TokenCounter::count_part`] is the count without the
/// dummy prefix, what a text adds after other text. Counts add up across clean splits
/// ([`crate::tokens::is_clean_split`]), so [`TokenCounter::splits_exactly`] is true. Text
/// such as `<s>` or `[INST]` is counted as ordinary text, which is what it is in a prompt.
///
/// The handle is free to make and copy; the parsed model (about 32,000 pieces) lives in a
/// process-wide static built on the first count. The model file ships inside this crate
/// (`tokenizer.model.v1` of mistral-common 1.13.1, © Mistral AI, Apache-2.0: see
/// `data/NOTICE.md`); nothing is downloaded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SentencePieceCounter {
    vocab: Vocab,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Vocab {
    MistralV1,
}

impl SentencePieceCounter {
    /// The counter of Mistral's SentencePiece v1 tokenizer (Mistral 7B Instruct v0.1/v0.2,
    /// Mixtral 8x7B).
    pub fn mistral_v1() -> Self {
        SentencePieceCounter {
            vocab: Vocab::MistralV1,
        }
    }

    fn model(&self) -> &'static Model {
        match self.vocab {
            Vocab::MistralV1 => {
                static MODEL: OnceLock<Model> = OnceLock::new();
                MODEL.get_or_init(|| {
                    Model::parse(MISTRAL_V1).unwrap_or_else(|e| {
                        panic!(
                            "rag-core's shipped Mistral v1 SentencePiece model cannot be used: {e}"
                        )
                    })
                })
            }
        }
    }
}

impl fmt::Debug for SentencePieceCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The model itself is 32,000 pieces: only its name is worth printing.
        f.debug_struct("SentencePieceCounter")
            .field("vocab", &self.vocab)
            .finish()
    }
}

impl TokenCounter for SentencePieceCounter {
    fn count(&self, text: &str) -> usize {
        // Without a limit the count is always `Some`.
        self.model()
            .count(text, true, usize::MAX)
            .unwrap_or(usize::MAX)
    }

    fn count_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
        self.model().count(text, true, limit)
    }

    fn count_part(&self, text: &str) -> usize {
        self.model()
            .count(text, false, usize::MAX)
            .unwrap_or(usize::MAX)
    }

    fn count_part_till_limit(&self, text: &str, limit: usize) -> Option<usize> {
        self.model().count(text, false, limit)
    }

    /// True: the model has no piece that holds a line feed or a `▁` after another character
    /// (checked when it is parsed), so no token crosses a clean split.
    fn splits_exactly(&self) -> bool {
        true
    }

    /// A character is one piece or, by byte fallback, one piece per byte, so a text counts at
    /// most one token per byte, plus the dummy prefix's `▁` when it stands alone.
    fn max_count_for_len(&self, bytes: usize) -> usize {
        bytes.saturating_add(1)
    }
}

/// A merge: two adjacent symbols make the piece `id`, whose score has rank `rank` (0 is the
/// highest score; equal scores share a rank).
#[derive(Clone, Copy, Debug)]
struct Merge {
    rank: u32,
    id: u32,
}

const NO_MERGE: Merge = Merge {
    rank: u32::MAX,
    id: NONE,
};

/// The parsed model, reduced to what counting needs.
struct Model {
    /// The piece of each one-character ASCII text (a space is the piece `▁`), or [`NONE`].
    ascii: [u32; 128],
    /// The piece of each other one-character text.
    chars: FxHashMap<char, u32>,
    /// The piece `▁`, which the dummy prefix is.
    space: u32,
    /// The piece two adjacent pieces make, keyed by `left << 16 | right`, as `rank << 16 |
    /// id`: ids and ranks fit 16 bits (checked), and a table of 8-byte entries stays in cache.
    merges: FxHashMap<u32, u32>,
    /// Pieces (spelt with spaces for `▁`) of up to 15 bytes that encode alone to just
    /// themselves, as [`short_key`]s: a segment equal to one counts 1 without merging.
    short_words: FxHashSet<u128>,
    /// The same for longer pieces.
    long_words: FxHashSet<Box<[u8]>>,
    /// Bit `b` of `joinable[a]`: some piece (spelt with spaces) holds the ASCII characters `a`
    /// and `b` side by side. Where no piece does, no token crosses between them, and the
    /// parts on either side encode on their own.
    joinable: [u128; 128],
}

/// A text of at most 15 bytes as one integer (its bytes, then its length in the last byte),
/// so that looking it up hashes two words and follows no pointer.
#[inline]
fn short_key(b: &[u8]) -> Option<u128> {
    if b.len() > 15 {
        return None;
    }
    let mut buf = [0u8; 16];
    buf[..b.len()].copy_from_slice(b);
    buf[15] = b.len() as u8;
    Some(u128::from_le_bytes(buf))
}

/// Reusable buffers of one count.
#[derive(Default)]
struct Scratch {
    syms: Vec<u32>,
    pairs: Vec<Merge>,
    next: Vec<u32>,
    prev: Vec<u32>,
    heap: BinaryHeap<Reverse<(u32, u32, u32)>>,
}

/// The length of the space (`' '` or `▁`) at `b[i]`, if there is one.
#[inline]
fn space_at(b: &[u8], i: usize) -> Option<usize> {
    match b[i] {
        b' ' => Some(1),
        0xE2 if b.get(i + 1) == Some(&0x96) && b.get(i + 2) == Some(&0x81) => Some(3),
        _ => None,
    }
}

/// The end of the segment that starts at `start`: a lone line feed, or a run of spaces
/// followed by characters up to the next space or line feed.
///
/// No piece holds a line feed, and a piece holds a `▁` only at its start or is all `▁`
/// (checked at parse time), so no token crosses from one segment into the next and each
/// segment encodes on its own: SentencePiece's merge order within a segment does not
/// depend on the pairs of other segments.
#[inline]
fn segment_end(b: &[u8], start: usize) -> usize {
    let mut i = start;
    if b[i] == b'\n' {
        return i + 1;
    }
    while i < b.len() {
        match space_at(b, i) {
            Some(n) => i += n,
            None => break,
        }
    }
    // Stepping byte by byte is safe: continuation bytes are never ' ', '\n' or 0xE2.
    while i < b.len() && b[i] != b'\n' && space_at(b, i).is_none() {
        i += 1;
    }
    i
}

impl Model {
    /// `Some(tokens)` of `text` if at most `limit`, `None` as soon as the count passes it.
    fn count(&self, text: &str, dummy_prefix: bool, limit: usize) -> Option<usize> {
        let b = text.as_bytes();
        let mut scratch = Scratch::default();
        let mut total = 0usize;
        let mut start = 0;
        while start < b.len() {
            let end = segment_end(b, start);
            let seg = &text[start..end];
            let n = if dummy_prefix && start == 0 {
                if b[0] == b'\n' {
                    // The prefix's `▁` cannot join a line feed: it is a token of its own.
                    1 + self.count_segment(seg, &mut scratch)
                } else {
                    self.bpe(seg, true, false, &mut scratch)
                }
            } else {
                self.count_segment(seg, &mut scratch)
            };
            total += n;
            if total > limit {
                return None;
            }
            start = end;
        }
        Some(total)
    }

    #[inline]
    fn is_word(&self, text: &str) -> bool {
        match short_key(text.as_bytes()) {
            Some(key) => self.short_words.contains(&key),
            None => self.long_words.contains(text.as_bytes()),
        }
    }

    /// The tokens of a segment: 1 if it is a word, else the sum over its parts between ASCII
    /// characters that no piece joins (`Lambda` and `,` in `Lambda,` if no piece holds `a,`),
    /// each a word or merged alone; shorter runs make the quadratic scan cheap.
    fn count_segment(&self, seg: &str, scratch: &mut Scratch) -> usize {
        if self.is_word(seg) {
            return 1;
        }
        let b = seg.as_bytes();
        let mut total = 0;
        let mut start = 0;
        for i in 1..b.len() {
            let (l, r) = (b[i - 1], b[i]);
            if l.is_ascii() && r.is_ascii() && (self.joinable[usize::from(l)] >> r) & 1 == 0 {
                total += self.count_run(&seg[start..i], scratch);
                start = i;
            }
        }
        if start == 0 {
            // Not cut anywhere: the segment, which is no word.
            return self.bpe(seg, false, false, scratch);
        }
        total + self.count_run(&seg[start..], scratch)
    }

    fn count_run(&self, run: &str, scratch: &mut Scratch) -> usize {
        if self.is_word(run) {
            return 1;
        }
        self.bpe(run, false, false, scratch)
    }

    #[inline]
    fn merge(&self, left: u32, right: u32) -> Merge {
        // NONE and DEAD do not fit 16 bits: they never merge.
        if (left | right) > 0xFFFF {
            return NO_MERGE;
        }
        match self.merges.get(&((left << 16) | right)) {
            Some(&m) => Merge {
                rank: m >> 16,
                id: m & 0xFFFF,
            },
            None => NO_MERGE,
        }
    }

    #[inline]
    fn char_id(&self, c: char) -> u32 {
        if c.is_ascii() {
            self.ascii[c as usize]
        } else {
            self.chars.get(&c).copied().unwrap_or(NONE)
        }
    }

    /// The tokens of one segment (after a `▁` if `prefix`), by SentencePiece's BPE.
    fn bpe(&self, seg: &str, prefix: bool, force_heap: bool, scratch: &mut Scratch) -> usize {
        let syms = &mut scratch.syms;
        syms.clear();
        // Characters outside the vocabulary never merge (every character of every piece is a
        // piece, checked at parse time); each counts one byte piece per UTF-8 byte.
        let mut fallback_extra = 0;
        if prefix {
            syms.push(self.space);
        }
        let b = seg.as_bytes();
        let mut i = 0;
        while i < b.len() {
            // Most text is ASCII: look it up without decoding.
            if b[i].is_ascii() {
                syms.push(self.ascii[usize::from(b[i])]);
                i += 1;
                continue;
            }
            let c = seg[i..].chars().next().unwrap_or_default();
            let id = self.char_id(c);
            if id == NONE {
                fallback_extra += c.len_utf8() - 1;
            }
            syms.push(id);
            i += c.len_utf8();
        }
        let left = if syms.len() <= SCAN_MAX_SYMBOLS && !force_heap {
            self.merge_by_scan(scratch)
        } else {
            self.merge_by_heap(scratch)
        };
        left + fallback_extra
    }

    /// Merges `scratch.syms` by scanning for the best pair each round: O(n²), fast for short
    /// segments. Returns the number of symbols left.
    ///
    /// `pairs[k]` is the merge of symbol `k` with the next live one. A merged-away symbol is
    /// marked [`DEAD`] instead of removed, which would move the tail at every merge.
    fn merge_by_scan(&self, scratch: &mut Scratch) -> usize {
        let Scratch { syms, pairs, .. } = scratch;
        let n = syms.len();
        pairs.clear();
        pairs.extend(syms.windows(2).map(|w| self.merge(w[0], w[1])));
        pairs.push(NO_MERGE);
        let mut live = n;
        loop {
            let mut best = NO_MERGE.rank;
            let mut at = 0;
            for (k, p) in pairs.iter().enumerate() {
                // Strictly less: the leftmost of equal ranks wins, as in SentencePiece.
                if p.rank < best {
                    best = p.rank;
                    at = k;
                }
            }
            if best == NO_MERGE.rank {
                return live;
            }
            let mut right = at + 1;
            while syms[right] == DEAD {
                right += 1;
            }
            syms[at] = pairs[at].id;
            syms[right] = DEAD;
            pairs[right] = NO_MERGE;
            live -= 1;
            let mut next = right + 1;
            while next < n && syms[next] == DEAD {
                next += 1;
            }
            pairs[at] = if next < n {
                self.merge(syms[at], syms[next])
            } else {
                NO_MERGE
            };
            if at > 0 {
                // Symbol 0 is never merged away, so this stops.
                let mut prev = at - 1;
                while syms[prev] == DEAD {
                    prev -= 1;
                }
                pairs[prev] = self.merge(syms[prev], syms[at]);
            }
        }
    }

    /// Merges `scratch.syms` with a priority queue of pairs, ordered by rank and then by the
    /// left symbol's position, skipping stale entries: O(n log n) for long runs without
    /// spaces. Returns the number of symbols left.
    fn merge_by_heap(&self, scratch: &mut Scratch) -> usize {
        let Scratch {
            syms: ids,
            next,
            prev,
            heap,
            ..
        } = scratch;
        let n = ids.len();
        if n < 2 {
            return n;
        }
        next.clear();
        next.extend((1..=n).map(|i| if i == n { NONE } else { i as u32 }));
        prev.clear();
        prev.extend((0..n).map(|i| if i == 0 { NONE } else { i as u32 - 1 }));
        heap.clear();
        for i in 0..n - 1 {
            let m = self.merge(ids[i], ids[i + 1]);
            if m.id != NONE {
                heap.push(Reverse((m.rank, i as u32, m.id)));
            }
        }
        let mut left_count = n;
        while let Some(Reverse((_, left, merged))) = heap.pop() {
            let l = left as usize;
            if ids[l] == DEAD || next[l] == NONE {
                continue;
            }
            let r = next[l] as usize;
            // Stale when either side has changed since the entry was pushed: the pair it
            // makes now is another piece (a longer one), or none.
            if self.merge(ids[l], ids[r]).id != merged {
                continue;
            }
            ids[l] = merged;
            ids[r] = DEAD;
            next[l] = next[r];
            if next[r] != NONE {
                prev[next[r] as usize] = left;
            }
            left_count -= 1;
            if prev[l] != NONE {
                let p = prev[l] as usize;
                let m = self.merge(ids[p], ids[l]);
                if m.id != NONE {
                    heap.push(Reverse((m.rank, p as u32, m.id)));
                }
            }
            if next[l] != NONE {
                let m = self.merge(ids[l], ids[next[l] as usize]);
                if m.id != NONE {
                    heap.push(Reverse((m.rank, left, m.id)));
                }
            }
        }
        left_count
    }

    /// Parses a SentencePiece `.model` file and checks that this code encodes as it would.
    fn parse(bytes: &[u8]) -> Result<Model, String> {
        let proto = proto::ModelProto::parse(bytes)?;
        check_settings(&proto)?;

        // Normal pieces are the only ones that text can encode to; the others (unknown,
        // control, byte) are looked up only by id.
        let mut by_text: FxHashMap<&str, u32> = FxHashMap::default();
        let mut scores: Vec<f32> = Vec::new();
        let mut bytes_seen = [false; 256];
        for (i, p) in proto.pieces.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| "too many pieces".to_string())?;
            match p.kind {
                proto::NORMAL => {
                    if p.piece.is_empty() {
                        return Err(format!("piece {id} is empty"));
                    }
                    if !p.score.is_finite() {
                        return Err(format!("piece {:?} has score {}", p.piece, p.score));
                    }
                    if by_text.insert(&p.piece, id).is_some() {
                        return Err(format!("piece {:?} is defined twice", p.piece));
                    }
                    scores.push(p.score);
                }
                proto::BYTE => {
                    let b = p
                        .piece
                        .strip_prefix("<0x")
                        .and_then(|s| s.strip_suffix('>'))
                        .filter(|h| h.len() == 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| format!("byte piece {:?} is not <0xNN>", p.piece))?;
                    bytes_seen[usize::from(b)] = true;
                }
                proto::UNKNOWN | proto::CONTROL => {}
                proto::USER_DEFINED | proto::UNUSED => {
                    // User-defined pieces are matched before merging, unused ones are split
                    // again after it: neither is implemented here.
                    return Err(format!(
                        "piece {:?} has type {}, which is not implemented",
                        p.piece, p.kind
                    ));
                }
                other => return Err(format!("piece {:?} has unknown type {other}", p.piece)),
            }
        }
        if let Some(b) = bytes_seen.iter().position(|seen| !seen) {
            return Err(format!(
                "byte fallback is on but there is no piece <0x{b:02X}>"
            ));
        }

        // The rank of a score: 0 for the highest; equal scores tie, as they do in
        // SentencePiece, whose order between them is the position. Scores are finite
        // (checked above), so they compare as SentencePiece's floats do (-0 == 0).
        let cmp = |a: &f32, b: &f32| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
        let mut distinct = scores.clone();
        distinct.sort_by(|a, b| cmp(b, a));
        distinct.dedup();
        let rank = |score: f32| {
            distinct
                .binary_search_by(|probe| cmp(&score, probe))
                .map(|r| r as u32)
                .expect("every score is in the list")
        };

        let mut ascii = [NONE; 128];
        let mut chars = FxHashMap::default();
        for (&text, &id) in &by_text {
            // What segmenting and the id-based merges rely on: see `segment_end` and `bpe`.
            if text.contains('\n') {
                return Err(format!("piece {text:?} holds a line feed"));
            }
            if text.contains(' ') {
                return Err(format!("piece {text:?} holds a raw space"));
            }
            let all_marks = text.chars().all(|c| c == SPACE_MARK);
            if !all_marks && text.chars().skip(1).any(|c| c == SPACE_MARK) {
                return Err(format!("piece {text:?} holds a ▁ after another character"));
            }
            if let Some(c) = text
                .chars()
                .find(|c| !by_text.contains_key(c.encode_utf8(&mut [0; 4]) as &str))
            {
                return Err(format!("piece {text:?} holds {c:?}, which is no piece"));
            }
            let mut it = text.chars();
            if let (Some(c), None) = (it.next(), it.next()) {
                if c.is_ascii() {
                    ascii[c as usize] = id;
                } else {
                    chars.insert(c, id);
                }
            }
        }
        let space = *by_text
            .get(SPACE_MARK.encode_utf8(&mut [0; 4]) as &str)
            .ok_or("there is no piece ▁")?;
        // Text spaces are escaped to `▁` before encoding.
        ascii[usize::from(b' ')] = space;

        if proto.pieces.len() > 0xFFFF {
            return Err(format!(
                "it has {} pieces, more than 65,535",
                proto.pieces.len()
            ));
        }
        let mut merges = FxHashMap::default();
        for (&text, &id) in &by_text {
            let merge = (rank(proto.pieces[id as usize].score) << 16) | id;
            for (k, _) in text.char_indices().skip(1) {
                if let (Some(&l), Some(&r)) = (by_text.get(&text[..k]), by_text.get(&text[k..])) {
                    merges.insert((l << 16) | r, merge);
                }
            }
        }

        let mut model = Model {
            ascii,
            chars,
            space,
            merges,
            short_words: FxHashSet::default(),
            long_words: FxHashSet::default(),
            joinable: [0; 128],
        };
        // A piece is a word when encoding its text alone gives just that piece; a piece that
        // merging never reaches (its halves merge with other neighbours first) is not.
        let mut scratch = Scratch::default();
        let (mut short_words, mut long_words) = (FxHashSet::default(), FxHashSet::default());
        for &text in by_text.keys() {
            let spelt = text.replace(SPACE_MARK, " ");
            for w in spelt.as_bytes().windows(2) {
                if w[0].is_ascii() && w[1].is_ascii() {
                    model.joinable[usize::from(w[0])] |= 1 << w[1];
                }
            }
            if model.bpe(&spelt, false, false, &mut scratch) == 1 {
                match short_key(spelt.as_bytes()) {
                    Some(key) => short_words.insert(key),
                    None => long_words.insert(spelt.into_bytes().into_boxed_slice()),
                };
            }
        }
        model.short_words = short_words;
        model.long_words = long_words;
        Ok(model)
    }
}

/// Refuses settings that would make SentencePiece encode differently from [`Model`].
fn check_settings(proto: &proto::ModelProto) -> Result<(), String> {
    let t = &proto.trainer;
    let n = &proto.normalizer;
    let refuse = |what: &str| Err(format!("it has {what}, which is not implemented"));
    if t.model_type != proto::BPE {
        return refuse(&format!("model type {} (only BPE, 2, is)", t.model_type));
    }
    if !t.byte_fallback {
        return refuse("no byte fallback");
    }
    if t.treat_whitespace_as_suffix {
        return refuse("treat_whitespace_as_suffix");
    }
    if !n.precompiled_charsmap.is_empty() {
        return refuse(&format!("the character map of normalizer {:?}", n.name));
    }
    if !n.add_dummy_prefix {
        return refuse("add_dummy_prefix off");
    }
    if n.remove_extra_whitespaces {
        return refuse("remove_extra_whitespaces on");
    }
    if !n.escape_whitespaces {
        return refuse("escape_whitespaces off");
    }
    Ok(())
}

/// Just enough of the protobuf wire format to read a SentencePiece `ModelProto`.
mod proto {
    pub(super) const NORMAL: u64 = 1;
    pub(super) const UNKNOWN: u64 = 2;
    pub(super) const CONTROL: u64 = 3;
    pub(super) const USER_DEFINED: u64 = 4;
    pub(super) const UNUSED: u64 = 5;
    pub(super) const BYTE: u64 = 6;
    pub(super) const BPE: u64 = 2;

    pub(super) struct ModelProto {
        pub(super) pieces: Vec<Piece>,
        pub(super) trainer: TrainerSpec,
        pub(super) normalizer: NormalizerSpec,
    }

    pub(super) struct Piece {
        pub(super) piece: String,
        pub(super) score: f32,
        pub(super) kind: u64,
    }

    /// The trainer settings that matter when encoding; the others (split_digits,
    /// allow_whitespace_only_pieces, ...) shaped the vocabulary and are not read.
    pub(super) struct TrainerSpec {
        pub(super) model_type: u64,
        pub(super) treat_whitespace_as_suffix: bool,
        pub(super) byte_fallback: bool,
    }

    pub(super) struct NormalizerSpec {
        pub(super) name: String,
        pub(super) precompiled_charsmap: Vec<u8>,
        pub(super) add_dummy_prefix: bool,
        pub(super) remove_extra_whitespaces: bool,
        pub(super) escape_whitespaces: bool,
    }

    enum Value<'a> {
        Varint(u64),
        Fixed32(u32),
        Fixed64,
        Bytes(&'a [u8]),
    }

    /// The fields of one message, in order.
    struct Fields<'a> {
        buf: &'a [u8],
    }

    impl<'a> Fields<'a> {
        fn varint(&mut self) -> Result<u64, String> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
                self.buf = rest;
                v |= u64::from(b & 0x7F) << shift;
                if b & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err("varint longer than 10 bytes".into())
        }

        fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
            if n > self.buf.len() {
                return Err("truncated field".into());
            }
            let (head, rest) = self.buf.split_at(n);
            self.buf = rest;
            Ok(head)
        }

        fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
            if self.buf.is_empty() {
                return Ok(None);
            }
            let key = self.varint()?;
            let value = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => {
                    self.take(8)?;
                    Value::Fixed64
                }
                2 => {
                    let len = usize::try_from(self.varint()?).map_err(|_| "field too long")?;
                    Value::Bytes(self.take(len)?)
                }
                5 => {
                    let b = self.take(4)?;
                    Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                }
                w => return Err(format!("wire type {w} is not supported")),
            };
            Ok(Some((key >> 3, value)))
        }
    }

    fn each_field<'a>(
        buf: &'a [u8],
        mut f: impl FnMut(u64, Value<'a>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut fields = Fields { buf };
        while let Some((number, value)) = fields.next_field()? {
            f(number, value)?;
        }
        Ok(())
    }

    fn bytes<'a>(what: &str, v: Value<'a>) -> Result<&'a [u8], String> {
        match v {
            Value::Bytes(b) => Ok(b),
            _ => Err(format!("{what} is not length-delimited")),
        }
    }

    fn string(what: &str, v: Value<'_>) -> Result<String, String> {
        String::from_utf8(bytes(what, v)?.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn varint(what: &str, v: Value<'_>) -> Result<u64, String> {
        match v {
            Value::Varint(n) => Ok(n),
            _ => Err(format!("{what} is not a varint")),
        }
    }

    impl ModelProto {
        pub(super) fn parse(buf: &[u8]) -> Result<ModelProto, String> {
            let mut pieces = Vec::new();
            // proto2 defaults of the fields read.
            let mut trainer = TrainerSpec {
                model_type: 1,
                treat_whitespace_as_suffix: false,
                byte_fallback: false,
            };
            let mut normalizer = NormalizerSpec {
                name: String::new(),
                precompiled_charsmap: Vec::new(),
                add_dummy_prefix: true,
                remove_extra_whitespaces: true,
                escape_whitespaces: true,
            };
            each_field(buf, |number, value| {
                match number {
                    1 => pieces.push(Piece::parse(bytes("piece", value)?)?),
                    2 => each_field(bytes("trainer_spec", value)?, |n, v| {
                        match n {
                            3 => trainer.model_type = varint("model_type", v)?,
                            24 => trainer.treat_whitespace_as_suffix = varint("flag", v)? != 0,
                            35 => trainer.byte_fallback = varint("byte_fallback", v)? != 0,
                            _ => {}
                        }
                        Ok(())
                    })?,
                    3 => each_field(bytes("normalizer_spec", value)?, |n, v| {
                        match n {
                            1 => normalizer.name = string("name", v)?,
                            2 => normalizer.precompiled_charsmap = bytes("charsmap", v)?.to_vec(),
                            3 => normalizer.add_dummy_prefix = varint("flag", v)? != 0,
                            4 => normalizer.remove_extra_whitespaces = varint("flag", v)? != 0,
                            5 => normalizer.escape_whitespaces = varint("flag", v)? != 0,
                            _ => {}
                        }
                        Ok(())
                    })?,
                    // The denormalizer (5) only matters for decoding; self-test data (4) not
                    // at all.
                    _ => {}
                }
                Ok(())
            })?;
            if pieces.is_empty() {
                return Err("the model has no pieces".into());
            }
            Ok(ModelProto {
                pieces,
                trainer,
                normalizer,
            })
        }
    }

    impl Piece {
        fn parse(buf: &[u8]) -> Result<Piece, String> {
            let mut piece = Piece {
                piece: String::new(),
                score: 0.0,
                kind: NORMAL,
            };
            each_field(buf, |number, value| {
                match (number, value) {
                    (1, v) => piece.piece = string("piece text", v)?,
                    (2, Value::Fixed32(bits)) => piece.score = f32::from_bits(bits),
                    (2, _) => return Err("piece score is not a float".into()),
                    (3, v) => piece.kind = varint("piece type", v)?,
                    _ => {}
                }
                Ok(())
            })?;
            Ok(piece)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::is_clean_joint;
    use proptest::prelude::*;

    fn counter() -> SentencePieceCounter {
        SentencePieceCounter::mistral_v1()
    }

    /// `(text, count, count_part)` as the `sentencepiece` package 0.2.3 counts them on this
    /// model (`len(sp.encode(text))`, and the same with `add_dummy_prefix` off).
    const KNOWN: &[(&str, usize, usize)] = &[
        ("", 0, 0),
        (" ", 1, 1),
        ("  ", 1, 1),
        ("   ", 1, 1),
        ("a", 1, 1),
        ("Hello world", 2, 2),
        ("The quick brown fox jumps over the lazy dog.", 12, 12),
        (" leading space", 3, 2),
        ("trailing space ", 3, 4),
        ("two  spaces   three", 5, 5),
        ("\ttab\tseparated", 6, 5),
        ("line one\nline two\n\nline four", 9, 9),
        ("\n", 2, 1),
        ("\n\n", 3, 2),
        ("\r\n", 2, 2),
        ("1234567890", 11, 10),
        ("In 2024, 3.14159 and 1,000,000.", 27, 27),
        ("日本語のテキスト", 9, 8),
        ("中文分词测试", 7, 6),
        ("emoji 🎉🦀👍🏽", 10, 10),
        ("<s>[INST] What is Lambda? [/INST]</s>", 18, 18),
        ("<s>", 3, 3),
        ("</s>", 3, 3),
        ("[INST]", 3, 3),
        ("<unk>", 3, 3),
        ("<0x41>", 6, 6),
        ("\u{2581}", 1, 1),
        ("a\u{2581}b", 2, 2),
        ("x \u{2581} y", 3, 3),
        ("naïve café résumé", 7, 7),
        ("Ünïcödé", 6, 6),
        ("\u{0}", 2, 1),
        ("Serverless functions scale automatically.", 6, 6),
        ("   indented code\n\tdef f(x):\n\t\treturn x", 16, 16),
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            11,
            10,
        ),
        (
            "https://docs.example.com/lambda/latest/dg/welcome.html",
            19,
            19,
        ),
        ("{\"key\": [1, 2, 3]}", 12, 12),
        ("Ελληνικά και русский", 15, 14),
    ];

    #[test]
    fn counts_known_texts_as_sentencepiece_does() {
        let c = counter();
        let mut wrong = Vec::new();
        for &(text, count, part) in KNOWN {
            let got = (c.count(text), c.count_part(text));
            if got != (count, part) {
                wrong.push(format!(
                    "{text:?}: got {got:?}, sentencepiece ({count}, {part})"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_model_is_the_shipped_one() {
        let m = counter().model();
        assert_eq!(MISTRAL_V1.len(), 493_443);
        // Every printable ASCII character is a piece, and a space is the piece `▁`.
        assert!((b' '..=b'~').all(|b| m.ascii[usize::from(b)] != NONE));
        assert_eq!(m.ascii[usize::from(b' ')], m.space);
        let words = m.short_words.len() + m.long_words.len();
        assert!(words > 20_000 && !m.long_words.is_empty(), "{words}");
        assert!(m.short_words.contains(&short_key(b" Hello").unwrap()));
        assert_eq!(m.count(" Hello", false, 1), Some(1));
        assert_eq!(
            format!("{:?}", counter()),
            "SentencePieceCounter { vocab: MistralV1 }"
        );
    }

    /// Model-file bytes: `pieces` as (text, score, type), then the trainer and normalizer
    /// specs as raw message bytes.
    fn model_file(pieces: &[(String, f32, u8)], trainer: &[u8], normalizer: &[u8]) -> Vec<u8> {
        fn field(out: &mut Vec<u8>, key: u8, body: &[u8]) {
            assert!(body.len() < 128, "one-byte lengths only");
            out.extend_from_slice(&[key, body.len() as u8]);
            out.extend_from_slice(body);
        }
        let mut out = Vec::new();
        for (text, score, kind) in pieces {
            let mut piece = Vec::new();
            field(&mut piece, 0x0A, text.as_bytes());
            piece.push(0x15);
            piece.extend_from_slice(&score.to_le_bytes());
            piece.extend_from_slice(&[0x18, *kind]);
            field(&mut out, 0x0A, &piece);
        }
        field(&mut out, 0x12, trainer);
        field(&mut out, 0x1A, normalizer);
        out
    }

    /// Mistral's settings: model_type BPE, byte_fallback (field 35) on; dummy prefix on,
    /// remove_extra_whitespaces off, escape_whitespaces on.
    const BPE_BYTES: &[u8] = &[0x18, 2, 0x98, 2, 1];
    const IDENTITY: &[u8] = &[0x18, 1, 0x20, 0, 0x28, 1];

    fn pieces(normal: &[(&str, f32)]) -> Vec<(String, f32, u8)> {
        let mut all = vec![("<unk>".to_string(), 0.0, 2)];
        all.extend((0..=255).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
        all.extend(normal.iter().map(|&(t, s)| (t.to_string(), s, 1)));
        all
    }

    #[test]
    fn refuses_settings_it_does_not_implement() {
        let normal = [("\u{2581}", -1.0), ("a", -1.0)];
        let err = |bytes: Vec<u8>| Model::parse(&bytes).err().unwrap_or_default();
        let with = |trainer: &[u8], normalizer: &[u8]| {
            err(model_file(&pieces(&normal), trainer, normalizer))
        };
        assert_eq!(with(BPE_BYTES, IDENTITY), "", "the settings it implements");
        let no_bytes: Vec<_> = pieces(&normal).into_iter().filter(|p| p.2 != 6).collect();
        assert!(err(model_file(&no_bytes, BPE_BYTES, IDENTITY)).contains("<0x00>"));
        // remove_extra_whitespaces is on by default.
        assert!(with(BPE_BYTES, &[0x18, 1]).contains("remove_extra_whitespaces"));
        assert!(with(&[0x18, 1, 0x98, 2, 1], IDENTITY).contains("model type 1"));
        assert!(with(&[0x18, 2], IDENTITY).contains("byte fallback"));
        assert!(with(BPE_BYTES, &[0x12, 1, 0, 0x20, 0]).contains("character map"));
        let mut user = pieces(&normal);
        user.push(("<x>".into(), 0.0, 4));
        assert!(err(model_file(&user, BPE_BYTES, IDENTITY)).contains("type 4"));
        let line = pieces(&[("\u{2581}", -1.0), ("a", -1.0), ("\n", -1.0), ("a\n", -2.0)]);
        assert!(err(model_file(&line, BPE_BYTES, IDENTITY)).contains("line feed"));
        let inner = pieces(&[("\u{2581}", -1.0), ("a", -1.0), ("a\u{2581}", -2.0)]);
        assert!(err(model_file(&inner, BPE_BYTES, IDENTITY)).contains("after another"));
        assert!(err(b"\x0A\x05".to_vec()).contains("truncated"));
    }

    /// Equal scores merge leftmost first, and a higher score first: with `ab` and `bc` tied,
    /// `abcd` merges `ab`, then `cd`, then `abcd` (1 token), where merging `bc` first would
    /// leave `a`, `bc`, `d`.
    #[test]
    fn ties_merge_leftmost_first_and_scores_order_merges() {
        let normal = [
            ("\u{2581}", -1.0),
            ("a", -1.0),
            ("b", -1.0),
            ("c", -1.0),
            ("d", -1.0),
            ("ab", -2.0),
            ("bc", -2.0),
            ("cd", -3.0),
            ("abcd", -4.0),
            ("xy", -5.0),
            ("yz", -2.5),
            ("x", -1.0),
            ("y", -1.0),
            ("z", -1.0),
        ];
        let m = Model::parse(&model_file(&pieces(&normal), BPE_BYTES, IDENTITY)).unwrap();
        let mut s = Scratch::default();
        for heap in [false, true] {
            assert_eq!(m.bpe("abcd", false, heap, &mut s), 1, "heap {heap}");
            // `yz` scores higher than `xy`: x, yz.
            assert_eq!(m.bpe("xyz", false, heap, &mut s), 2, "heap {heap}");
            assert_eq!(m.bpe("xy", false, heap, &mut s), 1, "heap {heap}");
        }
        assert_eq!(m.count("abcd", false, usize::MAX), Some(1));
        // The dummy `▁` joins nothing here; `é` falls back to its two bytes.
        assert_eq!(m.count("abcd é", true, usize::MAX), Some(1 + 1 + 1 + 2));
    }

    #[test]
    fn a_long_run_without_spaces_counts_fast_and_like_the_heap() {
        let c = counter();
        let mut run = String::new();
        for ch in "Lambda-function_v2.handler/λ+".chars().cycle() {
            if run.len() + ch.len_utf8() > 64 * 1024 {
                break;
            }
            run.push(ch);
        }
        let started = std::time::Instant::now();
        let n = c.count(&run);
        let elapsed = started.elapsed();
        // A quadratic merge takes seconds here even in a release build.
        assert!(
            elapsed < std::time::Duration::from_secs(2),
            "{} bytes took {elapsed:?}",
            run.len()
        );
        // Counts from sentencepiece for the same strings.
        assert_eq!((n, c.count_part(&run)), (24_029, 24_028));
        let aaa = "a".repeat(64 * 1024);
        assert_eq!((c.count(&aaa), c.count_part(&aaa)), (8_195, 8_192));
    }

    /// Texts from pieces SentencePiece treats differently: spaces and `▁`, line breaks, tabs,
    /// digits, accented and non-Latin letters, characters outside the vocabulary.
    fn text() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            4 => "[a-zA-Z]{1,8}",
            2 => Just(" ".to_string()),
            1 => "[ \u{2581}\t\r\n]{1,3}",
            1 => "[0-9]{1,4}",
            1 => "[.,;:!?()<>/\\[\\]\"'-]",
            1 => "[éüßλжω日本語中文🎉🦀\u{0}]{1,3}",
            1 => Just("<s>".to_string()),
        ];
        prop::collection::vec(atom, 0..12).prop_map(|v| v.concat())
    }

    fn solid() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9.,(<日🎉é]"
    }

    /// A pair that joins at a clean split: after a line feed before a solid character, or
    /// after a solid character before a single space and a solid character.
    fn clean_pair() -> impl Strategy<Value = (String, String)> {
        (text(), solid(), solid(), text(), any::<bool>()).prop_map(|(a, s1, s2, b, newline)| {
            if newline {
                (format!("{a}\n"), format!("{s1}{b}"))
            } else {
                (format!("{a}{s1}"), format!(" {s2}{b}"))
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn counts_add_up_across_clean_splits((a, b) in clean_pair()) {
            prop_assert!(is_clean_joint(&a, &b));
            let c = counter();
            let ab = format!("{a}{b}");
            prop_assert_eq!(c.count(&ab), c.count(&a) + c.count_part(&b));
            prop_assert_eq!(c.count_part(&ab), c.count_part(&a) + c.count_part(&b));
        }

        #[test]
        fn limits_agree_with_counts(t in text(), limit in 0usize..40) {
            let c = counter();
            let (n, p) = (c.count(&t), c.count_part(&t));
            prop_assert_eq!(c.count_till_limit(&t, limit), (n <= limit).then_some(n));
            prop_assert_eq!(c.count_part_till_limit(&t, limit), (p <= limit).then_some(p));
        }

        #[test]
        fn counts_stay_within_the_length_bound(t in text()) {
            let c = counter();
            prop_assert!(c.count(&t) <= c.max_count_for_len(t.len()));
            prop_assert!(c.count_part(&t) <= t.len());
        }

        #[test]
        fn scan_and_heap_merge_alike(t in "[a-zA-Z0-9éλ日.,_/-]{0,80}") {
            let m = counter().model();
            let mut s = Scratch::default();
            let scanned = m.bpe(&t, false, false, &mut s);
            prop_assert_eq!(scanned, m.bpe(&t, false, true, &mut s));
            prop_assert_eq!(m.bpe(&t, true, false, &mut s), m.bpe(&t, true, true, &mut s));
        }

        /// The shortcuts (whole-word pieces, cuts between characters no piece joins) count
        /// what merging each segment whole does.
        #[test]
        fn shortcuts_count_what_merging_does(
            t in prop_oneof![text(), "[ a-z0-9A-Z.,:;/()_'\"{}=*#-]{0,60}"]
        ) {
            let m = counter().model();
            let mut s = Scratch::default();
            let (b, mut start, mut slow) = (t.as_bytes(), 0, 0);
            while start < b.len() {
                let end = segment_end(b, start);
                slow += m.bpe(&t[start..end], false, false, &mut s);
                start = end;
            }
            prop_assert_eq!(counter().count_part(&t), slow);
        }
    }
}
