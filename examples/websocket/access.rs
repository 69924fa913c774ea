//! Which pages may connect (the Origin allowlist), which documents a user may see (the group
//! filter), and what of a source's location a client is shown.

use std::path::{Component, Path, PathBuf};

use axum::http::{header, HeaderMap};
use rag::{Citation, Filter};

/// The pages allowed to open a WebSocket, by their `Origin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Origins {
    /// Exact origins (`https://chat.example.com`). Empty: loopback origins only
    /// (`http://localhost:PORT`, `http://127.0.0.1:PORT`, `http://[::1]:PORT`, any port), which
    /// is the page this server serves on loopback; a page elsewhere cannot claim one, even
    /// through DNS rebinding, since the Origin names the page's own host.
    pub(crate) allowed: Vec<String>,
}

/// What the Origin check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OriginCheck {
    /// An allowed page.
    Allowed,
    /// No Origin header: not a browser (browsers always send one on a WebSocket).
    Absent,
    /// A page that is not allowed.
    Refused(String),
}

impl Origins {
    /// Checks the request's `Origin`.
    pub(crate) fn check(&self, headers: &HeaderMap) -> OriginCheck {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return OriginCheck::Absent;
        };
        let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
        let allowed = if self.allowed.is_empty() {
            is_loopback_origin(origin)
        } else {
            self.allowed
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        };
        if allowed {
            OriginCheck::Allowed
        } else {
            OriginCheck::Refused(origin.to_string())
        }
    }
}

fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().map(|h| format!("[{h}]")),
        None => rest.split(':').next().map(str::to_string),
    };
    let port_ok = |after: &str| {
        after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok())
    };
    match host.as_deref() {
        Some(h @ ("localhost" | "127.0.0.1" | "[::1]")) => port_ok(&rest[h.len()..]),
        _ => false,
    }
}

/// Documents visible by group: the rule behind `--group-attribute`.
///
/// A document is visible to a user when its `attribute` (a string, or a list of strings) holds
/// one of the user's groups (the token's `cognito:groups`) or one of the `public` values. A
/// document without the attribute is visible to no one: the filter fails closed. Anonymous and
/// shared-token users have no groups, so they see the public documents only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupAccess {
    /// The document attribute that names its groups (for example `groups`).
    pub(crate) attribute: String,
    /// Values of that attribute that everyone may see (for example `public`).
    pub(crate) public: Vec<String>,
}

impl GroupAccess {
    /// The filter for a user in `groups`.
    pub(crate) fn filter(&self, groups: &[String]) -> Filter {
        let mut values: Vec<serde_json::Value> = Vec::new();
        for value in self.public.iter().chain(groups) {
            let value = serde_json::Value::from(value.as_str());
            if !values.contains(&value) {
                values.push(value);
            }
        }
        Filter::In {
            key: self.attribute.clone(),
            values,
        }
    }
}

/// The folders the local index read, so a source's file path is shown relative to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SourceRoots(pub(crate) Vec<PathBuf>);

impl SourceRoots {
    /// `citation` as a client may see it: a URL (`https://`, `s3://`) as it is, a file path
    /// (plain or `file://`) relative to a docs root, and no location at all for any other
    /// path, so no server path is ever sent.
    pub(crate) fn show(&self, mut citation: Citation) -> Citation {
        citation.uri = citation.uri.and_then(|uri| self.location(&uri));
        citation
    }

    fn location(&self, uri: &str) -> Option<String> {
        let path = match uri.strip_prefix("file://") {
            Some(local) => local,
            None if uri.contains("://") => return Some(uri.to_string()),
            None => uri,
        };
        let path = Path::new(path);
        let relative = self
            .0
            .iter()
            .find_map(|root| path.strip_prefix(root).ok())
            .unwrap_or(path);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        (plain && !relative.as_os_str().is_empty()).then(|| relative.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(origin: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, origin.parse().unwrap());
        headers
    }

    #[test]
    fn by_default_only_loopback_pages_may_connect() {
        let origins = Origins::default();
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:3000",
            "http://[::1]:8080",
            "https://localhost",
        ] {
            assert_eq!(
                origins.check(&with_origin(ok)),
                OriginCheck::Allowed,
                "{ok}"
            );
        }
        for bad in [
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example:8080",
            "null",
        ] {
            assert!(
                matches!(origins.check(&with_origin(bad)), OriginCheck::Refused(_)),
                "{bad}"
            );
        }
        assert_eq!(origins.check(&HeaderMap::new()), OriginCheck::Absent);
    }

    #[test]
    fn a_list_replaces_the_default() {
        let origins = Origins {
            allowed: vec!["https://chat.example.com".into()],
        };
        assert_eq!(
            origins.check(&with_origin("https://chat.example.com")),
            OriginCheck::Allowed
        );
        assert!(matches!(
            origins.check(&with_origin("http://127.0.0.1:8080")),
            OriginCheck::Refused(_)
        ));
    }

    #[test]
    fn the_group_filter_takes_the_groups_and_the_public_values() {
        let access = GroupAccess {
            attribute: "groups".into(),
            public: vec!["public".into()],
        };
        assert_eq!(
            access.filter(&["eng".into(), "public".into()]),
            Filter::In {
                key: "groups".into(),
                values: vec!["public".into(), "eng".into()],
            }
        );
    }

    #[test]
    fn sources_never_show_server_paths() {
        let roots = SourceRoots(vec![PathBuf::from("/srv/docs")]);
        let cite = |uri: &str| {
            let passage = rag::Passage::new("p", "t").with_uri(uri);
            roots.show(Citation::new(1, &passage)).uri
        };
        assert_eq!(cite("/srv/docs/guide/a.md").as_deref(), Some("guide/a.md"));
        assert_eq!(cite("docs/lambda.md").as_deref(), Some("docs/lambda.md"));
        assert_eq!(
            cite("https://example.com/a").as_deref(),
            Some("https://example.com/a")
        );
        assert_eq!(
            cite("file:///srv/docs/guide/b.md").as_deref(),
            Some("guide/b.md")
        );
        assert_eq!(cite("file:///etc/passwd"), None);
        assert_eq!(cite("/etc/passwd"), None);
        assert_eq!(cite("../secret.md"), None);
    }
}
