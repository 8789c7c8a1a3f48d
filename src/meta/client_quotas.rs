//! Client quotas in the metadata log (KIP-546, after Kafka 4.1's `ClientQuotaControlManager`
//! and `ClientQuotasImage`): the active controller's validation of an AlterClientQuotas into
//! [`MetaRecord::ClientQuota`] records, and the DescribeClientQuotas filter over the image.
//! Pure functions of the image; the handlers translate the wire messages, the broker's
//! `quota` module enforces what the image holds.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::image::{ClientQuotas, MetadataImage};
use super::records::{MetaRecord, QuotaEntity, QuotaValue};

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
pub const CONNECTION_CREATION_RATE: &str = "connection_creation_rate";

/// Kafka's error codes these answers use.
pub const INVALID_REQUEST: i16 = 42;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const UNKNOWN_SERVER_ERROR: i16 = -1;

/// An error code and its message.
pub type QuotaError = (i16, String);

/// An entity and its quotas (key → value), as DescribeClientQuotas lists them.
pub type QuotaEntry = (QuotaEntity, BTreeMap<String, QuotaValue>);

/// One entry of an AlterClientQuotas request: the entity as the request names it (type,
/// name or None for the default) and its operations (key, value or None to remove).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaAlteration {
    pub entity: Vec<(String, Option<String>)>,
    pub ops: Vec<(String, Option<QuotaValue>)>,
}

/// How a quota key's value is typed (Kafka's `QuotaConfig` definitions).
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Long,
    Int,
    Double,
    /// A SCRAM mechanism among a user's configs: not a quota (Kafka answers
    /// UNKNOWN_SERVER_ERROR for it here).
    Text,
}

fn key_type(entity: &BTreeMap<String, Option<String>>, key: &str) -> Option<KeyType> {
    let ip = entity.contains_key(IP);
    let user = entity.contains_key(USER);
    match key {
        _ if ip => (key == CONNECTION_CREATION_RATE).then_some(KeyType::Int),
        PRODUCER_BYTE_RATE | CONSUMER_BYTE_RATE => Some(KeyType::Long),
        REQUEST_PERCENTAGE | CONTROLLER_MUTATION_RATE => Some(KeyType::Double),
        "SCRAM-SHA-256" | "SCRAM-SHA-512" if user => Some(KeyType::Text),
        _ => None,
    }
}

/// The entity as a map (a type named twice: the last name, as Kafka's request parsing keeps
/// it), checked as Kafka's `validateEntity` and `configKeysForEntityType`.
fn validate_entity(
    entity: &[(String, Option<String>)],
) -> Result<BTreeMap<String, Option<String>>, QuotaError> {
    let map: BTreeMap<String, Option<String>> = entity.iter().cloned().collect();
    let invalid = |m: String| Err((INVALID_REQUEST, m));
    if map.is_empty() {
        return invalid("Invalid empty client quota entity".into());
    }
    for (t, name) in &map {
        if t != USER && t != CLIENT_ID && t != IP {
            return invalid(format!("Unhandled client quota entity type: {t}"));
        }
        if name.as_deref() == Some("") {
            return invalid(format!("Empty {t} not supported"));
        }
    }
    if map.contains_key(IP) {
        if map.len() > 1 {
            return invalid("Invalid empty client quota entity".into());
        }
        if let Some(Some(ip)) = map.get(IP) {
            // Kafka also accepts a host name it can resolve; resolving would block the
            // controller, so only addresses are taken.
            if ip.parse::<std::net::IpAddr>().is_err() {
                return invalid(format!("{ip} is not a valid IP or resolvable host."));
            }
        }
    }
    Ok(map)
}

/// Checks one value (Kafka's `validateQuotaKeyValue`; ottla also refuses values ≤ 0, which
/// would throttle a client for ever).
fn validate_value(
    entity: &BTreeMap<String, Option<String>>,
    key: &str,
    value: f64,
) -> Result<(), QuotaError> {
    let Some(t) = key_type(entity, key) else {
        return Err((INVALID_REQUEST, format!("Invalid configuration key {key}")));
    };
    if t == KeyType::Text {
        return Err((
            UNKNOWN_SERVER_ERROR,
            format!("Unexpected config type STRING of {key} should be Long or Double"),
        ));
    }
    if !value.is_finite() || value <= 0.0 {
        return Err((
            INVALID_REQUEST,
            format!("Quota {key} must be greater than 0, not {value}"),
        ));
    }
    let integral = |max: f64, what: &str| {
        let epsilon = 1e-6;
        let whole = (value + epsilon).trunc();
        if (whole - value).abs() > epsilon || value > max {
            Err((
                INVALID_REQUEST,
                format!("Configuration {key} must be a {what} value"),
            ))
        } else {
            Ok(())
        }
    };
    match t {
        KeyType::Long => integral(i64::MAX as f64, "Long"),
        KeyType::Int => integral(i32::MAX as f64, "Int"),
        _ => Ok(()),
    }
}

/// The records of an AlterClientQuotas request and the result of each distinct entity, in
/// the order of their first appearance (Kafka answers one entry per entity). An entity with
/// an error has none of its changes written; the others' are (one entry, atomically).
/// A key named twice for an entity, or an entity named twice, is INVALID_REQUEST for it.
pub fn alter(
    image: &MetadataImage,
    alterations: &[QuotaAlteration],
) -> (Vec<MetaRecord>, Vec<(QuotaEntity, Option<QuotaError>)>) {
    let mut records = Vec::new();
    let mut results: Vec<(QuotaEntity, Option<QuotaError>)> = Vec::new();
    for a in alterations {
        let map: BTreeMap<String, Option<String>> = a.entity.iter().cloned().collect();
        let entity: QuotaEntity = map.clone().into_iter().collect();
        if let Some((_, result)) = results.iter_mut().find(|(e, _)| *e == entity) {
            // Kafka keeps the first one's records and reports the error for the entity.
            *result = Some((
                INVALID_REQUEST,
                format!("Ignoring duplicate entity {}", describe_entity(&entity)),
            ));
            continue;
        }
        let outcome = alter_entity(image, a, &entity);
        match outcome {
            Ok(mine) => {
                records.extend(mine);
                results.push((entity, None));
            }
            Err(e) => results.push((entity, Some(e))),
        }
    }
    (records, results)
}

/// The records of one entity's alteration, or why it is refused.
fn alter_entity(
    image: &MetadataImage,
    a: &QuotaAlteration,
    entity: &QuotaEntity,
) -> Result<Vec<MetaRecord>, QuotaError> {
    let empty = BTreeMap::new();
    let map = validate_entity(&a.entity)?;
    let mut seen = BTreeSet::new();
    for (key, _) in &a.ops {
        if !seen.insert(key.as_str()) {
            return Err((
                INVALID_REQUEST,
                format!(
                    "Duplicate quota key {key} not updating quota for this entity {}",
                    describe_entity(entity)
                ),
            ));
        }
    }
    let current = image.quotas.get(entity).unwrap_or(&empty);
    let mut mine = Vec::new();
    for (key, value) in &a.ops {
        match value {
            None => {
                if current.contains_key(key) {
                    mine.push(MetaRecord::ClientQuota {
                        entity: entity.clone(),
                        key: key.clone(),
                        value: None,
                    });
                }
            }
            Some(v) => {
                validate_value(&map, key, v.0)?;
                if current.get(key) != Some(v) {
                    mine.push(MetaRecord::ClientQuota {
                        entity: entity.clone(),
                        key: key.clone(),
                        value: Some(*v),
                    });
                }
            }
        }
    }
    Ok(mine)
}

/// Kafka's `ClientQuotaEntity.toString` form, for messages.
fn describe_entity(entity: &QuotaEntity) -> String {
    let parts: Vec<String> = entity
        .iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
        .collect();
    format!("ClientQuotaEntity(entries={{{}}})", parts.join(", "))
}

/// A DescribeClientQuotas filter component: `match_type` 0 (EXACT, `name` set), 1 (DEFAULT)
/// or 2 (SPECIFIED: any entity with that type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterComponent {
    pub entity_type: String,
    pub match_type: i8,
    pub name: Option<String>,
}

/// The entities (and their quotas) the filter matches, as Kafka's `ClientQuotasImage
/// .describe`: EXACT and DEFAULT components must be in the entity with that name (None for
/// the default), SPECIFIED ones only present; `strict` also wants no other types. No
/// components: every entity (none when strict). Errors are the whole answer's.
pub fn describe(
    quotas: &ClientQuotas,
    components: &[FilterComponent],
    strict: bool,
) -> Result<Vec<QuotaEntry>, QuotaError> {
    let mut exact: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    let mut typed: BTreeSet<&str> = BTreeSet::new();
    let invalid = |m: String| Err((INVALID_REQUEST, m));
    for c in components {
        let t = c.entity_type.as_str();
        if t.is_empty() {
            return invalid("Invalid empty entity type.".into());
        }
        if exact.contains_key(t) || typed.contains(t) {
            return invalid(format!(
                "Entity type {t} cannot appear more than once in the filter."
            ));
        }
        if t != IP && t != USER && t != CLIENT_ID {
            return Err((UNSUPPORTED_VERSION, format!("Unsupported entity type {t}")));
        }
        match c.match_type {
            0 => match &c.name {
                None => {
                    return invalid(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                    )
                }
                Some(n) => {
                    exact.insert(t, Some(n.as_str()));
                }
            },
            1 => {
                if c.name.is_some() {
                    return invalid(
                        "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                            .into(),
                    );
                }
                exact.insert(t, None);
            }
            2 => {
                if c.name.is_some() {
                    return invalid(
                        "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."
                            .into(),
                    );
                }
                typed.insert(t);
            }
            other => return invalid(format!("Unknown match type {other}")),
        }
    }
    let has = |t: &str| exact.contains_key(t) || typed.contains(t);
    if has(IP) && (has(USER) || has(CLIENT_ID)) {
        return invalid(
            "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component."
                .into(),
        );
    }
    if exact.is_empty() && typed.is_empty() && strict {
        return Ok(Vec::new());
    }
    let matches = |entity: &QuotaEntity| {
        let name_of = |t: &str| entity.iter().find(|(et, _)| et == t).map(|(_, n)| n);
        exact
            .iter()
            .all(|(t, want)| name_of(t).is_some_and(|n| n.as_deref() == *want))
            && typed.iter().all(|t| name_of(t).is_some())
            && (!strict || entity.len() == exact.len() + typed.len())
    };
    Ok(quotas
        .iter()
        .filter(|(e, _)| matches(e))
        .map(|(e, v)| (e.clone(), v.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(parts: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        parts
            .iter()
            .map(|(t, n)| (t.to_string(), n.map(str::to_string)))
            .collect()
    }

    fn set(parts: &[(&str, Option<&str>)], key: &str, value: f64) -> QuotaAlteration {
        QuotaAlteration {
            entity: entity(parts),
            ops: vec![(key.to_string(), Some(QuotaValue(value)))],
        }
    }

    fn apply(image: &MetadataImage, records: &[MetaRecord]) -> MetadataImage {
        let (next, _) = image.with_entry(image.applied.map_or(1, |l| l.index + 1), records);
        (*next).clone()
    }

    #[test]
    fn alterations_are_validated_as_kafka_does() {
        let image = MetadataImage::default();
        let cases = [
            (
                set(&[], PRODUCER_BYTE_RATE, 1.0),
                "Invalid empty client quota entity",
            ),
            (
                set(&[("group", Some("g"))], PRODUCER_BYTE_RATE, 1.0),
                "Unhandled client quota entity type: group",
            ),
            (
                set(&[("user", Some(""))], PRODUCER_BYTE_RATE, 1.0),
                "Empty user not supported",
            ),
            (
                set(
                    &[("ip", Some("1.2.3.4")), ("user", None)],
                    CONNECTION_CREATION_RATE,
                    1.0,
                ),
                "Invalid empty client quota entity",
            ),
            (
                set(&[("ip", Some("not an ip"))], CONNECTION_CREATION_RATE, 1.0),
                "is not a valid IP",
            ),
            (
                set(&[("user", Some("u"))], "retention.ms", 1.0),
                "Invalid configuration key retention.ms",
            ),
            (
                set(&[("ip", None)], PRODUCER_BYTE_RATE, 1.0),
                "Invalid configuration key producer_byte_rate",
            ),
            (
                set(&[("client-id", Some("c"))], PRODUCER_BYTE_RATE, 1.5),
                "must be a Long value",
            ),
            (
                set(&[("client-id", Some("c"))], PRODUCER_BYTE_RATE, 0.0),
                "must be greater than 0",
            ),
            (
                set(&[("client-id", Some("c"))], REQUEST_PERCENTAGE, -5.0),
                "must be greater than 0",
            ),
        ];
        for (alteration, message) in cases {
            let (records, results) = alter(&image, std::slice::from_ref(&alteration));
            assert!(records.is_empty(), "{alteration:?}");
            let (code, m) = results[0].1.clone().expect("an error");
            assert_eq!(code, INVALID_REQUEST, "{alteration:?}");
            assert!(m.contains(message), "{m} / {message}");
        }
        let scram = set(&[("user", Some("u"))], "SCRAM-SHA-256", 1.0);
        let (_, results) = alter(&image, &[scram]);
        assert_eq!(
            results[0].1.as_ref().map(|e| e.0),
            Some(UNKNOWN_SERVER_ERROR)
        );
        // Every allowed combination takes its keys; a double is fine for a percentage.
        let ok = [
            set(&[("user", Some("u"))], PRODUCER_BYTE_RATE, 1024.0),
            set(
                &[("user", None), ("client-id", Some("c"))],
                REQUEST_PERCENTAGE,
                12.5,
            ),
            set(&[("client-id", None)], CONSUMER_BYTE_RATE, 2048.0),
            set(&[("client-id", Some("c"))], CONTROLLER_MUTATION_RATE, 0.5),
            set(&[("ip", Some("::1"))], CONNECTION_CREATION_RATE, 10.0),
            set(&[("ip", None)], CONNECTION_CREATION_RATE, 10.0),
        ];
        let (records, results) = alter(&image, &ok);
        assert!(results.iter().all(|(_, e)| e.is_none()), "{results:?}");
        assert_eq!(records.len(), 6);
        // Entities are kept sorted by type, whatever the request's order.
        assert_eq!(
            results[1].0,
            entity(&[("client-id", Some("c")), ("user", None)])
        );
    }

    #[test]
    fn errors_are_per_entity_and_duplicates_are_refused() {
        let image = MetadataImage::default();
        let bad_key = QuotaAlteration {
            entity: entity(&[("client-id", Some("a"))]),
            ops: vec![
                (PRODUCER_BYTE_RATE.into(), Some(QuotaValue(10.0))),
                (PRODUCER_BYTE_RATE.into(), Some(QuotaValue(20.0))),
            ],
        };
        let good = set(&[("client-id", Some("b"))], PRODUCER_BYTE_RATE, 10.0);
        let (records, results) = alter(&image, &[bad_key, good.clone(), good]);
        assert_eq!(records.len(), 1);
        assert!(results[0]
            .1
            .as_ref()
            .unwrap()
            .1
            .contains("Duplicate quota key"));
        assert!(results[1]
            .1
            .as_ref()
            .unwrap()
            .1
            .contains("Ignoring duplicate entity"));
        assert_eq!(results.len(), 2);
    }

    #[test]
    fn set_change_and_remove_make_only_the_needed_records() {
        let image = MetadataImage::default();
        let a = set(&[("client-id", Some("c"))], PRODUCER_BYTE_RATE, 100.0);
        let (records, _) = alter(&image, std::slice::from_ref(&a));
        let image = apply(&image, &records);
        assert_eq!(
            image.quotas[&entity(&[("client-id", Some("c"))])][PRODUCER_BYTE_RATE],
            QuotaValue(100.0)
        );
        // The same value again: nothing to write.
        assert!(alter(&image, &[a]).0.is_empty());
        let remove = QuotaAlteration {
            entity: entity(&[("client-id", Some("c"))]),
            ops: vec![
                (PRODUCER_BYTE_RATE.into(), None),
                (CONSUMER_BYTE_RATE.into(), None),
            ],
        };
        let (records, results) = alter(&image, &[remove]);
        assert!(results[0].1.is_none());
        assert_eq!(records.len(), 1, "only the key that is set is removed");
        let image = apply(&image, &records);
        assert!(image.quotas.is_empty(), "an entity without keys is dropped");
    }

    #[test]
    fn the_image_with_quotas_round_trips_through_json() {
        let image = MetadataImage::default();
        let (records, _) = alter(
            &image,
            &[
                set(
                    &[("user", Some("u")), ("client-id", None)],
                    REQUEST_PERCENTAGE,
                    50.0,
                ),
                set(&[("client-id", Some("c"))], PRODUCER_BYTE_RATE, 1e6),
            ],
        );
        let image = apply(&image, &records);
        let text = serde_json::to_string(&image).unwrap();
        let back: MetadataImage = serde_json::from_str(&text).unwrap();
        assert_eq!(back, image);
        assert_eq!(back.quotas.len(), 2);
    }

    fn component(t: &str, match_type: i8, name: Option<&str>) -> FilterComponent {
        FilterComponent {
            entity_type: t.into(),
            match_type,
            name: name.map(str::to_string),
        }
    }

    #[test]
    fn describe_filters_as_kafka_does() {
        let image = MetadataImage::default();
        let (records, _) = alter(
            &image,
            &[
                set(&[("user", Some("alice"))], PRODUCER_BYTE_RATE, 1.0),
                set(
                    &[("user", Some("alice")), ("client-id", Some("app"))],
                    PRODUCER_BYTE_RATE,
                    2.0,
                ),
                set(&[("user", None)], PRODUCER_BYTE_RATE, 3.0),
                set(&[("client-id", Some("app"))], PRODUCER_BYTE_RATE, 4.0),
                set(&[("client-id", None)], PRODUCER_BYTE_RATE, 5.0),
                set(&[("ip", Some("10.0.0.1"))], CONNECTION_CREATION_RATE, 6.0),
            ],
        );
        let image = apply(&image, &records);
        let values = |components: &[FilterComponent], strict| -> Vec<f64> {
            let mut v: Vec<f64> = describe(&image.quotas, components, strict)
                .unwrap()
                .iter()
                .map(|(_, q)| q.values().next().unwrap().0)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        assert_eq!(values(&[], false), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(values(&[], true).is_empty());
        assert_eq!(
            values(&[component(USER, 0, Some("alice"))], false),
            vec![1.0, 2.0]
        );
        assert_eq!(
            values(&[component(USER, 0, Some("alice"))], true),
            vec![1.0]
        );
        assert_eq!(values(&[component(USER, 1, None)], false), vec![3.0]);
        assert_eq!(
            values(&[component(USER, 2, None)], false),
            vec![1.0, 2.0, 3.0]
        );
        assert_eq!(values(&[component(USER, 2, None)], true), vec![1.0, 3.0]);
        assert_eq!(
            values(&[component(CLIENT_ID, 2, None)], true),
            vec![4.0, 5.0]
        );
        assert_eq!(
            values(
                &[
                    component(USER, 2, None),
                    component(CLIENT_ID, 0, Some("app"))
                ],
                false
            ),
            vec![2.0]
        );
        assert_eq!(values(&[component(IP, 2, None)], false), vec![6.0]);
        let error = |components: &[FilterComponent]| {
            describe(&image.quotas, components, false).unwrap_err()
        };
        assert_eq!(error(&[component("", 2, None)]).0, INVALID_REQUEST);
        assert_eq!(error(&[component("group", 2, None)]).0, UNSUPPORTED_VERSION);
        assert_eq!(
            error(&[component(USER, 2, None), component(USER, 1, None)]).0,
            INVALID_REQUEST
        );
        assert_eq!(error(&[component(USER, 0, None)]).0, INVALID_REQUEST);
        assert_eq!(error(&[component(USER, 1, Some("x"))]).0, INVALID_REQUEST);
        assert_eq!(error(&[component(USER, 2, Some("x"))]).0, INVALID_REQUEST);
        assert_eq!(error(&[component(USER, 7, None)]).0, INVALID_REQUEST);
        assert_eq!(
            error(&[component(IP, 2, None), component(USER, 2, None)]).0,
            INVALID_REQUEST
        );
    }
}
