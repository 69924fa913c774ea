//! Apps are shared, so they never hold credentials: every string of a document is scanned
//! for what looks like one. The problem names the kind of secret, never the secret itself.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::doc::AppDoc;
use crate::load::Problem;

/// (what it looks like, pattern). The formats are the issuers' own: AWS access key ids
/// (`AKIA`/`ASIA` and 16 characters), PEM private keys, JSON web tokens (three base64url
/// parts, the first two JSON objects), OpenAI and Anthropic keys (`sk-`), GitHub tokens
/// (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`), Slack tokens (`xox?-`), Google API
/// keys (`AIza` and 35 characters), bearer tokens, credentials in URLs, and assignments of
/// passwords, secrets and keys.
static PATTERNS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        ("an AWS access key id", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
        (
            "an AWS secret access key",
            r"(?i)aws.{0,20}secret.{0,20}[:=]\s*['\x22]?[A-Za-z0-9/+]{40}\b",
        ),
        ("a private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        (
            "a JSON web token",
            r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
        ),
        ("an API key (sk-...)", r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"),
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
        (
            "a password or key assignment",
            r#"(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|access[_-]?token|auth[_-]?token|client[_-]?secret)\s*[:=]\s*['"]?[^\s'"]{8,}"#,
        ),
    ]
    .into_iter()
    .map(|(what, pattern)| (what, Regex::new(pattern).expect("the patterns compile")))
    .collect()
});

/// What `text` looks like, if it holds a secret.
pub(crate) fn find(text: &str) -> Option<&'static str> {
    PATTERNS
        .iter()
        .find(|(_, re)| re.is_match(text))
        .map(|(what, _)| *what)
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
        ] {
            assert_eq!(find(text), None, "{text}");
        }
    }
}
