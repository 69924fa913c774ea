use super::*;

fn words(n: usize, word: &str) -> String {
    vec![word; n].join(" ")
}

#[test]
fn estimate_counts_words_and_characters() {
    assert_eq!(estimate_tokens(""), 0);
    assert_eq!(estimate_tokens("one two three"), 4);
    // A long identifier counts by characters.
    assert_eq!(estimate_tokens(&"x".repeat(400)), 100);
}

#[test]
fn headings_start_sections_with_their_path() {
    let md = "# Guide\n\nIntro text.\n\n## Install\n\nRun the installer.\n\n### On Linux\n\nUse the package.\n\n## Use\n\nCall it.\n";
    let cut = cut_markdown(md, 200);
    assert_eq!(cut.title.as_deref(), Some("Guide"));
    let got: Vec<(&str, Vec<&str>)> = cut
        .pieces
        .iter()
        .map(|p| {
            (
                p.text.as_str(),
                p.headings.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("# Guide\n\nIntro text.", vec!["Guide"]),
            ("## Install\n\nRun the installer.", vec!["Guide", "Install"]),
            (
                "### On Linux\n\nUse the package.",
                vec!["Guide", "Install", "On Linux"]
            ),
            ("## Use\n\nCall it.", vec!["Guide", "Use"]),
        ]
    );
}

#[test]
fn text_before_any_heading_and_closing_hashes() {
    let md = "Preface line.\n\n## Part ##\n\nBody.";
    let cut = cut_markdown(md, 200);
    assert_eq!(cut.title, None, "no level-1 heading");
    assert_eq!(cut.pieces[0].text, "Preface line.");
    assert!(cut.pieces[0].headings.is_empty());
    assert_eq!(cut.pieces[1].headings, vec!["Part"]);
}

#[test]
fn hashes_in_code_fences_and_without_space_are_not_headings() {
    let md = "# Title\n\n```bash\n# a comment\n\necho hi\n```\n\n#hashtag is text\n";
    let cut = cut_markdown(md, 200);
    assert_eq!(cut.pieces.len(), 1);
    assert!(cut.pieces[0].text.contains("# a comment\n\necho hi"));
    assert!(cut.pieces[0].text.ends_with("#hashtag is text"));
    assert_eq!(cut.pieces[0].headings, vec!["Title"]);
}

#[test]
fn paragraphs_are_packed_whole_up_to_the_limit() {
    // Each paragraph is 30 words = 40 tokens; 200 tokens hold four with the heading.
    let para = words(30, "alpha");
    let md = format!("## H\n\n{}", [para.as_str(); 10].join("\n\n"));
    let cut = cut_markdown(&md, 200);
    for piece in &cut.pieces {
        assert!(estimate_tokens(&piece.text) <= 200, "{}", piece.text);
        // Never cut inside a paragraph: every paragraph appears whole.
        for p in piece.text.split("\n\n").filter(|p| !p.starts_with('#')) {
            assert_eq!(p, para);
        }
    }
    let total: usize = cut
        .pieces
        .iter()
        .map(|p| p.text.matches(&para).count())
        .sum();
    assert_eq!(total, 10, "no paragraph lost or repeated");
    assert!(cut.pieces.len() >= 3 && cut.pieces.len() <= 4);
    assert!(cut.pieces[0].text.starts_with("## H\n\n"));
    assert!(!cut.pieces[1].text.starts_with("## H"));
}

#[test]
fn an_oversized_paragraph_is_cut_at_sentences_then_words() {
    let sentence = format!("{}.", words(20, "beta"));
    let para = vec![sentence.as_str(); 30].join(" ");
    let cut = cut_plain(&para, 100);
    assert!(cut.len() > 1);
    for piece in &cut {
        assert!(estimate_tokens(&piece.text) <= 100);
        assert!(piece.text.ends_with('.'), "cut at a sentence end");
    }
    let words_kept: usize = cut.iter().map(|p| p.text.split_whitespace().count()).sum();
    assert_eq!(words_kept, 600);

    let run_on = words(1000, "gamma");
    let cut = cut_plain(&run_on, 50);
    assert!(cut.iter().all(|p| estimate_tokens(&p.text) <= 50));
    let words_kept: usize = cut.iter().map(|p| p.text.split_whitespace().count()).sum();
    assert_eq!(words_kept, 1000);

    let blob = "z".repeat(1000);
    let cut = cut_plain(&blob, 50);
    assert!(cut.iter().all(|p| estimate_tokens(&p.text) <= 50));
    assert_eq!(cut.iter().map(|p| p.text.len()).sum::<usize>(), 1000);
}

#[test]
fn front_matter_and_empty_sections_produce_nothing() {
    let md = "---\ntitle: x\n---\n# Top\n\n## Empty\n\n### Child\n\nText.";
    let cut = cut_markdown(md, 200);
    assert_eq!(cut.title.as_deref(), Some("Top"));
    assert_eq!(cut.pieces.len(), 1);
    assert_eq!(cut.pieces[0].headings, vec!["Top", "Empty", "Child"]);
    assert!(cut_markdown("", 200).pieces.is_empty());
    assert!(cut_plain("\n\n \n", 200).is_empty());
}
