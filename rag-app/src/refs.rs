//! References in node prompts: `{{@id}}` and `{{@id.field}}`.

/// A reference to another node's output in a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// The node referenced.
    pub node: String,
    /// The field named (`citations`, `text`, `image`), or `None` for the node's default.
    pub field: Option<String>,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{{{{@{}.{field}}}}}", self.node),
            None => write!(f, "{{{{@{}}}}}", self.node),
        }
    }
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// Text taken as written.
    Text(&'a str),
    /// A reference, replaced by the node's value.
    Ref(Reference),
}

/// Whether `c` may appear in a node id or a field name.
pub(crate) fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Splits `template` into text and references. A `{{@` that does not open a well-formed
/// reference is an error (with its byte offset): a misspelt reference must not reach a model
/// as text. `{{` without `@` is text.
pub(crate) fn parse(template: &str) -> Result<Vec<Piece<'_>>, Vec<String>> {
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut rest = 0;
    let mut search = 0;
    while let Some(found) = template[search..].find("{{@") {
        let start = search + found;
        let body = &template[start + 3..];
        let Some(end) = body.find("}}") else {
            errors.push(format!(
                "the reference at byte {start} has no closing `}}}}`"
            ));
            break;
        };
        let inner = &body[..end];
        let (node, field) = match inner.split_once('.') {
            Some((node, field)) => (node, Some(field)),
            None => (inner, None),
        };
        let well_formed = |s: &str| !s.is_empty() && s.chars().all(is_id_char);
        if well_formed(node) && field.is_none_or(well_formed) {
            if start > rest {
                pieces.push(Piece::Text(&template[rest..start]));
            }
            pieces.push(Piece::Ref(Reference {
                node: node.to_owned(),
                field: field.map(str::to_owned),
            }));
            rest = start + 3 + end + 2;
        } else {
            errors.push(format!(
                "`{{{{@{inner}}}}}` at byte {start} is not a reference: write {{{{@id}}}} or {{{{@id.field}}}} (letters, digits, `_` and `-`)"
            ));
        }
        search = start + 3 + end + 2;
    }
    if rest < template.len() {
        pieces.push(Piece::Text(&template[rest..]));
    }
    if errors.is_empty() {
        Ok(pieces)
    } else {
        Err(errors)
    }
}

/// The references of `template` (none when it does not parse).
pub(crate) fn references(template: &str) -> impl Iterator<Item = Reference> + '_ {
    parse(template)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| match p {
            Piece::Ref(r) => Some(r),
            Piece::Text(_) => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(node: &str, field: Option<&str>) -> Piece<'static> {
        Piece::Ref(Reference {
            node: node.into(),
            field: field.map(Into::into),
        })
    }

    #[test]
    fn references_and_text_are_split() {
        assert_eq!(
            parse("Sum up {{@doc}} and cite {{@answer.citations}}.").unwrap(),
            vec![
                Piece::Text("Sum up "),
                r("doc", None),
                Piece::Text(" and cite "),
                r("answer", Some("citations")),
                Piece::Text("."),
            ]
        );
        assert_eq!(
            parse("{{@a}}{{@b}}").unwrap(),
            vec![r("a", None), r("b", None)]
        );
        assert_eq!(
            parse("plain {{ braces }}").unwrap(),
            vec![Piece::Text("plain {{ braces }}")]
        );
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn malformed_references_are_errors() {
        for bad in [
            "{{@}}",
            "{{@ a}}",
            "{{@a.}}",
            "{{@a.b.c}}",
            "{{@a",
            "x {{@a!}}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("{{@a}} {{@ b}} {{@c d}}").unwrap_err().len(), 2);
    }

    #[test]
    fn display_is_the_source_form() {
        let reference = Reference {
            node: "a".into(),
            field: Some("citations".into()),
        };
        assert_eq!(reference.to_string(), "{{@a.citations}}");
    }
}
