//! Kendra attribute filters: a typed builder, a raw JSON passthrough, and the translation of
//! the backend-independent [`rag_core::Filter`].
//!
//! Kendra limits a filter to a nesting depth of 2 (`AndAllFilters`, `OrAllFilters` and
//! `NotFilter` each open a level) and each `AndAllFilters`/`OrAllFilters` list to 10 filters.
//! Both limits are checked here before any request is sent, on the filter that is actually sent
//! (the retriever's default filter, its language filter and the request's filter combined).

use aws_sdk_kendra::primitives::DateTime;
use aws_sdk_kendra::primitives::DateTimeFormat as Format;
use aws_sdk_kendra::types::{
    AttributeFilter as SdkFilter, DocumentAttribute, DocumentAttributeValue,
};
use rag_core::{Error, Filter, Result};
use serde_json::{json, Map, Value};

/// The deepest nesting of `AndAllFilters`/`OrAllFilters`/`NotFilter` Kendra accepts.
pub const MAX_FILTER_DEPTH: usize = 2;
/// The most filters one `AndAllFilters` or `OrAllFilters` list may hold.
pub const MAX_FILTER_LIST_LEN: usize = 10;
/// How deep a raw JSON filter may nest before it is rejected without further parsing.
const MAX_PARSE_DEPTH: usize = 8;

/// A value to compare a document attribute with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AttributeValue {
    /// A `String` attribute value (`StringValue`).
    String(String),
    /// A `Long` attribute value (`LongValue`).
    Long(i64),
    /// A `StringList` attribute value (`StringListValue`).
    StringList(Vec<String>),
    /// A `Date` attribute value (`DateValue`).
    Date(DateTime),
}

impl From<&str> for AttributeValue {
    fn from(v: &str) -> Self {
        AttributeValue::String(v.to_owned())
    }
}

impl From<String> for AttributeValue {
    fn from(v: String) -> Self {
        AttributeValue::String(v)
    }
}

impl From<i64> for AttributeValue {
    fn from(v: i64) -> Self {
        AttributeValue::Long(v)
    }
}

impl From<Vec<String>> for AttributeValue {
    fn from(v: Vec<String>) -> Self {
        AttributeValue::StringList(v)
    }
}

impl From<DateTime> for AttributeValue {
    fn from(v: DateTime) -> Self {
        AttributeValue::Date(v)
    }
}

impl AttributeValue {
    fn to_sdk(&self) -> DocumentAttributeValue {
        let b = DocumentAttributeValue::builder();
        match self {
            AttributeValue::String(s) => b.string_value(s),
            AttributeValue::Long(n) => b.long_value(*n),
            AttributeValue::StringList(l) => b.set_string_list_value(Some(l.clone())),
            AttributeValue::Date(d) => b.date_value(*d),
        }
        .build()
    }
}

/// A Kendra `AttributeFilter`: typed constructors for the common cases, or any filter in
/// Kendra's own JSON form through [`AttributeFilter::from_json`].
///
/// Kendra accepts a nesting depth of at most [`MAX_FILTER_DEPTH`] (each `AndAllFilters`,
/// `OrAllFilters` and `NotFilter` opens a level) and at most [`MAX_FILTER_LIST_LEN`] filters per
/// list; the filter actually sent (default, language and request filters joined) is checked
/// against both before the call.
///
/// Use it as the retriever's default filter
/// ([`crate::KendraRetrieverBuilder::with_filter`]) or per request as a [`rag_core::Filter`]
/// (`Filter::from(attribute_filter)` gives `Filter::Raw` in Kendra's JSON form).
///
/// ```
/// use rag_kendra::AttributeFilter;
///
/// let filter = AttributeFilter::all([
///     AttributeFilter::equals("_category", "guide"),
///     AttributeFilter::contains_any("teams", ["infra", "platform"]),
/// ]);
/// assert_eq!(
///     filter.to_json()["AndAllFilters"][0]["EqualsTo"]["Value"]["StringValue"],
///     "guide"
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeFilter {
    inner: SdkFilter,
}

fn attribute(key: impl Into<String>, value: &AttributeValue) -> DocumentAttribute {
    DocumentAttribute::builder()
        .key(key)
        .value(value.to_sdk())
        .build()
        .expect("key and value are set")
}

impl AttributeFilter {
    /// The attribute equals `value` (`EqualsTo`).
    pub fn equals(key: impl Into<String>, value: impl Into<AttributeValue>) -> Self {
        Self::from_sdk(
            SdkFilter::builder()
                .equals_to(attribute(key, &value.into()))
                .build(),
        )
    }

    /// The document's string-list attribute holds at least one of `values` (`ContainsAny`).
    pub fn contains_any<I, S>(key: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = AttributeValue::StringList(values.into_iter().map(Into::into).collect());
        Self::from_sdk(
            SdkFilter::builder()
                .contains_any(attribute(key, &list))
                .build(),
        )
    }

    /// The document's string-list attribute holds all of `values` (`ContainsAll`).
    pub fn contains_all<I, S>(key: impl Into<String>, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = AttributeValue::StringList(values.into_iter().map(Into::into).collect());
        Self::from_sdk(
            SdkFilter::builder()
                .contains_all(attribute(key, &list))
                .build(),
        )
    }

    /// The attribute (a `Long` or a `Date`) is greater than `value` (`GreaterThan`).
    pub fn greater_than(key: impl Into<String>, value: impl Into<AttributeValue>) -> Self {
        Self::from_sdk(
            SdkFilter::builder()
                .greater_than(attribute(key, &value.into()))
                .build(),
        )
    }

    /// The attribute is greater than or equal to `value` (`GreaterThanOrEquals`).
    pub fn greater_or_equal(key: impl Into<String>, value: impl Into<AttributeValue>) -> Self {
        Self::from_sdk(
            SdkFilter::builder()
                .greater_than_or_equals(attribute(key, &value.into()))
                .build(),
        )
    }

    /// The attribute is less than `value` (`LessThan`).
    pub fn less_than(key: impl Into<String>, value: impl Into<AttributeValue>) -> Self {
        Self::from_sdk(
            SdkFilter::builder()
                .less_than(attribute(key, &value.into()))
                .build(),
        )
    }

    /// The attribute is less than or equal to `value` (`LessThanOrEquals`).
    pub fn less_or_equal(key: impl Into<String>, value: impl Into<AttributeValue>) -> Self {
        Self::from_sdk(
            SdkFilter::builder()
                .less_than_or_equals(attribute(key, &value.into()))
                .build(),
        )
    }

    /// The document's language is `code` (`EqualsTo` on `_language_code`).
    pub fn language(code: impl Into<String>) -> Self {
        Self::equals("_language_code", code.into())
    }

    /// All of the filters hold (`AndAllFilters`).
    pub fn all(filters: impl IntoIterator<Item = AttributeFilter>) -> Self {
        let list = filters.into_iter().map(|f| f.inner).collect();
        Self::from_sdk(SdkFilter::builder().set_and_all_filters(Some(list)).build())
    }

    /// At least one of the filters holds (`OrAllFilters`).
    pub fn any(filters: impl IntoIterator<Item = AttributeFilter>) -> Self {
        let list = filters.into_iter().map(|f| f.inner).collect();
        Self::from_sdk(SdkFilter::builder().set_or_all_filters(Some(list)).build())
    }

    /// The filter does not hold (`NotFilter`).
    #[allow(clippy::should_implement_trait)]
    pub fn not(filter: AttributeFilter) -> Self {
        Self::from_sdk(SdkFilter::builder().not_filter(filter.inner).build())
    }

    /// A filter in Kendra's JSON form (`{"EqualsTo": {"Key": .., "Value": {"StringValue": ..}}}`),
    /// checked member by member: unknown members, a filter with no or several conditions,
    /// ill-typed values and filters deeper or wider than Kendra accepts are
    /// [`Error::InvalidInput`] (field `filter`). `DateValue` takes epoch seconds or an RFC 3339
    /// string.
    pub fn from_json(json: &Value) -> Result<Self> {
        let inner = parse_filter(json, 0)?;
        validate(&inner)?;
        Ok(Self::from_sdk(inner))
    }

    /// This filter in Kendra's JSON form (`DateValue` as epoch seconds, as on the wire).
    pub fn to_json(&self) -> Value {
        filter_to_json(&self.inner)
    }

    /// Wraps an SDK filter as is.
    pub fn from_sdk(inner: SdkFilter) -> Self {
        AttributeFilter { inner }
    }

    /// The SDK filter.
    pub fn as_sdk(&self) -> &SdkFilter {
        &self.inner
    }

    /// Unwraps the SDK filter.
    pub fn into_sdk(self) -> SdkFilter {
        self.inner
    }
}

impl From<AttributeFilter> for Filter {
    fn from(filter: AttributeFilter) -> Self {
        Filter::Raw(filter.to_json())
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_input("filter", message)
}

/// Translates a backend-independent filter to Kendra's form.
///
/// `Equals` and `In` take their Kendra value type from the JSON type: a string is a
/// `StringValue`, an integer a `LongValue`, an array of strings a `StringListValue`. `In` (the
/// attribute equals one of the values) is an `OrAllFilters` of `EqualsTo`, for strings and
/// integers alike: Kendra's `ContainsAny` tests string-list attributes only and matches
/// nothing on a string attribute (for a string list, use `AttributeFilter::contains_any`). An
/// `OrAllFilters` inside an `Or` is merged into it, so `In` costs no nesting level there.
/// Other JSON types cannot be expressed and are rejected rather than ignored, since filters
/// often carry access rules.
pub(crate) fn translate(filter: &Filter) -> Result<SdkFilter> {
    let translated = match filter {
        Filter::Equals { key, value } => {
            check_key(key)?;
            SdkFilter::builder()
                .equals_to(attribute(key, &json_value(key, value)?))
                .build()
        }
        Filter::In { key, values } => {
            check_key(key)?;
            if values.is_empty() {
                return Err(invalid(format!("`In` on `{key}` has no values")));
            }
            let value = |v: &Value| match (v.as_str(), v.as_i64()) {
                (Some(s), _) => Some(AttributeValue::String(s.to_owned())),
                (None, Some(n)) => Some(AttributeValue::Long(n)),
                _ => None,
            };
            let strings = values.iter().all(Value::is_string);
            let integers = values.iter().all(|v| v.as_i64().is_some());
            if !(strings || integers) {
                return Err(invalid(format!(
                    "`In` on `{key}` needs all strings or all integers"
                )));
            }
            let mut list: Vec<SdkFilter> = values
                .iter()
                .filter_map(value)
                .map(|v| SdkFilter::builder().equals_to(attribute(key, &v)).build())
                .collect();
            if list.len() == 1 {
                list.remove(0)
            } else {
                SdkFilter::builder().set_or_all_filters(Some(list)).build()
            }
        }
        Filter::And(list) | Filter::Or(list) => {
            if list.is_empty() {
                return Err(invalid("`And`/`Or` with no filters"));
            }
            let and = matches!(filter, Filter::And(_));
            let mut merged = Vec::with_capacity(list.len());
            for part in list.iter().map(translate) {
                // A list of the same kind inside a list adds nothing but a nesting level.
                let part = part?;
                let same = if and {
                    is_pure_and(&part)
                } else {
                    is_pure_or(&part)
                };
                match (same, and) {
                    (true, true) => merged.extend(part.and_all_filters.unwrap_or_default()),
                    (true, false) => merged.extend(part.or_all_filters.unwrap_or_default()),
                    _ => merged.push(part),
                }
            }
            if and {
                SdkFilter::builder()
                    .set_and_all_filters(Some(merged))
                    .build()
            } else {
                SdkFilter::builder()
                    .set_or_all_filters(Some(merged))
                    .build()
            }
        }
        Filter::Not(inner) => SdkFilter::builder().not_filter(translate(inner)?).build(),
        Filter::Raw(json) => parse_filter(json, 0)?,
        other => {
            return Err(invalid(format!(
                "this filter cannot be expressed as a Kendra AttributeFilter: {other:?}"
            )))
        }
    };
    Ok(translated)
}

fn check_key(key: &str) -> Result<()> {
    if key.trim().is_empty() {
        return Err(invalid("an attribute key is empty"));
    }
    Ok(())
}

fn json_value(key: &str, value: &Value) -> Result<AttributeValue> {
    match value {
        Value::String(s) => Ok(AttributeValue::String(s.clone())),
        Value::Number(n) if n.as_i64().is_some() => {
            Ok(AttributeValue::Long(n.as_i64().unwrap_or_default()))
        }
        Value::Array(items) if items.iter().all(Value::is_string) => {
            Ok(AttributeValue::StringList(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ))
        }
        other => Err(invalid(format!(
            "the value of `{key}` must be a string, an integer or an array of strings, not {other}"
        ))),
    }
}

/// Combines filters with `AndAllFilters`, splicing the members of filters that are themselves
/// `AndAllFilters` so the combination does not add a nesting level.
pub(crate) fn combine(parts: Vec<SdkFilter>) -> Option<SdkFilter> {
    if parts.len() <= 1 {
        return parts.into_iter().next();
    }
    let mut all = Vec::new();
    for part in parts {
        if is_pure_and(&part) {
            all.extend(part.and_all_filters.unwrap_or_default());
        } else {
            all.push(part);
        }
    }
    Some(SdkFilter::builder().set_and_all_filters(Some(all)).build())
}

fn is_pure_and(f: &SdkFilter) -> bool {
    f.and_all_filters.is_some() && conditions(f) == 1
}

fn is_pure_or(f: &SdkFilter) -> bool {
    f.or_all_filters.is_some() && conditions(f) == 1
}

fn conditions(f: &SdkFilter) -> usize {
    [
        f.and_all_filters.is_some(),
        f.or_all_filters.is_some(),
        f.not_filter.is_some(),
        f.equals_to.is_some(),
        f.contains_all.is_some(),
        f.contains_any.is_some(),
        f.greater_than.is_some(),
        f.greater_than_or_equals.is_some(),
        f.less_than.is_some(),
        f.less_than_or_equals.is_some(),
    ]
    .into_iter()
    .filter(|set| *set)
    .count()
}

/// Checks Kendra's shape rules: one condition per filter, depth and list length limits.
pub(crate) fn validate(filter: &SdkFilter) -> Result<()> {
    let depth = check_shape(filter)?;
    if depth > MAX_FILTER_DEPTH {
        return Err(invalid(format!(
            "the filter nests {depth} levels of AndAllFilters/OrAllFilters/NotFilter; \
             Kendra accepts at most {MAX_FILTER_DEPTH}"
        )));
    }
    Ok(())
}

/// Returns the nesting depth.
fn check_shape(f: &SdkFilter) -> Result<usize> {
    let n = conditions(f);
    if n != 1 {
        return Err(invalid(format!(
            "each Kendra filter needs exactly one condition, found {n}"
        )));
    }
    if let Some(list) = f.and_all_filters.as_ref().or(f.or_all_filters.as_ref()) {
        if list.is_empty() {
            return Err(invalid("AndAllFilters/OrAllFilters with no filters"));
        }
        if list.len() > MAX_FILTER_LIST_LEN {
            return Err(invalid(format!(
                "a filter list holds {} filters; Kendra accepts at most {MAX_FILTER_LIST_LEN}",
                list.len()
            )));
        }
        let mut deepest = 0;
        for inner in list {
            deepest = deepest.max(check_shape(inner)?);
        }
        return Ok(deepest + 1);
    }
    if let Some(inner) = &f.not_filter {
        return Ok(check_shape(inner)? + 1);
    }
    Ok(0)
}

const LEAVES: [&str; 7] = [
    "EqualsTo",
    "ContainsAll",
    "ContainsAny",
    "GreaterThan",
    "GreaterThanOrEquals",
    "LessThan",
    "LessThanOrEquals",
];

fn parse_filter(json: &Value, depth: usize) -> Result<SdkFilter> {
    if depth > MAX_PARSE_DEPTH {
        return Err(invalid("the raw filter nests too deeply"));
    }
    let obj = json.as_object().ok_or_else(|| {
        invalid(format!(
            "a Kendra AttributeFilter must be an object, not {json}"
        ))
    })?;
    if obj.len() != 1 {
        return Err(invalid(format!(
            "each Kendra AttributeFilter object needs exactly one condition, found {} members",
            obj.len()
        )));
    }
    let (name, body) = obj.iter().next().expect("one member");
    let b = SdkFilter::builder();
    let filter = match name.as_str() {
        "AndAllFilters" | "OrAllFilters" => {
            let items = body
                .as_array()
                .ok_or_else(|| invalid(format!("`{name}` must be an array")))?;
            let list = items
                .iter()
                .map(|item| parse_filter(item, depth + 1))
                .collect::<Result<Vec<_>>>()?;
            if name == "AndAllFilters" {
                b.set_and_all_filters(Some(list))
            } else {
                b.set_or_all_filters(Some(list))
            }
        }
        "NotFilter" => b.not_filter(parse_filter(body, depth + 1)?),
        leaf if LEAVES.contains(&leaf) => {
            let attr = parse_attribute(leaf, body)?;
            match leaf {
                "EqualsTo" => b.equals_to(attr),
                "ContainsAll" => b.contains_all(attr),
                "ContainsAny" => b.contains_any(attr),
                "GreaterThan" => b.greater_than(attr),
                "GreaterThanOrEquals" => b.greater_than_or_equals(attr),
                "LessThan" => b.less_than(attr),
                _ => b.less_than_or_equals(attr),
            }
        }
        other => {
            return Err(invalid(format!(
                "`{other}` is not a Kendra AttributeFilter condition"
            )))
        }
    };
    Ok(filter.build())
}

fn parse_attribute(op: &str, body: &Value) -> Result<DocumentAttribute> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid(format!("`{op}` must be an object with Key and Value")))?;
    if let Some(extra) = obj.keys().find(|k| *k != "Key" && *k != "Value") {
        return Err(invalid(format!("`{op}` has an unknown member `{extra}`")));
    }
    let key = obj
        .get("Key")
        .and_then(Value::as_str)
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| invalid(format!("`{op}` needs a non-empty string `Key`")))?;
    let value = obj
        .get("Value")
        .ok_or_else(|| invalid(format!("`{op}` on `{key}` needs a `Value`")))?;
    Ok(attribute(key, &parse_value(op, key, value)?))
}

fn parse_value(op: &str, key: &str, value: &Value) -> Result<AttributeValue> {
    let bad = |what: &str| invalid(format!("`{op}` on `{key}`: {what}"));
    let obj = value
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| bad("`Value` must be an object with exactly one typed value"))?;
    let (kind, v) = obj.iter().next().expect("one member");
    match kind.as_str() {
        "StringValue" => v
            .as_str()
            .map(AttributeValue::from)
            .ok_or_else(|| bad("StringValue must be a string")),
        "LongValue" => v
            .as_i64()
            .map(AttributeValue::Long)
            .ok_or_else(|| bad("LongValue must be an integer")),
        "StringListValue" => v
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
            })
            .map(AttributeValue::StringList)
            .ok_or_else(|| bad("StringListValue must be an array of strings")),
        "DateValue" => match v {
            Value::Number(n) => n
                .as_f64()
                .map(|secs| AttributeValue::Date(DateTime::from_secs_f64(secs)))
                .ok_or_else(|| bad("DateValue is not a number of seconds")),
            Value::String(s) => DateTime::from_str(s, Format::DateTime)
                .map(AttributeValue::Date)
                .map_err(|e| bad(&format!("DateValue `{s}` is not an RFC 3339 date: {e}"))),
            _ => Err(bad("DateValue must be epoch seconds or an RFC 3339 string")),
        },
        other => Err(bad(&format!("`{other}` is not a Kendra value type"))),
    }
}

fn filter_to_json(f: &SdkFilter) -> Value {
    let mut out = Map::new();
    let list = |l: &Vec<SdkFilter>| Value::Array(l.iter().map(filter_to_json).collect());
    if let Some(l) = &f.and_all_filters {
        out.insert("AndAllFilters".into(), list(l));
    }
    if let Some(l) = &f.or_all_filters {
        out.insert("OrAllFilters".into(), list(l));
    }
    if let Some(inner) = &f.not_filter {
        out.insert("NotFilter".into(), filter_to_json(inner));
    }
    let leaves = [
        ("EqualsTo", &f.equals_to),
        ("ContainsAll", &f.contains_all),
        ("ContainsAny", &f.contains_any),
        ("GreaterThan", &f.greater_than),
        ("GreaterThanOrEquals", &f.greater_than_or_equals),
        ("LessThan", &f.less_than),
        ("LessThanOrEquals", &f.less_than_or_equals),
    ];
    for (name, attr) in leaves {
        if let Some(attr) = attr {
            out.insert(
                name.into(),
                json!({"Key": attr.key, "Value": value_to_wire_json(attr.value.as_ref())}),
            );
        }
    }
    Value::Object(out)
}

fn value_to_wire_json(v: Option<&DocumentAttributeValue>) -> Value {
    let Some(v) = v else {
        return json!({});
    };
    if let Some(s) = &v.string_value {
        json!({ "StringValue": s })
    } else if let Some(n) = v.long_value {
        json!({ "LongValue": n })
    } else if let Some(l) = &v.string_list_value {
        json!({ "StringListValue": l })
    } else if let Some(d) = &v.date_value {
        json!({ "DateValue": d.as_secs_f64() })
    } else {
        json!({})
    }
}

/// A document attribute value as plain JSON for [`rag_core::Passage::attributes`]: strings,
/// integers, string arrays, and dates as RFC 3339 strings.
pub(crate) fn value_to_plain_json(v: &DocumentAttributeValue) -> Value {
    if let Some(s) = &v.string_value {
        Value::String(s.clone())
    } else if let Some(n) = v.long_value {
        Value::from(n)
    } else if let Some(l) = &v.string_list_value {
        json!(l)
    } else if let Some(d) = &v.date_value {
        d.fmt(Format::DateTime)
            .map(Value::String)
            .unwrap_or_else(|_| Value::from(d.as_secs_f64()))
    } else {
        Value::Null
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_builder_matches_kendra_json() {
        let f = AttributeFilter::all([
            AttributeFilter::language("en"),
            AttributeFilter::not(AttributeFilter::contains_any("tags", ["draft"])),
            AttributeFilter::greater_than("year", 2020),
        ]);
        assert_eq!(
            f.to_json(),
            json!({"AndAllFilters": [
                {"EqualsTo": {"Key": "_language_code", "Value": {"StringValue": "en"}}},
                {"NotFilter": {"ContainsAny": {"Key": "tags", "Value": {"StringListValue": ["draft"]}}}},
                {"GreaterThan": {"Key": "year", "Value": {"LongValue": 2020}}}
            ]})
        );
        // The raw passthrough reads back what the builder wrote.
        assert_eq!(AttributeFilter::from_json(&f.to_json()).unwrap(), f);
    }

    #[test]
    fn core_filter_values_are_typed_by_json_type() {
        let f = translate(&Filter::And(vec![
            Filter::Equals {
                key: "_category".into(),
                value: json!("faq"),
            },
            Filter::Equals {
                key: "year".into(),
                value: json!(2024),
            },
            Filter::Equals {
                key: "tags".into(),
                value: json!(["a", "b"]),
            },
            Filter::In {
                key: "team".into(),
                values: vec![json!("x"), json!("y")],
            },
        ]))
        .unwrap();
        assert_eq!(
            filter_to_json(&f),
            json!({"AndAllFilters": [
                {"EqualsTo": {"Key": "_category", "Value": {"StringValue": "faq"}}},
                {"EqualsTo": {"Key": "year", "Value": {"LongValue": 2024}}},
                {"EqualsTo": {"Key": "tags", "Value": {"StringListValue": ["a", "b"]}}},
                {"OrAllFilters": [
                    {"EqualsTo": {"Key": "team", "Value": {"StringValue": "x"}}},
                    {"EqualsTo": {"Key": "team", "Value": {"StringValue": "y"}}}
                ]}
            ]})
        );
        // One value is one test; inside an `Or`, the values join its list.
        let one = translate(&Filter::In {
            key: "team".into(),
            values: vec![json!("x")],
        })
        .unwrap();
        assert_eq!(
            filter_to_json(&one),
            json!({"EqualsTo": {"Key": "team", "Value": {"StringValue": "x"}}})
        );
        let or = translate(&Filter::Or(vec![
            Filter::Equals {
                key: "owner".into(),
                value: json!("me"),
            },
            Filter::In {
                key: "team".into(),
                values: vec![json!("x"), json!("y")],
            },
        ]))
        .unwrap();
        assert_eq!(or.or_all_filters.as_ref().map(Vec::len), Some(3));
        let ints = translate(&Filter::In {
            key: "n".into(),
            values: vec![json!(1), json!(2)],
        })
        .unwrap();
        assert_eq!(ints.or_all_filters.as_ref().map(Vec::len), Some(2));
        let or_not = translate(&Filter::Or(vec![Filter::Not(Box::new(Filter::Equals {
            key: "k".into(),
            value: json!("v"),
        }))]))
        .unwrap();
        assert_eq!(
            filter_to_json(&or_not),
            json!({"OrAllFilters": [{"NotFilter": {"EqualsTo": {"Key": "k", "Value": {"StringValue": "v"}}}}]})
        );
    }

    #[test]
    fn inexpressible_values_are_rejected() {
        for value in [
            json!(1.5),
            json!(true),
            json!(null),
            json!({"a": 1}),
            json!([1, 2]),
        ] {
            let err = translate(&Filter::Equals {
                key: "k".into(),
                value,
            })
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidInput {
                        field: "filter",
                        ..
                    }
                ),
                "{err}"
            );
        }
        assert!(translate(&Filter::In {
            key: "k".into(),
            values: vec![json!("a"), json!(1)]
        })
        .is_err());
        assert!(translate(&Filter::And(vec![])).is_err());
    }

    #[test]
    fn raw_filters_are_checked() {
        let bad = [
            json!("EqualsTo"),
            json!({}),
            json!({"EqualsTo": {"Key": "a", "Value": {"StringValue": "b"}}, "LessThan": {"Key": "a", "Value": {"LongValue": 1}}}),
            json!({"Equals": {"Key": "a", "Value": {"StringValue": "b"}}}),
            json!({"EqualsTo": {"Key": "a"}}),
            json!({"EqualsTo": {"Key": "", "Value": {"StringValue": "b"}}}),
            json!({"EqualsTo": {"Key": "a", "Value": {"StringValue": 3}}}),
            json!({"EqualsTo": {"Key": "a", "Value": {"Number": 3}}}),
            json!({"EqualsTo": {"Key": "a", "Value": {"StringValue": "b"}, "Extra": 1}}),
            json!({"AndAllFilters": {}}),
            json!({"AndAllFilters": []}),
            json!({"GreaterThan": {"Key": "d", "Value": {"DateValue": "yesterday"}}}),
        ];
        for json in bad {
            let err = AttributeFilter::from_json(&json).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidInput {
                        field: "filter",
                        ..
                    }
                ),
                "{json}: {err}"
            );
        }
        let date = AttributeFilter::from_json(
            &json!({"GreaterThan": {"Key": "_created_at", "Value": {"DateValue": "2024-01-02T00:00:00Z"}}}),
        )
        .unwrap();
        assert_eq!(
            date.to_json()["GreaterThan"]["Value"]["DateValue"],
            json!(1_704_153_600.0)
        );
    }

    #[test]
    fn depth_and_width_limits() {
        let leaf = || AttributeFilter::equals("k", "v");
        let depth2 = AttributeFilter::all([leaf(), AttributeFilter::any([leaf(), leaf()])]);
        assert!(validate(depth2.as_sdk()).is_ok());
        let depth3 = AttributeFilter::all([AttributeFilter::any([AttributeFilter::not(leaf())])]);
        let err = validate(depth3.as_sdk()).unwrap_err();
        assert!(err.to_string().contains("at most 2"), "{err}");
        let wide = AttributeFilter::any((0..11).map(|_| leaf()));
        assert!(validate(wide.as_sdk())
            .unwrap_err()
            .to_string()
            .contains("at most 10"));
        assert!(AttributeFilter::from_json(&depth3.to_json()).is_err());
    }

    #[test]
    fn combining_splices_and_filters_instead_of_nesting() {
        let leaf = |v: &str| AttributeFilter::equals("k", v).into_sdk();
        let and = AttributeFilter::all([
            AttributeFilter::equals("a", "1"),
            AttributeFilter::any([
                AttributeFilter::equals("b", "2"),
                AttributeFilter::equals("b", "3"),
            ]),
        ])
        .into_sdk();
        let combined = combine(vec![leaf("x"), and]).unwrap();
        // depth stays 2: the request's AndAllFilters members join the outer list.
        assert!(validate(&combined).is_ok());
        assert_eq!(combined.and_all_filters.as_ref().map(Vec::len), Some(3));
        assert_eq!(combine(vec![leaf("x")]), Some(leaf("x")));
        assert_eq!(combine(vec![]), None);
    }

    #[test]
    fn plain_json_of_attribute_values() {
        let d = DocumentAttributeValue::builder()
            .date_value(DateTime::from_secs(1_704_153_600))
            .build();
        assert_eq!(value_to_plain_json(&d), json!("2024-01-02T00:00:00Z"));
        let l = DocumentAttributeValue::builder().long_value(7).build();
        assert_eq!(value_to_plain_json(&l), json!(7));
    }
}
