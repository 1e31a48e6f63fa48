//! Identities carried by XDM rows: extraction from `identityMap`, the checks of
//! `ingest-api.md` §2.2–2.3, and the canonical key used by the identity graph.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most identities one XDM record may carry (`ingest-api.md` §2.2).
pub const MAX_IDENTITIES_PER_RECORD: usize = 20;

/// The longest identity value accepted for namespaces other than ECID (§2.2).
pub const MAX_IDENTITY_LEN: usize = 1024;

/// Separates the namespace from the value in an identity key; it cannot occur in
/// a namespace code, so keys of different namespaces never collide.
const KEY_SEPARATOR: char = '\0';

/// One identity of a person: a namespace code and a value.
///
/// Namespace codes are matched case-insensitively (§2.3), so they are stored
/// lowercased, as entity responses spell them (`ecid`, `email`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The lowercased namespace code, e.g. `ecid`, `email`, `crmid`.
    pub namespace: String,
    /// The identity value, e.g. `ann@example.com`.
    pub id: String,
    /// Tells whether this is the primary identity of its record or profile.
    pub primary: bool,
}

impl Identity {
    /// Builds a non-primary identity, lowercasing the namespace code.
    pub fn new(namespace: &str, id: impl Into<String>) -> Self {
        Self {
            namespace: canonical_namespace(namespace),
            id: id.into(),
            primary: false,
        }
    }

    /// Returns the graph key of this identity: `namespace \0 id`.
    pub fn key(&self) -> String {
        identity_key(&self.namespace, &self.id)
    }

    /// Rebuilds a non-primary identity from a key made by [`Identity::key`].
    pub fn from_key(key: &str) -> Self {
        let (namespace, id) = key.split_once(KEY_SEPARATOR).unwrap_or(("", key));
        Self {
            namespace: namespace.to_owned(),
            id: id.to_owned(),
            primary: false,
        }
    }
}

/// Returns the canonical (lowercased) form of a namespace code.
pub fn canonical_namespace(namespace: &str) -> String {
    namespace.to_ascii_lowercase()
}

/// Returns the graph key of (namespace, id), canonicalising the namespace.
pub fn identity_key(namespace: &str, id: &str) -> String {
    let mut key = String::with_capacity(namespace.len() + 1 + id.len());
    key.extend(namespace.chars().map(|c| c.to_ascii_lowercase()));
    key.push(KEY_SEPARATOR);
    key.push_str(id);
    key
}

/// Extracts the identities of a row's `identityMap`, in document order, without
/// duplicates, with exactly one marked primary (the flagged one, else the first).
///
/// Returns a lowercase reason when the map is malformed, breaks a §2.2 limit or
/// holds no identity at all, because Profile rejects rows without an identity.
pub fn row_identities(row: &Value) -> Result<Vec<Identity>, String> {
    identity_map_identities(row.get("identityMap"))
}

/// Read access to a JSON value, so that [`identity_map_identities`] checks a parsed
/// `serde_json::Value` and packed bytes (how batch ingestion holds an event) by the same code.
pub trait JsonView<'a>: Copy {
    /// The entries of an object, in order; `None` for any other value.
    fn entries(self) -> Option<Vec<(&'a str, Self)>>;
    /// The items of an array; `None` for any other value.
    fn items(self) -> Option<Vec<Self>>;
    /// The value of `key` in an object; `None` when absent or not an object.
    fn get(self, key: &str) -> Option<Self>;
    /// The text of a string.
    fn as_str(self) -> Option<&'a str>;
    /// The value of a boolean.
    fn as_bool(self) -> Option<bool>;
}

impl<'a> JsonView<'a> for &'a Value {
    fn entries(self) -> Option<Vec<(&'a str, Self)>> {
        Some(
            self.as_object()?
                .iter()
                .map(|(key, value)| (key.as_str(), value))
                .collect(),
        )
    }

    fn items(self) -> Option<Vec<Self>> {
        Some(self.as_array()?.iter().collect())
    }

    fn get(self, key: &str) -> Option<Self> {
        Value::get(self, key)
    }

    fn as_str(self) -> Option<&'a str> {
        Value::as_str(self)
    }

    fn as_bool(self) -> Option<bool> {
        Value::as_bool(self)
    }
}

/// [`row_identities`] of a row whose `identityMap` is `map` (`None`: the row has none).
pub fn identity_map_identities<'a>(
    map: Option<impl JsonView<'a>>,
) -> Result<Vec<Identity>, String> {
    let Some(map) = map else {
        return Err("row has no identityMap, so it carries no identity".to_owned());
    };
    let Some(map) = map.entries() else {
        return Err("identityMap must be an object".to_owned());
    };
    let mut identities: Vec<Identity> = Vec::new();
    let mut primary_index = None;
    for (namespace, entries) in map {
        if namespace.is_empty() || namespace.contains(KEY_SEPARATOR) {
            return Err(format!(
                "identityMap has an invalid namespace code {namespace:?}"
            ));
        }
        let Some(entries) = entries.items() else {
            return Err(format!("identityMap.{namespace} must be an array"));
        };
        let namespace = canonical_namespace(namespace);
        for entry in entries {
            let Some(id) = entry.get("id").and_then(JsonView::as_str) else {
                return Err(format!(
                    "identityMap.{namespace}[] entries need a string id"
                ));
            };
            check_identity_value(&namespace, id)?;
            let primary = match entry.get("primary").map(JsonView::as_bool) {
                None => false,
                Some(Some(flag)) => flag,
                Some(None) => {
                    return Err(format!(
                        "identityMap.{namespace}[].primary must be a boolean"
                    ));
                }
            };
            let position = match identities
                .iter()
                .position(|known| known.namespace == namespace && known.id == id)
            {
                Some(position) => position,
                None => {
                    identities.push(Identity {
                        namespace: namespace.clone(),
                        id: id.to_owned(),
                        primary: false,
                    });
                    identities.len() - 1
                }
            };
            if primary {
                if primary_index.is_some_and(|index| index != position) {
                    return Err("identityMap marks more than one primary identity".to_owned());
                }
                primary_index = Some(position);
            }
        }
    }
    if identities.is_empty() {
        return Err("identityMap holds no identity".to_owned());
    }
    if identities.len() > MAX_IDENTITIES_PER_RECORD {
        return Err(format!(
            "row carries {} identities, more than {MAX_IDENTITIES_PER_RECORD}",
            identities.len()
        ));
    }
    identities[primary_index.unwrap_or(0)].primary = true;
    Ok(identities)
}

/// Checks one identity value against §2.2: an ECID is exactly 38 digits, any
/// other value is non-empty and at most 1,024 characters.
fn check_identity_value(namespace: &str, id: &str) -> Result<(), String> {
    if namespace == "ecid" {
        if id.len() != 38 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("ECID {id:?} is not exactly 38 digits"));
        }
    } else if id.is_empty() {
        return Err(format!("identityMap.{namespace}[] has an empty id"));
    } else if id.chars().count() > MAX_IDENTITY_LEN {
        return Err(format!(
            "identityMap.{namespace}[] id is longer than {MAX_IDENTITY_LEN} characters"
        ));
    }
    Ok(())
}

/// Copies identity fields declared by a schema (e.g. `personalEmail.address` in
/// namespace `Email`) into the row's `identityMap`, so the store, which reads
/// only `identityMap`, also links descriptor-declared identities (§2.2).
///
/// `fields` holds (dotted path, namespace code, is primary). A missing or
/// non-string field is skipped; validation then reports a row with no identity.
pub fn lift_identity_fields(row: &mut Value, fields: &[(String, String, bool)]) {
    let lifted: Vec<(String, String, bool)> = fields
        .iter()
        .filter_map(|(path, namespace, primary)| {
            let value = path
                .split('.')
                .try_fold(&*row, |node, part| node.get(part))?;
            Some((namespace.clone(), value.as_str()?.to_owned(), *primary))
        })
        .collect();
    let Some(object) = row.as_object_mut() else {
        return;
    };
    if lifted.is_empty() {
        return;
    }
    let map = object
        .entry("identityMap")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(map) = map.as_object_mut() else {
        return;
    };
    for (namespace, id, primary) in lifted {
        let entries = map
            .entry(namespace)
            .or_insert_with(|| Value::Array(Vec::new()));
        let Some(entries) = entries.as_array_mut() else {
            continue;
        };
        if entries
            .iter()
            .any(|entry| entry.get("id").and_then(Value::as_str) == Some(id.as_str()))
        {
            continue;
        }
        let mut entry = serde_json::Map::new();
        entry.insert("id".to_owned(), Value::String(id));
        if primary {
            entry.insert("primary".to_owned(), Value::Bool(true));
        }
        entries.push(Value::Object(entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ECID: &str = "12345678901234567890123456789012345678";

    #[test]
    fn extracts_identities_and_honours_the_primary_flag() {
        let row = json!({"identityMap": {
            "Email": [{"id": "a@x.com"}],
            "ECID": [{"id": ECID, "primary": true}, {"id": ECID}],
        }});
        let identities = row_identities(&row).unwrap();
        assert_eq!(identities.len(), 2, "duplicates are dropped");
        assert_eq!(
            identities[0],
            Identity {
                namespace: "email".into(),
                id: "a@x.com".into(),
                primary: false
            }
        );
        assert!(identities[1].primary);
        assert_eq!(identities[1].namespace, "ecid");
    }

    #[test]
    fn first_identity_is_primary_when_none_is_flagged() {
        let row = json!({"identityMap": {"CRMID": [{"id": "c-1"}], "Email": [{"id": "a@x.com"}]}});
        let identities = row_identities(&row).unwrap();
        assert!(identities[0].primary && !identities[1].primary);
    }

    #[test]
    fn rejects_bad_identity_maps() {
        for (row, needle) in [
            (json!({"a": 1}), "no identityMap"),
            (json!({"identityMap": {}}), "no identity"),
            (
                json!({"identityMap": {"ECID": [{"id": "123"}]}}),
                "38 digits",
            ),
            (json!({"identityMap": {"Email": [{"id": 5}]}}), "string id"),
            (
                json!({"identityMap": {"Email": [{"id": "a", "primary": true}, {"id": "b", "primary": true}]}}),
                "more than one primary",
            ),
        ] {
            let reason = row_identities(&row).unwrap_err();
            assert!(reason.contains(needle), "{reason} lacks {needle}");
        }
    }

    #[test]
    fn keys_are_case_insensitive_on_the_namespace() {
        assert_eq!(
            identity_key("Email", "a@x.com"),
            Identity::new("EMAIL", "a@x.com").key()
        );
        assert_eq!(
            Identity::from_key(&identity_key("CRMID", "c-1")),
            Identity::new("crmid", "c-1")
        );
    }

    #[test]
    fn lifts_declared_identity_fields() {
        let mut row = json!({"personalEmail": {"address": "a@x.com"}});
        lift_identity_fields(
            &mut row,
            &[("personalEmail.address".into(), "Email".into(), true)],
        );
        let identities = row_identities(&row).unwrap();
        assert_eq!(
            identities,
            vec![Identity {
                namespace: "email".into(),
                id: "a@x.com".into(),
                primary: true
            }]
        );
    }
}
