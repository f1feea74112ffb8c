//! Property tests: whatever a client sends (any bytes, any JSON, any
//! Unicode), the frame parser and the newtypes answer `Ok` or a typed
//! error, never a panic; and what they accept holds their invariants.

use proptest::prelude::*;
use roomcast_domain::wire::{ClientFrame, Incoming};
use roomcast_domain::{
    ClientId, MAX_BODY_CHARS, MAX_CLIENT_ID_CHARS, MAX_NAME_CHARS, MessageBody, MessageId, RoomId,
    RoomSlug, Timestamp, UserId, Username, Visibility,
};

/// Any JSON value, nested a few levels, with arbitrary strings.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::hash_map(any::<String>(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Frames shaped like the real ones, with arbitrary field values: these
/// reach the validation behind the JSON parse.
fn frame_like() -> impl Strategy<Value = serde_json::Value> {
    let kind = prop_oneof![
        Just(serde_json::Value::from("text")),
        Just(serde_json::Value::from("update")),
        Just(serde_json::Value::from("delete")),
        Just(serde_json::Value::from("typing")),
        Just(serde_json::Value::Null),
        json_value(),
    ];
    (
        kind,
        json_value(),
        json_value(),
        json_value(),
        any::<String>(),
    )
        .prop_map(|(kind, message, id, client_id, text)| {
            serde_json::json!({
                "type": kind,
                "message": if text.is_empty() { message } else { text.into() },
                "messageId": id,
                "clientId": client_id,
                "timestamp": "2024-01-01T00:00:00Z",
            })
        })
}

/// What every accepted frame guarantees downstream.
fn holds_invariants(frame: &ClientFrame) -> bool {
    let body_ok = |b: &MessageBody| {
        !b.as_str().is_empty()
            && b.as_str() == b.as_str().trim()
            && b.as_str().chars().count() <= MAX_BODY_CHARS
    };
    match frame {
        ClientFrame::Text { body, client_id } => {
            body_ok(body)
                && client_id
                    .as_ref()
                    .is_none_or(|c| (1..=MAX_CLIENT_ID_CHARS).contains(&c.as_str().chars().count()))
        }
        ClientFrame::Update { body, .. } => body_ok(body),
        ClientFrame::Delete { .. } | ClientFrame::Typing | ClientFrame::Read { .. } => true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_parse_to_a_frame_or_a_typed_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        match ClientFrame::parse(&text) {
            Ok(frame) => prop_assert!(holds_invariants(&frame), "{:?}", frame),
            Err(e) => prop_assert!(!e.to_string().is_empty() && !e.code().as_str().is_empty()),
        }
        let _ = ClientFrame::client_id_of(&text);
        let _ = Incoming::parse(&text);
    }

    #[test]
    fn any_json_parses_to_a_frame_or_a_typed_error(value in prop_oneof![json_value(), frame_like()]) {
        let text = value.to_string();
        match ClientFrame::parse(&text) {
            Ok(frame) => prop_assert!(holds_invariants(&frame), "{:?}", frame),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        if let Some(c) = ClientFrame::client_id_of(&text) {
            prop_assert!(ClientId::parse(c).is_ok());
        }
        let _ = Incoming::parse(&text);
    }

    #[test]
    fn message_bodies_are_trimmed_and_bounded_whatever_the_unicode(raw in any::<String>()) {
        match MessageBody::parse(&raw) {
            Ok(body) => {
                prop_assert_eq!(body.as_str(), raw.trim());
                prop_assert!(!body.as_str().is_empty());
                prop_assert!(body.as_str().chars().count() <= MAX_BODY_CHARS);
            }
            Err(e) => prop_assert!(raw.trim().is_empty() || raw.trim().chars().count() > MAX_BODY_CHARS, "{e}"),
        }
    }

    #[test]
    fn names_and_slugs_hold_their_alphabet_or_are_refused(raw in any::<String>()) {
        let allowed = |s: &str| {
            !s.is_empty()
                && s.chars().count() <= MAX_NAME_CHARS
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        };
        if let Ok(name) = Username::parse(raw.clone()) {
            prop_assert!(allowed(name.as_str()));
        }
        if let Ok(slug) = RoomSlug::parse(raw.clone()) {
            prop_assert!(allowed(slug.as_str()));
        }
        if let Some(slug) = RoomSlug::slugify(&raw) {
            prop_assert!(allowed(slug.as_str()), "{:?} from {:?}", slug.as_str(), raw);
        }
    }

    #[test]
    fn ids_timestamps_and_visibilities_parse_or_refuse(raw in any::<String>()) {
        for parsed in [
            MessageId::parse(&raw).map(|id| id.to_string()).ok(),
            RoomId::parse(&raw).map(|id| id.to_string()).ok(),
            UserId::parse(&raw).map(|id| id.to_string()).ok(),
        ]
        .into_iter()
        .flatten()
        {
            prop_assert_eq!(MessageId::parse(&parsed).map(|i| i.to_string()).ok(), Some(parsed.clone()));
        }
        if let Some(ts) = Timestamp::parse(&raw) {
            prop_assert_eq!(Timestamp::parse(&ts.to_string()), Some(ts));
        }
        if let Ok(v) = Visibility::parse(&raw) {
            prop_assert_eq!(v.as_str(), raw.as_str());
        }
        if let Ok(c) = ClientId::parse(raw.clone()) {
            prop_assert!((1..=MAX_CLIENT_ID_CHARS).contains(&c.as_str().chars().count()));
        }
    }
}
