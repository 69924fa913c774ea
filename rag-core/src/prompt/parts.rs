//! The handlebars parts of a prompt that a user may replace: the system text, the block of one
//! passage, and the framing of the question.
//!
//! Templates are checked when a template is built: one that does not compile, or that names a
//! variable or helper that does not exist, fails `build()` with the template's line and column.
//! Values are plain data to handlebars, never templates, so a question containing `{{system}}`
//! is rendered as those characters. Output is not HTML-escaped: prompts are not HTML, and the
//! family's markers are neutralized instead ([`super::sanitize`]).

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

impl Parts {
    /// Compiles and checks the parts.
    pub(crate) fn compile(sources: &PartSources) -> Result<Parts> {
        let mut registry = Handlebars::new();
        registry.register_escape_fn(handlebars::no_escape);
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
            registry.register_template(name, template);
        }
        let system = registry
            .render(SYSTEM, &serde_json::Value::Object(Default::default()))
            .map_err(|e| render_error(SYSTEM, e))?
            .trim()
            .to_owned();
        Ok(Parts { registry, system })
    }

    /// Renders one passage block; the values must already be neutralized.
    pub(crate) fn passage(&self, data: &PassageData<'_>) -> Result<String> {
        self.registry
            .render(PASSAGE, data)
            .map_err(|e| render_error(PASSAGE, e))
    }

    /// Renders the question framing, trimmed; the question must already be neutralized.
    pub(crate) fn question(&self, question: &str) -> Result<String> {
        let rendered = self
            .registry
            .render(QUESTION, &QuestionData { question })
            .map_err(|e| render_error(QUESTION, e))?;
        Ok(rendered.trim().to_owned())
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
        let block = parts
            .passage(&PassageData {
                index: 2,
                id: "p",
                title: "",
                source: "s3://b/k",
                text: "body & <b>",
            })
            .unwrap();
        assert_eq!(
            block,
            "<document index=\"2\">\n<source>s3://b/k</source>\n<document_content>\nbody & <b>\n</document_content>\n</document>"
        );
        assert_eq!(parts.question("  why? ").unwrap(), "why?");
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
            parts.question("{{system}} {{> x}} {{#if a}}").unwrap(),
            "Q: {{system}} {{> x}} {{#if a}}"
        );
    }
}
