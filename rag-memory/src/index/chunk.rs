//! Cutting Markdown and plain text into passages of a bounded size, along headings and
//! paragraphs.

/// An estimate of how many tokens of a BPE tokenizer (such as cl100k) `text` has: the larger
/// of 4/3 tokens per whitespace-separated word and 1 token per 4 characters. Prose comes out
/// a little above a real count; code and long identifiers are caught by the character rule.
pub fn estimate_tokens(text: &str) -> usize {
    let words = text.split_whitespace().count();
    let chars = text.chars().count();
    (words * 4).div_ceil(3).max(chars.div_ceil(4))
}

/// One passage cut from a file: its text and the headings it sits under, outermost first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) text: String,
    pub(crate) headings: Vec<String>,
}

/// A Markdown file cut into passages, with its title (the first `# ` heading) if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cut {
    pub(crate) title: Option<String>,
    pub(crate) pieces: Vec<Piece>,
}

/// One heading's section: its heading line and its blocks (paragraphs, lists, code blocks).
struct Section {
    headings: Vec<String>,
    heading_line: Option<String>,
    blocks: Vec<String>,
}

/// Cuts Markdown into passages of at most `max_tokens` (by [`estimate_tokens`]).
///
/// A passage never spans two sections: each ATX heading (`#` to `######`, outside code
/// fences) starts a new one, and the heading line opens the section's first passage. Within a
/// section, whole blocks (separated by blank lines; a fenced code block is one block) are
/// packed together; a block too large on its own is cut at line, then sentence, then word
/// boundaries. YAML front matter is skipped.
pub(crate) fn cut_markdown(text: &str, max_tokens: usize) -> Cut {
    let text = skip_front_matter(text.trim_start_matches('\u{feff}'));
    let mut title = None;
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut sections = vec![Section {
        headings: Vec::new(),
        heading_line: None,
        blocks: Vec::new(),
    }];
    let mut block: Vec<&str> = Vec::new();
    let mut fence: Option<(char, usize)> = None;

    fn flush(block: &mut Vec<&str>, sections: &mut [Section]) {
        if !block.is_empty() {
            let text = block.join("\n");
            block.clear();
            if !text.trim().is_empty() {
                sections
                    .last_mut()
                    .expect("there is always a section")
                    .blocks
                    .push(text);
            }
        }
    }

    for line in text.lines() {
        if let Some(open) = fence {
            block.push(line);
            if closes_fence(line, open) {
                fence = None;
                flush(&mut block, &mut sections);
            }
            continue;
        }
        if let Some(open) = opens_fence(line) {
            flush(&mut block, &mut sections);
            block.push(line);
            fence = Some(open);
            continue;
        }
        if let Some((level, heading)) = atx_heading(line) {
            flush(&mut block, &mut sections);
            if level == 1 && title.is_none() && !heading.is_empty() {
                title = Some(heading.to_string());
            }
            while stack.last().is_some_and(|(l, _)| *l >= level) {
                stack.pop();
            }
            stack.push((level, heading.to_string()));
            sections.push(Section {
                headings: stack
                    .iter()
                    .map(|(_, h)| h.clone())
                    .filter(|h| !h.is_empty())
                    .collect(),
                heading_line: Some(line.trim().to_string()),
                blocks: Vec::new(),
            });
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut block, &mut sections);
        } else {
            block.push(line);
        }
    }
    flush(&mut block, &mut sections);

    let pieces = sections
        .into_iter()
        .flat_map(|s| pack(s, max_tokens))
        .collect();
    Cut { title, pieces }
}

/// Cuts plain text into passages of at most `max_tokens`, packing whole paragraphs.
pub(crate) fn cut_plain(text: &str, max_tokens: usize) -> Vec<Piece> {
    let blocks = text
        .trim_start_matches('\u{feff}')
        .split("\n\n")
        .flat_map(|b| b.split("\r\n\r\n"))
        .map(str::trim_end)
        .filter(|b| !b.trim().is_empty())
        .map(str::to_string)
        .collect();
    pack(
        Section {
            headings: Vec::new(),
            heading_line: None,
            blocks,
        },
        max_tokens,
    )
}

/// Packs a section's blocks into passages; the heading line opens the first one.
fn pack(section: Section, max_tokens: usize) -> Vec<Piece> {
    if section.blocks.is_empty() {
        // A heading with nothing under it: its text lives on in its subsections' heading path.
        return Vec::new();
    }
    let heading = section.heading_line.unwrap_or_default();
    // Leave room for the heading line in the first passage (unless it is absurdly long).
    let room = max_tokens
        .saturating_sub(estimate_tokens(&heading) + 1)
        .max(max_tokens / 2)
        .max(1);
    let mut parts = Vec::new();
    for block in &section.blocks {
        fit(block, room, 0, &mut parts);
    }
    let mut texts = Vec::new();
    let mut buf = heading;
    let mut has_body = false;
    for part in parts {
        let candidate = if buf.is_empty() {
            part.clone()
        } else {
            format!("{buf}\n\n{part}")
        };
        if has_body && estimate_tokens(&candidate) > max_tokens {
            texts.push(std::mem::replace(&mut buf, part));
        } else {
            buf = candidate;
        }
        has_body = true;
    }
    if has_body {
        texts.push(buf);
    }
    texts
        .into_iter()
        .map(|text| Piece {
            text,
            headings: section.headings.clone(),
        })
        .collect()
}

/// Appends `text` to `out` as parts of at most `limit` tokens, cutting at the coarsest
/// boundaries that work: lines, then sentences, then words, then characters.
fn fit(text: &str, limit: usize, level: usize, out: &mut Vec<String>) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    if estimate_tokens(text) <= limit {
        out.push(text.to_string());
        return;
    }
    if level > 2 {
        // One unbroken run of characters: cut every `4 * limit` characters.
        let chars: Vec<char> = text.chars().collect();
        for chunk in chars.chunks(4 * limit) {
            out.push(chunk.iter().collect());
        }
        return;
    }
    let cuts = boundaries(text, level);
    if cuts.len() <= 2 {
        fit(text, limit, level + 1, out);
        return;
    }
    let mut start = 0;
    let mut end = 0;
    for &next in &cuts[1..] {
        if end > start && estimate_tokens(text[start..next].trim()) > limit {
            fit(&text[start..end], limit, level + 1, out);
            start = end;
        }
        end = next;
    }
    fit(&text[start..end], limit, level + 1, out);
}

/// Byte offsets where the segments of `text` start at `level` (0 lines, 1 sentences,
/// 2 words), plus `0` and `text.len()`.
fn boundaries(text: &str, level: usize) -> Vec<usize> {
    let mut cuts = vec![0];
    let mut prev: Option<char> = None;
    let mut prev_ws = false;
    for (i, c) in text.char_indices() {
        let cut = match level {
            0 => prev == Some('\n'),
            1 => prev_ws && !c.is_whitespace() && matches_sentence_end(&text[..i]),
            _ => prev_ws && !c.is_whitespace(),
        };
        if cut && i > 0 {
            cuts.push(i);
        }
        prev = Some(c);
        prev_ws = c.is_whitespace();
    }
    cuts.push(text.len());
    cuts.dedup();
    cuts
}

/// Whether `before` (the text up to a word that follows whitespace) ends a sentence.
fn matches_sentence_end(before: &str) -> bool {
    let trimmed = before.trim_end();
    trimmed.len() < before.len() && trimmed.ends_with(['.', '!', '?', ':', ';'])
}

/// Heading level and text of an ATX heading line.
fn atx_heading(line: &str) -> Option<(usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.len() - rest.trim_start_matches('#').len();
    if !(1..=6).contains(&level) {
        return None;
    }
    let after = &rest[level..];
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    let mut text = after.trim();
    // An optional closing run of `#`s, preceded by a space.
    let unclosed = text.trim_end_matches('#');
    if unclosed.is_empty() || unclosed.ends_with([' ', '\t']) {
        text = unclosed.trim_end();
    }
    Some((level, text))
}

/// The fence character and length of a line that opens a fenced code block.
fn opens_fence(line: &str) -> Option<(char, usize)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let c = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = trimmed.len() - trimmed.trim_start_matches(c).len();
    (n >= 3).then_some((c, n))
}

/// Whether `line` closes a fence opened with `open`.
fn closes_fence(line: &str, (c, n): (char, usize)) -> bool {
    let trimmed = line.trim();
    trimmed.len() >= n && trimmed.chars().all(|x| x == c)
}

/// `text` without a leading YAML front matter block.
fn skip_front_matter(text: &str) -> &str {
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return text;
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        offset += line.len();
        if line.trim_end() == "---" {
            return &rest[offset..];
        }
    }
    text
}

#[cfg(test)]
mod tests;
