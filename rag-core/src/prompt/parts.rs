//! The handlebars parts of a prompt that a user may replace: the system text, the block of one
//! passage, and the framing of the question.
//!
//! Templates are checked when a template is built: one that does not compile, or that names a
//! variable or helper that does not exist, fails `build()` with the template's line and column.
//! Values are plain data to handlebars, never templates, so a question containing `{{system}}`
//! is rendered as those characters. Output is not HTML-escaped: prompts are not HTML, and the
//! family's markers are neutralized instead ([`super::sanitize`]), on the rendered text with
//! the template's own text as the only trusted span: rendering reports where each value
//! landed.

use std::ops::Range;

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Handlebars, Path};
use serde::Serialize;

use crate::error::{Error, Result};

/// The system text template: it has no variables.
pub const SYSTEM_VARIABLES: &[&str] = &[];
/// The variables of the passage template: the passage's number in the prompt (from 1), its
/// id, title (empty when unknown), source (its uri, else its title, else its id) and text.
pub const PASSAGE_VARIABLES: &[&str] = &["index", "id", "title", "source", "text"];
/// The variables of the question template.
pub const QUESTION_VARIABLES: &[&str] = &["question"];

/// Block helpers a template may use.
const BLOCK_HELPERS: &[&str] = &["if", "unless"];
/// Helpers a template may call with parameters (handlebars' built-in comparisons).
const HELPERS: &[&str] = &[
    "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not", "len",
];

/// The default system text of every family.
pub const DEFAULT_SYSTEM: &str = "You are a helpful assistant. Answer the user's question using \
only the numbered documents provided. Cite the documents you use by their number in square \
brackets, like [1]. If the documents do not contain the answer, say that you do not know.";

/// The default passage block (Anthropic's long-context document format).
pub const DEFAULT_PASSAGE: &str = "<document index=\"{{index}}\">\n<source>{{source}}</source>\n\
{{#if title}}<title>{{title}}</title>\n{{/if}}<document_content>\n{{text}}\n</document_content>\n</document>";

/// The default question framing.
pub const DEFAULT_QUESTION: &str = "{{question}}";

pub(crate) const SYSTEM: &str = "system";
pub(crate) const PASSAGE: &str = "passage";
pub(crate) const QUESTION: &str = "question";

/// The sources of the three parts, before they are compiled.
#[derive(Debug, Clone)]
pub(crate) struct PartSources {
    pub(crate) system: String,
    pub(crate) passage: String,
    pub(crate) question: String,
}

impl Default for PartSources {
    fn default() -> Self {
        PartSources {
            system: DEFAULT_SYSTEM.to_owned(),
            passage: DEFAULT_PASSAGE.to_owned(),
            question: DEFAULT_QUESTION.to_owned(),
        }
    }
}

/// The compiled parts.
#[derive(Debug, Clone)]
pub(crate) struct Parts {
    registry: Handlebars<'static>,
    /// The system text, rendered once (it has no variables), trimmed.
    pub(crate) system: String,
    /// The passage template as a plain list of pieces, when it uses only text, variables and
    /// `if`/`unless` on a variable (as the defaults do): rendering it needs no JSON context.
    fast_passage: Option<Fast>,
    fast_question: Option<Fast>,
}

/// A template of text, variables and `if`/`unless` blocks, rendered without handlebars'
/// JSON context; it renders exactly what handlebars renders for it (whitespace control is
/// applied when handlebars compiles, so the compiled elements already hold the final text).
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Var(usize),
    If {
        var: usize,
        negate: bool,
        then: Fast,
        otherwise: Fast,
    },
}

type Fast = Vec<Piece>;

fn fast_form(template: &Template, variables: &[&str]) -> Option<Fast> {
    let var = |p: &Parameter| match p {
        Parameter::Name(_) | Parameter::Path(Path::Relative(_)) => {
            let name = parameter_name(p)?;
            variables.iter().position(|v| *v == name)
        }
        _ => None,
    };
    let mut pieces = Vec::with_capacity(template.elements.len());
    for element in &template.elements {
        match element {
            TemplateElement::RawString(text) => pieces.push(Piece::Text(text.clone())),
            TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h)
                if h.params.is_empty() && h.hash.is_empty() =>
            {
                pieces.push(Piece::Var(var(&h.name)?));
            }
            TemplateElement::HelperBlock(h) if h.params.len() == 1 && h.block_param.is_none() => {
                let negate = match parameter_name(&h.name)? {
                    "if" => false,
                    "unless" => true,
                    _ => return None,
                };
                let branch = |t: &Option<Template>| match t {
                    Some(t) => fast_form(t, variables),
                    None => Some(Vec::new()),
                };
                pieces.push(Piece::If {
                    var: var(&h.params[0])?,
                    negate,
                    then: branch(&h.template)?,
                    otherwise: branch(&h.inverse)?,
                });
            }
            _ => return None,
        }
    }
    Some(pieces)
}

/// A value of the fast renderer: handlebars' truthiness is emptiness for strings, zero for
/// numbers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Str(&'a str),
    Num(usize),
}

/// Renders `pieces` into `out`, recording where each value landed (empty values too): those
/// are the untrusted spans of the output, as handlebars' path marks them.
fn render_fast(
    pieces: &[Piece],
    values: &[Value<'_>],
    out: &mut String,
    spans: &mut Vec<Range<usize>>,
) {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var(i) => match values[*i] {
                Value::Str(s) => {
                    let start = out.len();
                    out.push_str(s);
                    spans.push(start..out.len());
                }
                Value::Num(n) => {
                    use std::fmt::Write;
                    let start = out.len();
                    let _ = write!(out, "{n}");
                    spans.push(start..out.len());
                }
            },
            Piece::If {
                var,
                negate,
                then,
                otherwise,
            } => {
                let truthy = match values[*var] {
                    Value::Str(s) => !s.is_empty(),
                    Value::Num(n) => n != 0,
                };
                let branch = if truthy != *negate { then } else { otherwise };
                // A value chose what template text is joined here: both edges of the block
                // are untrusted, as empty spans.
                spans.push(out.len()..out.len());
                render_fast(branch, values, out, spans);
                spans.push(out.len()..out.len());
            }
        }
    }
}

#[derive(Serialize)]
pub(crate) struct PassageData<'a> {
    pub(crate) index: usize,
    pub(crate) id: &'a str,
    pub(crate) title: &'a str,
    pub(crate) source: &'a str,
    pub(crate) text: &'a str,
}

#[derive(Serialize)]
struct QuestionData<'a> {
    question: &'a str,
}

/// Marks the start and end of a value in handlebars' output; the escape function wraps every
/// value it writes with them (handlebars escapes values, never the template's own text), and
/// [`take_spans`] strips them and records where the values were.
const VALUE_START: char = '\u{E000}';
const VALUE_END: char = '\u{E001}';
/// Marks the edges of a block helper in handlebars' output: raw text put around every block
/// when a template is compiled, since a value chose what template text is joined there.
const BLOCK_EDGE: char = '\u{E002}';

/// Puts [`BLOCK_EDGE`] raw text before and after every block of `template`, and around the
/// text of its branches.
fn mark_block_edges(template: &mut Template) {
    let edge = || TemplateElement::RawString(BLOCK_EDGE.to_string());
    let mut elements = Vec::with_capacity(template.elements.len() + 4);
    let mut mapping = Vec::with_capacity(template.mapping.len() + 4);
    for (i, mut element) in std::mem::take(&mut template.elements)
        .into_iter()
        .enumerate()
    {
        let at = template.mapping.get(i).cloned();
        let block = matches!(element, TemplateElement::HelperBlock(_));
        if let TemplateElement::HelperBlock(h) = &mut element {
            for branch in [&mut h.template, &mut h.inverse].into_iter().flatten() {
                mark_block_edges(branch);
            }
        }
        if block {
            elements.push(edge());
            mapping.extend(at.clone());
        }
        elements.push(element);
        mapping.extend(at.clone());
        if block {
            elements.push(edge());
            mapping.extend(at);
        }
    }
    template.elements = elements;
    template.mapping = mapping;
}

fn mark_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 6);
    out.push(VALUE_START);
    // A value cannot fake a mark: the private-use marks in it become U+FFFD.
    for c in value.chars() {
        out.push(if matches!(c, VALUE_START | VALUE_END | BLOCK_EDGE) {
            '\u{FFFD}'
        } else {
            c
        });
    }
    out.push(VALUE_END);
    out
}

/// Strips the value marks from handlebars' output into `out`, recording each value's span.
fn take_spans(rendered: &str, out: &mut String, spans: &mut Vec<Range<usize>>) {
    let mut start = None;
    for c in rendered.chars() {
        match c {
            BLOCK_EDGE => spans.push(out.len()..out.len()),
            VALUE_START => start = Some(out.len()),
            VALUE_END => {
                if let Some(start) = start.take() {
                    spans.push(start..out.len());
                }
            }
            c => out.push(c),
        }
    }
}

/// Whether a template uses `{{{triple}}}` expressions anywhere (they skip the escape
/// function, so handlebars' output would not mark their values).
fn uses_triple_stash(template: &Template) -> bool {
    template.elements.iter().any(|element| match element {
        TemplateElement::HtmlExpression(_) => true,
        TemplateElement::HelperBlock(h) => [&h.template, &h.inverse]
            .into_iter()
            .flatten()
            .any(uses_triple_stash),
        _ => false,
    })
}

impl Parts {
    /// Compiles and checks the parts.
    pub(crate) fn compile(sources: &PartSources) -> Result<Parts> {
        let mut registry = Handlebars::new();
        registry.register_escape_fn(mark_value);
        let mut fast = Vec::with_capacity(3);
        for (name, source, variables, required) in [
            (SYSTEM, &sources.system, SYSTEM_VARIABLES, None),
            (PASSAGE, &sources.passage, PASSAGE_VARIABLES, Some("text")),
            (
                QUESTION,
                &sources.question,
                QUESTION_VARIABLES,
                Some("question"),
            ),
        ] {
            let template = compile_checked(name, source, variables)?;
            if let Some(required) = required {
                if !uses_variable(&template, required) {
                    return Err(template_error(
                        name,
                        format!("the {name} template must use `{{{{{required}}}}}`"),
                        None,
                    ));
                }
            }
            let fast_template = fast_form(&template, variables);
            if fast_template.is_none() && uses_triple_stash(&template) {
                return Err(template_error(
                    name,
                    "`{{{...}}}` is only supported in templates of plain variables and \
                     `if`/`unless`; write `{{...}}` (prompts are never HTML-escaped)"
                        .to_owned(),
                    None,
                ));
            }
            fast.push(fast_template);
            let mut template = template;
            mark_block_edges(&mut template);
            registry.register_template(name, template);
        }
        let fast_question = fast.pop().flatten();
        let fast_passage = fast.pop().flatten();
        let system = registry
            .render(SYSTEM, &serde_json::Value::Object(Default::default()))
            .map_err(|e| render_error(SYSTEM, e))?
            .trim()
            .to_owned();
        Ok(Parts {
            registry,
            system,
            fast_passage,
            fast_question,
        })
    }

    /// Renders one passage block into `out`, recording the spans of its values in `spans`
    /// (offsets into `out`).
    pub(crate) fn passage(
        &self,
        data: &PassageData<'_>,
        out: &mut String,
        spans: &mut Vec<Range<usize>>,
    ) -> Result<()> {
        match &self.fast_passage {
            Some(pieces) => {
                // In the order of PASSAGE_VARIABLES.
                let values = [
                    Value::Num(data.index),
                    Value::Str(data.id),
                    Value::Str(data.title),
                    Value::Str(data.source),
                    Value::Str(data.text),
                ];
                render_fast(pieces, &values, out, spans);
            }
            None => {
                let rendered = self
                    .registry
                    .render(PASSAGE, data)
                    .map_err(|e| render_error(PASSAGE, e))?;
                take_spans(&rendered, out, spans);
            }
        }
        Ok(())
    }

    /// Renders the question framing, trimmed, with the spans of the question in it.
    pub(crate) fn question(&self, question: &str) -> Result<(String, Vec<Range<usize>>)> {
        let mut out = String::with_capacity(question.len() + 64);
        let mut spans = Vec::with_capacity(1);
        match &self.fast_question {
            Some(pieces) => render_fast(pieces, &[Value::Str(question)], &mut out, &mut spans),
            None => {
                let rendered = self
                    .registry
                    .render(QUESTION, &QuestionData { question })
                    .map_err(|e| render_error(QUESTION, e))?;
                take_spans(&rendered, &mut out, &mut spans);
            }
        }
        let start = out.len() - out.trim_start().len();
        let end = out.trim_end().len().max(start);
        let trimmed = out[start..end].to_owned();
        let spans = spans
            .into_iter()
            .map(|s| s.start.clamp(start, end) - start..s.end.clamp(start, end) - start)
            .collect();
        Ok((trimmed, spans))
    }
}

fn template_error(name: &str, message: String, pos: Option<(usize, usize)>) -> Error {
    Error::Template {
        name: name.to_owned(),
        message,
        line: pos.map(|p| p.0),
        column: pos.map(|p| p.1),
    }
}

fn render_error(name: &str, e: handlebars::RenderError) -> Error {
    let pos = e.line_no.zip(e.column_no);
    template_error(name, e.reason().to_string(), pos)
}

/// Compiles `source` and checks that it names only `variables` and known helpers.
fn compile_checked(name: &str, source: &str, variables: &[&str]) -> Result<Template> {
    let template = Template::compile(source).map_err(|e| {
        let reason = e.reason().to_string();
        template_error(name, reason, e.pos())
    })?;
    check_elements(&template, variables).map_err(|(message, pos)| {
        let known = if variables.is_empty() {
            "it has no variables".to_owned()
        } else {
            format!("its variables are {}", variables.join(", "))
        };
        template_error(name, format!("{message}; {known}"), pos)
    })?;
    Ok(template)
}

type CheckError = (String, Option<(usize, usize)>);

fn check_elements(template: &Template, variables: &[&str]) -> Result<(), CheckError> {
    for (i, element) in template.elements.iter().enumerate() {
        let pos = template.mapping.get(i).map(|m| (m.0, m.1));
        let at = |message: String| (message, pos);
        match element {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                check_expression(h, variables).map_err(at)?;
            }
            TemplateElement::HelperBlock(h) => {
                let helper = parameter_name(&h.name).unwrap_or_default();
                if !BLOCK_HELPERS.contains(&helper) {
                    return Err(at(format!(
                        "unknown block helper `{helper}` (known: {})",
                        BLOCK_HELPERS.join(", ")
                    )));
                }
                if h.params.len() != 1 || !h.hash.is_empty() {
                    return Err(at(format!("`{helper}` takes exactly one parameter")));
                }
                check_parameter(&h.params[0], variables).map_err(at)?;
                for inner in [&h.template, &h.inverse].into_iter().flatten() {
                    check_elements(inner, variables)?;
                }
            }
            _ => {
                return Err(at(
                    "partials, decorators and raw blocks are not supported in prompt templates"
                        .to_owned(),
                ))
            }
        }
    }
    Ok(())
}

fn check_expression(h: &HelperTemplate, variables: &[&str]) -> Result<(), String> {
    if h.params.is_empty() && h.hash.is_empty() {
        return check_parameter(&h.name, variables);
    }
    let helper = parameter_name(&h.name).unwrap_or_default();
    if !HELPERS.contains(&helper) {
        return Err(format!(
            "unknown helper `{helper}` (known: {})",
            HELPERS.join(", ")
        ));
    }
    if !h.hash.is_empty() {
        return Err(format!("`{helper}` takes no named parameters"));
    }
    h.params
        .iter()
        .try_for_each(|p| check_parameter(p, variables))
}

fn check_parameter(p: &Parameter, variables: &[&str]) -> Result<(), String> {
    match p {
        Parameter::Literal(_) => Ok(()),
        Parameter::Subexpression(sub) => {
            let helper = sub.name();
            if !HELPERS.contains(&helper) {
                return Err(format!(
                    "unknown helper `{helper}` (known: {})",
                    HELPERS.join(", ")
                ));
            }
            sub.params()
                .into_iter()
                .flatten()
                .try_for_each(|p| check_parameter(p, variables))
        }
        _ => {
            let name = parameter_name(p).unwrap_or_default();
            if variables.contains(&name) {
                Ok(())
            } else {
                Err(format!("unknown variable `{name}`"))
            }
        }
    }
}

fn parameter_name(p: &Parameter) -> Option<&str> {
    match p {
        Parameter::Name(n) => Some(n),
        Parameter::Path(Path::Relative((_, raw))) => Some(raw),
        Parameter::Path(Path::Local((_, _, raw))) => Some(raw),
        _ => None,
    }
}

/// Whether `template` uses `variable` anywhere (the checks above allow nothing else to hide it).
fn uses_variable(template: &Template, variable: &str) -> bool {
    fn in_param(p: &Parameter, variable: &str) -> bool {
        match p {
            Parameter::Subexpression(sub) => sub
                .params()
                .into_iter()
                .flatten()
                .any(|p| in_param(p, variable)),
            _ => parameter_name(p) == Some(variable),
        }
    }
    template.elements.iter().any(|element| match element {
        TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
            in_param(&h.name, variable) || h.params.iter().any(|p| in_param(p, variable))
        }
        TemplateElement::HelperBlock(h) => [&h.template, &h.inverse]
            .into_iter()
            .flatten()
            .any(|t| uses_variable(t, variable)),
        _ => false,
    })
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // lists of one span
mod tests {
    use super::*;

    fn sources(system: &str, passage: &str, question: &str) -> PartSources {
        PartSources {
            system: system.into(),
            passage: passage.into(),
            question: question.into(),
        }
    }

    fn template_err(err: Error) -> (String, String, Option<usize>, Option<usize>) {
        match err {
            Error::Template {
                name,
                message,
                line,
                column,
            } => (name, message, line, column),
            other => panic!("expected a template error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_compile_and_render() {
        let parts = Parts::compile(&PartSources::default()).unwrap();
        assert_eq!(parts.system, DEFAULT_SYSTEM);
        let mut block = String::new();
        let mut spans = Vec::new();
        parts
            .passage(
                &PassageData {
                    index: 2,
                    id: "p",
                    title: "",
                    source: "s3://b/k",
                    text: "body & <b>",
                },
                &mut block,
                &mut spans,
            )
            .unwrap();
        assert_eq!(
            spans.iter().map(|s| &block[s.clone()]).collect::<Vec<_>>(),
            // The `if title` block's edges are empty spans: a value chose what is there.
            ["2", "s3://b/k", "", "", "body & <b>"]
        );
        assert_eq!(
            block,
            "<document index=\"2\">\n<source>s3://b/k</source>\n<document_content>\nbody & <b>\n</document_content>\n</document>"
        );
        assert_eq!(
            parts.question("  why? ").unwrap(),
            ("why?".to_owned(), vec![0..4])
        );
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let err = Parts::compile(&sources(
            "ok",
            "line one\n{{#if title}}\n{{text}}",
            "{{question}}",
        ))
        .unwrap_err();
        let (name, _, line, column) = template_err(err);
        assert_eq!(name, "passage");
        assert!(line.is_some() && column.is_some());
    }

    #[test]
    fn unknown_variables_fail_with_their_position() {
        let err = Parts::compile(&sources(
            "ok",
            "{{text}}\n  {{#if title}}{{titel}}{{/if}}",
            "{{question}}",
        ))
        .unwrap_err();
        let (name, message, line, column) = template_err(err);
        assert_eq!(name, "passage");
        assert!(message.contains("`titel`"), "{message}");
        assert!(
            message.contains("index, id, title, source, text"),
            "{message}"
        );
        assert_eq!(line, Some(2));
        assert!(column.unwrap() > 1);

        let err =
            Parts::compile(&sources("Hi {{user}}", DEFAULT_PASSAGE, "{{question}}")).unwrap_err();
        let (name, message, line, column) = template_err(err);
        assert_eq!((name.as_str(), line, column), ("system", Some(1), Some(4)));
        assert!(message.contains("no variables"), "{message}");
    }

    #[test]
    fn unknown_helpers_and_partials_are_rejected() {
        for passage in [
            "{{#each text}}{{this}}{{/each}}{{text}}",
            "{{shout text}}",
            "{{> other}}{{text}}",
        ] {
            let err = Parts::compile(&sources("ok", passage, "{{question}}")).unwrap_err();
            assert_eq!(template_err(err).0, "passage", "{passage}");
        }
        assert!(Parts::compile(&sources(
            "ok",
            "{{#if (eq index 1)}}best: {{/if}}{{text}}",
            "{{question}}"
        ))
        .is_ok());
    }

    #[test]
    fn required_variables_must_be_used() {
        let err = Parts::compile(&sources("ok", DEFAULT_PASSAGE, "Answer briefly.")).unwrap_err();
        let (name, message, ..) = template_err(err);
        assert_eq!(name, "question");
        assert!(message.contains("{{question}}"), "{message}");
    }

    #[test]
    fn values_are_never_evaluated() {
        let parts = Parts::compile(&sources("S", DEFAULT_PASSAGE, "Q: {{question}}")).unwrap();
        assert_eq!(
            parts.question("{{system}} {{> x}} {{#if a}}").unwrap().0,
            "Q: {{system}} {{> x}} {{#if a}}"
        );
    }

    #[test]
    fn the_fast_renderer_renders_what_handlebars_renders() {
        let templates = [
            DEFAULT_PASSAGE,
            "[{{index}}] {{#if title}}{{title}}{{else}}untitled{{/if}}\n{{{text}}}",
            "{{#unless title}}no title {{/unless}}{{text}} ({{source}}, {{id}})",
            "  {{~text~}}  \n{{! a comment }}",
            "{{#if title}}\n  {{title}}\n{{/if}}\n{{text}}\n",
            "{{#if (eq index 1)}}best {{/if}}{{text}}",
        ];
        let data = [
            PassageData {
                index: 1,
                id: "a",
                title: "T",
                source: "s",
                text: " x & <y> ",
            },
            PassageData {
                index: 12,
                id: "b",
                title: "",
                source: "",
                text: "z",
            },
        ];
        for template in templates {
            let parts = Parts::compile(&sources("", template, DEFAULT_QUESTION)).unwrap();
            let mut slow = parts.clone();
            slow.fast_passage = None;
            for d in &data {
                let (mut fast_out, mut slow_out) = (String::new(), String::new());
                let (mut fast_spans, mut slow_spans) = (Vec::new(), Vec::new());
                parts.passage(d, &mut fast_out, &mut fast_spans).unwrap();
                slow.passage(d, &mut slow_out, &mut slow_spans).unwrap();
                assert_eq!(fast_out, slow_out, "{template:?}");
                // Triple-stash values skip the escape function, so only the fast renderer
                // knows their spans; such templates never take handlebars' path.
                if !template.contains("{{{") {
                    assert_eq!(fast_spans, slow_spans, "{template:?}");
                }
            }
        }
        // Helpers with parameters take handlebars' path, which still reports the spans.
        let parts = Parts::compile(&sources("", templates[5], DEFAULT_QUESTION)).unwrap();
        assert!(parts.fast_passage.is_none());
        let (mut out, mut spans) = (String::new(), Vec::new());
        parts.passage(&data[0], &mut out, &mut spans).unwrap();
        assert_eq!(out, "best  x & <y> ");
        assert_eq!(spans, [0..0, 5..5, 5..14]);
        // ... and refuses triple-stash values, which it could not mark.
        let err = Parts::compile(&sources(
            "",
            "{{#if (eq index 1)}}best {{/if}}{{{text}}}",
            DEFAULT_QUESTION,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("{{{"), "{err}");
        assert!(Parts::compile(&PartSources::default())
            .unwrap()
            .fast_passage
            .is_some());
    }
}
