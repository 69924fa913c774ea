//! [`rag_core::Filter`] as a tantivy query over exact `key=value` terms.
//!
//! Every passage indexes one term per filterable value in a raw field: `id`, `uri` and
//! `title`, and each top-level attribute whose value is a string, number or boolean, or a
//! list of those (one term per element, so `Equals` on a list attribute means "contains").

use rag_core::{Error, Filter, Passage, Result};
use serde_json::Value;
use tantivy::query::{AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::Term;

/// The exact terms a passage can be filtered by.
pub(crate) fn terms(passage: &Passage) -> Vec<String> {
    let mut out = vec![term("id", &Value::from(passage.id.as_str()))];
    if let Some(uri) = &passage.uri {
        out.push(term("uri", &Value::from(uri.as_str())));
    }
    if let Some(title) = &passage.title {
        out.push(term("title", &Value::from(title.as_str())));
    }
    for (key, value) in &passage.attributes {
        match value {
            Value::Array(items) => {
                out.extend(items.iter().filter(|v| scalar(v)).map(|v| term(key, v)))
            }
            v if scalar(v) => out.push(term(key, v)),
            _ => {}
        }
    }
    out
}

/// `filter` as a query that scores nothing (so BM25 scores stay as they are).
pub(crate) fn query(field: Field, filter: &Filter) -> Result<Box<dyn Query>> {
    Ok(Box::new(ConstScoreQuery::new(build(field, filter)?, 0.0)))
}

fn build(field: Field, filter: &Filter) -> Result<Box<dyn Query>> {
    Ok(match filter {
        Filter::Equals { key, value } => equals(field, key, value)?,
        Filter::In { key, values } => Box::new(BooleanQuery::new(
            values
                .iter()
                .map(|v| Ok((Occur::Should, equals(field, key, v)?)))
                .collect::<Result<_>>()?,
        )),
        Filter::And(filters) if filters.is_empty() => Box::new(AllQuery),
        Filter::And(filters) => Box::new(BooleanQuery::new(
            filters
                .iter()
                .map(|f| Ok((Occur::Must, build(field, f)?)))
                .collect::<Result<_>>()?,
        )),
        Filter::Or(filters) => Box::new(BooleanQuery::new(
            filters
                .iter()
                .map(|f| Ok((Occur::Should, build(field, f)?)))
                .collect::<Result<_>>()?,
        )),
        Filter::Not(inner) => Box::new(BooleanQuery::new(vec![
            (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
            (Occur::MustNot, build(field, inner)?),
        ])),
        Filter::Raw(_) => {
            return Err(Error::invalid_input(
                "filter",
                "TantivyRetriever has no raw filter form; use Equals, In, And, Or or Not",
            ))
        }
        other => {
            return Err(Error::invalid_input(
                "filter",
                format!("TantivyRetriever cannot apply {other:?}"),
            ))
        }
    })
}

fn equals(field: Field, key: &str, value: &Value) -> Result<Box<dyn Query>> {
    if !scalar(value) {
        return Err(Error::invalid_input(
            "filter",
            format!("{key}: a filter value must be a string, number or boolean, not {value}"),
        ));
    }
    Ok(Box::new(TermQuery::new(
        Term::from_field_text(field, &term(key, value)),
        IndexRecordOption::Basic,
    )))
}

fn scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

/// `key=value`, the value in JSON with whole numbers written as integers (`2.0` is `2`).
fn term(key: &str, value: &Value) -> String {
    let value = match value.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
        _ => value.clone(),
    };
    format!("{key}={value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_cover_fields_scalars_and_list_elements() {
        let mut p = Passage::new("p1", "text").with_uri("a.md").with_title("A");
        p.attributes.insert("year".into(), Value::from(2024.0));
        p.attributes
            .insert("tags".into(), serde_json::json!(["x", 1, {"no": 1}]));
        p.attributes
            .insert("nested".into(), serde_json::json!({"k": "v"}));
        assert_eq!(
            terms(&p),
            vec![
                "id=\"p1\"",
                "uri=\"a.md\"",
                "title=\"A\"",
                "tags=\"x\"",
                "tags=1",
                "year=2024",
            ]
        );
    }
}
