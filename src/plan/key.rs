//! Canonical encoding of a node: the bytes whose sha256 is the node's key.
//!
//! JSON with object keys sorted at every level (independent of serde_json's map order
//! feature), numbers in serde_json's shortest round-trip form. Each part is length-prefixed.

use crate::util::hash::KeyHasher;
use serde_json::Value as Json;

/// Writes `value` as canonical JSON (sorted keys, no whitespace).
pub fn canonical_json(value: &Json, out: &mut String) {
    match value {
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::from(k.as_str()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Canonical JSON text of `value`.
pub fn canonical(value: &Json) -> String {
    let mut out = String::with_capacity(128);
    canonical_json(value, &mut out);
    out
}

/// Canonical JSON of an object whose values are already canonical JSON texts (keys are sorted
/// here), so nodes can be assembled from precomputed parts without building a tree.
pub fn object(entries: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = entries.iter().collect();
    sorted.sort_by_key(|(k, _)| *k);
    let mut out = String::with_capacity(
        entries
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + 2,
    );
    out.push('{');
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Json::from(*k).to_string());
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

/// The key of a node: sha256 over kind, version, params (canonical JSON text), upstream keys
/// and input fingerprints.
pub fn node_key<'a>(
    kind: &str,
    version: u32,
    params: &str,
    upstream: impl IntoIterator<Item = &'a str>,
    inputs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut h = KeyHasher::new();
    h.field(b"orchestrate-node-v1")
        .field(kind.as_bytes())
        .field(&version.to_le_bytes());
    h.field(params.as_bytes());
    for key in upstream {
        h.field(b"upstream").field(key.as_bytes());
    }
    for (role, fingerprint) in inputs {
        h.field(b"input")
            .field(role.as_bytes())
            .field(fingerprint.as_bytes());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut a = String::new();
        canonical_json(&json!({"b": 1, "a": {"z": [1.5, "x"], "y": true}}), &mut a);
        assert_eq!(a, r#"{"a":{"y":true,"z":[1.5,"x"]},"b":1}"#);
    }

    #[test]
    fn object_matches_canonical_json() {
        let inner = canonical(&json!({"z": 1, "a": [2]}));
        assert_eq!(
            object(&[("b", "true"), ("a", &inner)]),
            canonical(&json!({"b": true, "a": {"a": [2], "z": 1}}))
        );
    }

    #[test]
    fn key_separates_fields() {
        let p = "{}";
        assert_ne!(
            node_key("ab", 1, p, ["c"], []),
            node_key("a", 1, p, ["bc"], [])
        );
        assert_ne!(node_key("a", 1, p, [], []), node_key("a", 2, p, [], []));
        assert_eq!(
            node_key("a", 1, &canonical(&json!({"x": 1, "y": 2})), [], []),
            node_key("a", 1, &canonical(&json!({"y": 2, "x": 1})), [], [])
        );
    }
}
