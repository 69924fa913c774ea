//! One turn as one DynamoDB item: the attribute layout, timestamps and item size.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use rag_core::{Error, Owner, Result, SessionId, SessionOwner, Turn, TurnId};

/// The sort key of a session's claim item, which records who owns the session. `~` sorts
/// after every character of a turn id's text (lowercase hex and `-`), so the claim is the first
/// item of a newest-first query, and no turn id can be it.
pub const CLAIM_SORT_KEY: &str = "~owner";

/// What the claim item of `session` holds in its owner attribute.
pub(crate) fn owner_value(session: &SessionId) -> String {
    match session.owner() {
        Some(owner) => format!("user:{owner}"),
        None => "anonymous".to_owned(),
    }
}

/// DynamoDB's limit on the size of one item: 400 KB, names and values counted.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// The attribute names of a turn item, for fitting an existing table.
///
/// The defaults are `session_id` (partition key), `turn_id` (sort key), `question`, `answer`,
/// `created_at` and `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeNames {
    /// Partition key (String): the session id.
    pub session: String,
    /// Sort key (String): the turn id, a UUID v7 whose text sorts in creation order.
    pub turn_id: String,
    /// The question (String).
    pub question: String,
    /// The answer (String).
    pub answer: String,
    /// When the question was asked (Number): epoch milliseconds, with a fraction for the
    /// sub-millisecond part so the time round-trips exactly.
    pub created_at: String,
    /// When the turn expires (Number): epoch seconds, the table's TTL attribute.
    pub expires_at: String,
    /// Who a session belongs to (String), on the session's claim item: `user:<owner>` or
    /// `anonymous`.
    pub owner: String,
}

impl Default for AttributeNames {
    fn default() -> Self {
        AttributeNames {
            session: "session_id".into(),
            turn_id: "turn_id".into(),
            question: "question".into(),
            answer: "answer".into(),
            created_at: "created_at".into(),
            expires_at: "expires_at".into(),
            owner: "owner".into(),
        }
    }
}

impl AttributeNames {
    fn all(&self) -> [(&'static str, &str); 7] {
        [
            ("session", &self.session),
            ("turn_id", &self.turn_id),
            ("question", &self.question),
            ("answer", &self.answer),
            ("created_at", &self.created_at),
            ("expires_at", &self.expires_at),
            ("owner", &self.owner),
        ]
    }

    /// Non-empty, at most 255 bytes (DynamoDB's limit for key attributes) and distinct.
    pub(crate) fn validate(&self) -> Result<()> {
        let all = self.all();
        for (i, (role, name)) in all.iter().enumerate() {
            if name.is_empty() || name.len() > 255 {
                return Err(Error::config(format!(
                    "attribute name for {role} must be 1 to 255 bytes, got {}",
                    name.len()
                )));
            }
            if let Some((other, _)) = all[..i].iter().find(|(_, n)| n == name) {
                return Err(Error::config(format!(
                    "attribute name `{name}` is used for both {other} and {role}"
                )));
            }
        }
        Ok(())
    }

    /// The item of `turn` in `session`, expiring at `expires_at` (epoch seconds) if set.
    pub(crate) fn to_item(
        &self,
        session: &SessionId,
        turn: &Turn,
        expires_at: Option<u64>,
    ) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::with_capacity(6);
        item.insert(
            self.session.clone(),
            AttributeValue::S(session.as_str().to_owned()),
        );
        item.insert(self.turn_id.clone(), AttributeValue::S(turn.id.to_string()));
        item.insert(
            self.question.clone(),
            AttributeValue::S(turn.question.clone()),
        );
        item.insert(self.answer.clone(), AttributeValue::S(turn.answer.clone()));
        item.insert(
            self.created_at.clone(),
            AttributeValue::N(format_epoch_millis(turn.created_at)),
        );
        if let Some(at) = expires_at {
            item.insert(self.expires_at.clone(), AttributeValue::N(at.to_string()));
        }
        item
    }

    /// The claim item of `session`: sort key [`CLAIM_SORT_KEY`], and who owns the session.
    pub(crate) fn to_claim(
        &self,
        session: &SessionId,
        expires_at: Option<u64>,
    ) -> HashMap<String, AttributeValue> {
        let mut item = HashMap::with_capacity(4);
        item.insert(
            self.session.clone(),
            AttributeValue::S(session.as_str().to_owned()),
        );
        item.insert(
            self.turn_id.clone(),
            AttributeValue::S(CLAIM_SORT_KEY.to_owned()),
        );
        item.insert(self.owner.clone(), AttributeValue::S(owner_value(session)));
        if let Some(at) = expires_at {
            item.insert(self.expires_at.clone(), AttributeValue::N(at.to_string()));
        }
        item
    }

    /// Whether `item` is a session's claim item.
    pub(crate) fn is_claim(&self, item: &HashMap<String, AttributeValue>) -> bool {
        matches!(item.get(&self.turn_id), Some(AttributeValue::S(s)) if s == CLAIM_SORT_KEY)
    }

    /// Who the claim `item` says owns its session.
    pub(crate) fn claim_owner(
        &self,
        table: &str,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<SessionOwner> {
        match item.get(&self.owner) {
            Some(AttributeValue::S(s)) if s == "anonymous" => Ok(SessionOwner::Anonymous),
            Some(AttributeValue::S(s)) if s.starts_with("user:") => {
                Owner::new(&s[5..]).map(SessionOwner::User).map_err(|e| {
                    Error::history(
                        format!("table `{table}` holds a claim item with a bad owner: {e}"),
                        false,
                    )
                })
            }
            other => Err(malformed(
                table,
                item,
                &self.owner,
                "`user:<id>` or `anonymous`",
                other,
            )),
        }
    }

    /// The turn stored in `item`; a clear error naming the attribute when it is not one.
    pub(crate) fn to_turn(
        &self,
        table: &str,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<Turn> {
        let text = |name: &str| -> Result<&String> {
            match item.get(name) {
                Some(AttributeValue::S(s)) => Ok(s),
                other => Err(malformed(table, item, name, "a String", other)),
            }
        };
        let id: TurnId = text(&self.turn_id)?.parse().map_err(|e: Error| {
            Error::history(
                format!("table `{table}` holds an item whose sort key is not a turn id: {e}"),
                false,
            )
        })?;
        let created_at = match item.get(&self.created_at) {
            Some(AttributeValue::N(n)) => parse_epoch_millis(n).ok_or_else(|| {
                Error::history(
                    format!(
                        "table `{table}`: turn {id} has `{}` = {n:?}, not epoch milliseconds",
                        self.created_at
                    ),
                    false,
                )
            })?,
            other => return Err(malformed(table, item, &self.created_at, "a Number", other)),
        };
        Ok(Turn {
            id,
            question: text(&self.question)?.clone(),
            answer: text(&self.answer)?.clone(),
            created_at,
        })
    }
}

fn malformed(
    table: &str,
    item: &HashMap<String, AttributeValue>,
    name: &str,
    wanted: &str,
    found: Option<&AttributeValue>,
) -> Error {
    let mut keys: Vec<&str> = item.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let found = match found {
        None => "missing".to_owned(),
        Some(v) => format!("of another type ({})", type_name(v)),
    };
    Error::history(
        format!(
            "table `{table}` holds an item that is not a turn: attribute `{name}` should be {wanted} but is {found} (item has {keys:?})"
        ),
        false,
    )
}

fn type_name(v: &AttributeValue) -> &'static str {
    match v {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Null(_) => "NULL",
        AttributeValue::L(_) => "L",
        AttributeValue::M(_) => "M",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
        _ => "unknown",
    }
}

/// `t` as epoch milliseconds in decimal, with up to six fraction digits for the
/// sub-millisecond part (no trailing zeros): `1700000000123` or `1700000000123.4567`.
pub(crate) fn format_epoch_millis(t: SystemTime) -> String {
    let (negative, d) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (false, d),
        Err(e) => (true, e.duration()),
    };
    let nanos = d.as_nanos();
    let millis = nanos / 1_000_000;
    let sub = nanos % 1_000_000;
    let sign = if negative && nanos > 0 { "-" } else { "" };
    if sub == 0 {
        format!("{sign}{millis}")
    } else {
        let fraction = format!("{sub:06}");
        format!("{sign}{millis}.{}", fraction.trim_end_matches('0'))
    }
}

/// Parses a DynamoDB Number of epoch milliseconds (sign, digits, optional fraction and
/// exponent, as the service may normalise it) back to a time, to the nanosecond.
pub(crate) fn parse_epoch_millis(n: &str) -> Option<SystemTime> {
    let (negative, n) = match n.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, n.strip_prefix('+').unwrap_or(n)),
    };
    let (mantissa, exponent) = match n.find(['e', 'E']) {
        Some(i) => (&n[..i], n[i + 1..].parse::<i32>().ok()?),
        None => (n, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits as one integer, and the power of ten that scales it to nanoseconds
    // (milliseconds times 10^6).
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let scale = 6 + exponent - i32::try_from(frac.len()).ok()?;
    let mut value: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    if scale >= 0 {
        value = value.checked_mul(10u128.checked_pow(scale.unsigned_abs())?)?;
    } else {
        value /= 10u128
            .checked_pow(scale.unsigned_abs())
            .unwrap_or(u128::MAX);
    }
    let secs = u64::try_from(value / 1_000_000_000).ok()?;
    let d = Duration::new(secs, (value % 1_000_000_000) as u32);
    if negative {
        UNIX_EPOCH.checked_sub(d)
    } else {
        UNIX_EPOCH.checked_add(d)
    }
}

/// The size DynamoDB counts for an item: each attribute name's UTF-8 bytes plus its value's
/// size (strings and binaries by length, numbers by significant digits, containers with their
/// overhead).
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| 1 + k.len() + value_size(e))
                .sum::<usize>()
        }
        // A type this crate never writes: its debug form is never smaller than its payload.
        other => format!("{other:?}").len(),
    }
}

/// One byte per two significant digits, plus one.
fn number_size(n: &str) -> usize {
    let mantissa = n.split(['e', 'E']).next().unwrap_or(n);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

/// The error for a turn too large for one item, before anything is written.
pub(crate) fn check_size(item: &HashMap<String, AttributeValue>, turn: &Turn) -> Result<()> {
    let size = item_size(item);
    if size > MAX_ITEM_BYTES {
        return Err(Error::invalid_input(
            "turn",
            format!(
                "turn {} is {size} bytes as a DynamoDB item (question {} bytes, answer {} bytes); \
                 the item limit is {MAX_ITEM_BYTES} bytes, so it was not stored",
                turn.id,
                turn.question.len(),
                turn.answer.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    #[test]
    fn created_at_round_trips_to_the_nanosecond() {
        for t in [
            at(1_700_000_000_123_000_000),
            at(1_700_000_000_123_456_789),
            at(1_700_000_000_123_400_000),
            at(0),
            at(1),
            SystemTime::now(),
            UNIX_EPOCH - Duration::from_nanos(1_500_000),
        ] {
            let text = format_epoch_millis(t);
            assert_eq!(parse_epoch_millis(&text), Some(t), "{text}");
        }
        assert_eq!(
            format_epoch_millis(at(1_700_000_000_123_000_000)),
            "1700000000123"
        );
        assert_eq!(
            format_epoch_millis(at(1_700_000_000_123_400_000)),
            "1700000000123.4"
        );
        assert_eq!(
            format_epoch_millis(UNIX_EPOCH - Duration::from_nanos(1_500_000)),
            "-1.5"
        );
    }

    #[test]
    fn parses_normalised_numbers() {
        let t = at(1_700_000_000_123_000_000);
        for n in [
            "1700000000123",
            "1700000000123.000",
            "1.700000000123E12",
            "1.700000000123e+12",
            "0017000000001230e-1",
        ] {
            assert_eq!(parse_epoch_millis(n), Some(t), "{n}");
        }
        for bad in ["", "-", "abc", "1.2.3", "1e", "12a"] {
            assert_eq!(parse_epoch_millis(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn item_size_follows_dynamodb_rules() {
        let mut item = HashMap::new();
        item.insert("pk".to_owned(), AttributeValue::S("abc".into()));
        assert_eq!(item_size(&item), 5);
        item.insert("é".to_owned(), AttributeValue::S("日本".into()));
        assert_eq!(item_size(&item), 5 + 2 + 6);
        let mut n = HashMap::new();
        n.insert("n".to_owned(), AttributeValue::N("1700000000123".into()));
        // 13 significant digits: 7 bytes, plus 1.
        assert_eq!(item_size(&n), 1 + 8);
        assert_eq!(number_size("0012300"), 3);
        assert_eq!(number_size("-1.5"), 2);
        assert_eq!(number_size("0"), 1);
        let mut l = HashMap::new();
        l.insert(
            "l".to_owned(),
            AttributeValue::L(vec![
                AttributeValue::S("ab".into()),
                AttributeValue::Bool(true),
            ]),
        );
        assert_eq!(item_size(&l), 1 + 3 + (1 + 2) + (1 + 1));
    }

    #[test]
    fn oversized_turn_is_rejected_with_its_size() {
        let names = AttributeNames::default();
        let session = SessionId::new("s").unwrap();
        let small = Turn::new("q", "a");
        let item = names.to_item(&session, &small, Some(1));
        assert!(check_size(&item, &small).is_ok());

        let big = Turn::new("q", "x".repeat(MAX_ITEM_BYTES));
        let item = names.to_item(&session, &big, None);
        match check_size(&item, &big) {
            Err(Error::InvalidInput { field, message }) => {
                assert_eq!(field, "turn");
                assert!(message.contains(&item_size(&item).to_string()), "{message}");
                assert!(message.contains("409600"), "{message}");
            }
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn item_round_trips_and_malformed_items_are_named() {
        let names = AttributeNames::default();
        let session = SessionId::new("s-1").unwrap();
        let turn = Turn::new("¿Qué? 🚀", "answer");
        let mut item = names.to_item(&session, &turn, Some(42));
        assert_eq!(
            item.get("expires_at"),
            Some(&AttributeValue::N("42".into()))
        );
        assert_eq!(names.to_turn("t", &item).unwrap(), turn);

        item.remove("answer");
        let err = names.to_turn("t", &item).unwrap_err().to_string();
        assert!(err.contains("`answer`") && err.contains("missing"), "{err}");
        item.insert("answer".into(), AttributeValue::N("1".into()));
        let err = names.to_turn("t", &item).unwrap_err().to_string();
        assert!(err.contains("another type (N)"), "{err}");
    }

    #[test]
    fn attribute_names_must_be_distinct_and_sized() {
        assert!(AttributeNames::default().validate().is_ok());
        let same = AttributeNames {
            answer: "question".into(),
            ..AttributeNames::default()
        };
        assert!(same
            .validate()
            .unwrap_err()
            .to_string()
            .contains("both question and answer"));
        let empty = AttributeNames {
            session: String::new(),
            ..AttributeNames::default()
        };
        assert!(empty.validate().is_err());
    }
}

/// Property tests: whatever a table holds, reading it back gives a turn or a typed error.
#[cfg(test)]
mod props {
    use aws_sdk_dynamodb::primitives::Blob;
    use proptest::collection::{hash_map, vec};
    use proptest::prelude::*;

    use super::*;

    const NAMES: [&str; 6] = [
        "session_id",
        "turn_id",
        "question",
        "answer",
        "created_at",
        "expires_at",
    ];

    /// Text that looks like a DynamoDB Number, valid or nearly so.
    fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[+-]?[0-9]{0,40}(\\.[0-9]{0,40})?([eE][+-]?[0-9]{0,6})?",
            "-?[0-9]{1,20}",
            any::<String>(),
        ]
    }

    /// Any attribute value: every scalar and set kind, lists and maps nested a few levels.
    fn attribute_value() -> impl Strategy<Value = AttributeValue> {
        let leaf = prop_oneof![
            any::<String>().prop_map(AttributeValue::S),
            number_text().prop_map(AttributeValue::N),
            vec(any::<u8>(), 0..32).prop_map(|b| AttributeValue::B(Blob::new(b))),
            any::<bool>().prop_map(AttributeValue::Bool),
            any::<bool>().prop_map(AttributeValue::Null),
            vec(any::<String>(), 0..4).prop_map(AttributeValue::Ss),
            vec(number_text(), 0..4).prop_map(AttributeValue::Ns),
            vec(vec(any::<u8>(), 0..8), 0..4)
                .prop_map(|v| AttributeValue::Bs(v.into_iter().map(Blob::new).collect())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
                hash_map("[a-z_]{0,8}", inner, 0..4).prop_map(AttributeValue::M),
            ]
        })
    }

    /// The value of one of a turn item's attributes: mostly the right type (so the later
    /// checks are reached), sometimes anything.
    fn value_for(name: &'static str) -> BoxedStrategy<AttributeValue> {
        let right = match name {
            "turn_id" => prop_oneof![
                any::<u128>().prop_map(uuid_text),
                "[0-9a-fA-F-]{0,40}",
                any::<String>(),
            ]
            .prop_map(AttributeValue::S)
            .boxed(),
            "created_at" | "expires_at" => number_text().prop_map(AttributeValue::N).boxed(),
            _ => any::<String>().prop_map(AttributeValue::S).boxed(),
        };
        prop_oneof![4 => right, 1 => attribute_value()].boxed()
    }

    /// The hyphenated text of the UUID whose bits are `n`.
    fn uuid_text(n: u128) -> String {
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            n >> 96,
            (n >> 80) & 0xffff,
            (n >> 64) & 0xffff,
            (n >> 48) & 0xffff,
            n & 0xffff_ffff_ffff
        )
    }

    fn turn_id(n: u128) -> TurnId {
        uuid_text(n).parse().expect("a UUID's text is a turn id")
    }

    /// An item as a table might hold it: each turn attribute present or not, with a
    /// plausible or arbitrary value, plus unknown attributes.
    fn item() -> impl Strategy<Value = HashMap<String, AttributeValue>> {
        let known: Vec<_> = NAMES
            .iter()
            .map(|&name| proptest::option::weighted(0.9, value_for(name)))
            .collect();
        (known, hash_map("[a-z_]{1,12}", attribute_value(), 0..4)).prop_map(|(known, extra)| {
            let mut item = extra;
            for (name, value) in NAMES.iter().zip(known) {
                match value {
                    Some(v) => item.insert((*name).to_owned(), v),
                    None => item.remove(*name),
                };
            }
            item
        })
    }

    fn text_of<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
        match item.get(name) {
            Some(AttributeValue::S(s)) => Some(s),
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn any_item_reads_as_a_turn_or_a_typed_history_error(item in item()) {
            let names = AttributeNames::default();
            match names.to_turn("t", &item) {
                Ok(turn) => {
                    // Only a well-formed item reads back, and it reads back as stored.
                    let stored_id =
                        text_of(&item, "turn_id").and_then(|t| t.parse::<TurnId>().ok());
                    prop_assert_eq!(stored_id, Some(turn.id));
                    prop_assert_eq!(Some(turn.question.as_str()), text_of(&item, "question"));
                    prop_assert_eq!(Some(turn.answer.as_str()), text_of(&item, "answer"));
                    let Some(AttributeValue::N(n)) = item.get("created_at") else {
                        return Err(TestCaseError::fail("created_at is not a Number"));
                    };
                    prop_assert_eq!(parse_epoch_millis(n), Some(turn.created_at));
                }
                Err(Error::History { message, retryable, .. }) => {
                    prop_assert!(!retryable, "a malformed item is not worth retrying");
                    prop_assert!(message.contains("table `t`"), "{}", message);
                }
                Err(other) => prop_assert!(false, "not a history error: {other:?}"),
            }
        }

        #[test]
        fn any_turn_round_trips_through_its_item(
            question in any::<String>(),
            answer in any::<String>(),
            id in any::<u128>(),
            nanos in any::<u64>(),
            before_epoch in any::<bool>(),
            expires in proptest::option::of(any::<u64>()),
        ) {
            let offset = Duration::from_nanos(nanos);
            let created_at = if before_epoch { UNIX_EPOCH - offset } else { UNIX_EPOCH + offset };
            let turn = Turn { id: turn_id(id), question, answer, created_at };
            let names = AttributeNames::default();
            let session = SessionId::new("s").unwrap();
            let item = names.to_item(&session, &turn, expires);
            prop_assert_eq!(names.to_turn("t", &item).unwrap(), turn);
            // The size is counted whatever the item holds.
            prop_assert!(item_size(&item) > 0);
        }

        #[test]
        fn any_text_parses_as_a_time_or_none(text in any::<String>()) {
            // No panic, and an accepted text is made of a sign, digits, one point, an exponent.
            if parse_epoch_millis(&text).is_some() {
                let number_chars = |c: char| c.is_ascii_digit() || "+-.eE".contains(c);
                prop_assert!(text.chars().all(number_chars), "{:?}", text);
            }
        }

        #[test]
        fn number_like_text_parses_as_a_time_or_none(text in number_text()) {
            // Huge exponents and long digit runs overflow into None, never a panic; a time
            // that parses formats back to a number that parses to the same time.
            if let Some(t) = parse_epoch_millis(&text) {
                prop_assert_eq!(parse_epoch_millis(&format_epoch_millis(t)), Some(t));
            }
        }

        #[test]
        fn item_size_counts_any_item(item in item()) {
            let size = item_size(&item);
            let names: usize = item.keys().map(String::len).sum();
            prop_assert!(size >= names);
        }
    }
}
