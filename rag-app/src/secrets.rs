//! Apps are shared, so they never hold credentials: every string of a document is scanned
//! for what looks like one. The problem names the kind of secret, never the secret itself.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::doc::AppDoc;
use crate::load::Problem;

/// (what it looks like, pattern). The formats are the issuers' own: AWS access key ids
/// (`AKIA`/`ASIA` and 16 characters), Amazon Bedrock API keys (long-term `ABSK...`,
/// short-term `bedrock-api-key-...`), PEM private keys, JSON web tokens (three base64url
/// parts, the first two JSON objects), OpenAI and Anthropic keys (`sk-`), Stripe keys
/// (`sk_live_`, `rk_test_`, ...), GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`,
/// `github_pat_`), GitLab tokens (`glpat-`), Hugging Face tokens (`hf_`), Slack tokens
/// (`xox?-`), Google API keys (`AIza` and 35 characters), bearer tokens, credentials in URLs,
/// and assignments of passwords, secrets and keys.
static PATTERNS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        (
            "an AWS access key id",
            r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
        ),
        (
            "an Amazon Bedrock API key",
            r"\b(?:ABSK|bedrock-api-key-)[A-Za-z0-9+/=_-]{20,}",
        ),
        (
            "an AWS secret access key",
            r"(?i)aws.{0,20}secret.{0,20}[:=]\s*['\x22]?[A-Za-z0-9/+]{40}\b",
        ),
        ("a private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        (
            "a JSON web token",
            r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
        ),
        (
            "an API key (sk-...)",
            r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}",
        ),
        ("a Stripe key", r"\b[sr]k_(?:live|test)_[0-9A-Za-z]{16,}"),
        ("a GitLab token", r"\bglpat-[0-9A-Za-z_-]{20,}"),
        ("a Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}"),
        (
            "a GitHub token",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
        ),
        ("a Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
        ("a Google API key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
        ("a bearer token", r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{20,}"),
        (
            "a password in a URL",
            r"(?i)\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@",
        ),
    ]
    .into_iter()
    .map(|(what, pattern)| (what, Regex::new(pattern).expect("the patterns compile")))
    .collect()
});

/// `password: value`, `api_key=value`, `DB_PASSWORD=value` (a name may end an environment
/// variable's: `_` is a word character, so `\b` would miss it), ...: the value is group 1.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(?:^|[^a-z])(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|access[_-]?token|auth[_-]?token|session[_-]?token|client[_-]?secret)\s*[:=]\s*['"]?([^\s'"]{8,})"#,
    )
    .expect("the pattern compiles")
});

/// Whether an assigned value looks like a credential rather than prose: not a reference
/// (`Secret: {{@riddle}}`), and not a plain word ("Tell me a secret: something") — a
/// credential holds a digit or a symbol.
fn credential_like(value: &str) -> bool {
    let value = value.trim_end_matches(['.', ',', ';', ':', '!', '?', ')']);
    !value.starts_with("{{@") && value.chars().any(|c| !c.is_alphabetic())
}

/// What `text` looks like, if it holds a secret.
pub(crate) fn find(text: &str) -> Option<&'static str> {
    PATTERNS
        .iter()
        .find(|(_, re)| re.is_match(text))
        .map(|(what, _)| *what)
        .or_else(|| {
            ASSIGNMENT
                .captures_iter(text)
                .any(|c| c.get(1).is_some_and(|v| credential_like(v.as_str())))
                .then_some("a password or key assignment")
        })
}

/// A problem for every string (keys included) of `doc` that looks like a secret.
pub(crate) fn scan(doc: &AppDoc) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Ok(value) = serde_json::to_value(doc) {
        walk(&value, "$".to_owned(), &mut problems);
    }
    problems
}

fn flag(path: &str, text: &str, problems: &mut Vec<Problem>) {
    if let Some(what) = find(text) {
        problems.push(Problem::new(
            path,
            format!(
                "this looks like {what}: apps are shared, so credentials never go in them (the host holds them; an app names a binding)"
            ),
        ));
    }
}

fn walk(value: &Value, path: String, problems: &mut Vec<Problem>) {
    match value {
        Value::String(s) => flag(&path, s, problems),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(v, format!("{path}[{i}]"), problems);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let child = if !k.is_empty() && k.chars().all(crate::refs::is_id_char) {
                    format!("{path}.{k}")
                } else {
                    format!("{path}[{}]", Value::String(k.clone()))
                };
                flag(&child, k, problems);
                walk(v, child, problems);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn secrets_are_found() {
        for (text, what) in [
            ("key AKIAIOSFODNN7EXAMPLE here", "an AWS access key id"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "an AWS secret access key",
            ),
            ("-----BEGIN RSA PRIVATE KEY-----\nMIIE", "a private key"),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "a JSON web token",
            ),
            ("sk-proj-abcdefghijklmnopqrstuvwx", "an API key (sk-...)"),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "a GitHub token"),
            ("Authorization: Bearer abcdefghijklmnopqrstuvwxyz", "a bearer token"),
            ("postgres://admin:hunter22@db.internal/app", "a password in a URL"),
            ("password: correct-horse-battery", "a password or key assignment"),
            ("DB_PASSWORD=hunter22hunter", "a password or key assignment"),
            ("aws_session_token=IQoJb3JpZ2luX2VjEJr//////////wEaCXVz", "a password or key assignment"),
            (
                "ABSKQmVkcm9ja0FQSUtleS1leGFtcGxlOnNlY3JldA==",
                "an Amazon Bedrock API key",
            ),
            (
                "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249",
                "an Amazon Bedrock API key",
            ),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "a Stripe key"),
            ("glpat-xxxxxxxxxxxxxxxxxxxx", "a GitLab token"),
            ("hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "a Hugging Face token"),
        ] {
            assert_eq!(find(text), Some(what), "{text}");
        }
    }

    #[test]
    fn ordinary_prompts_are_not_secrets() {
        for text in [
            "Summarize {{@doc}} in three bullet points.",
            "Explain how to rotate an AWS access key and where the secret key is shown.",
            "The password policy requires 12 characters.",
            "anthropic.claude-3-haiku-20240307-v1:0",
            "https://docs.aws.amazon.com/bedrock/latest/userguide/what-is-bedrock.html",
            "docs",
            "Tell me a secret: something only you would know.",
            "Secret: {{@riddle}}",
            "Password: {{@password_hint}} (never the password itself)",
            "The api_key: required for every call, sent in a header.",
        ] {
            assert_eq!(find(text), None, "{text}");
        }
    }
}
