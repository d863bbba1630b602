//! The record of a cache entry: everything needed to trust, explain and reuse it.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// 2: records carry their own checksum.
pub const RECORD_FORMAT: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub format: u32,
    pub key: String,
    pub kind: String,
    pub version: u32,
    pub label: String,
    pub params: Json,
    pub upstream: Vec<UpstreamRef>,
    pub inputs: Vec<InputRef>,
    pub artifacts: Vec<Artifact>,
    /// Stage results (accuracies, achieved sparsity, ...), an object.
    pub metrics: Json,
    pub timing: Timing,
    pub provenance: Provenance,
    /// Transient artifacts were removed by the retention policy; the record still counts for
    /// the stages that already consumed them.
    #[serde(default)]
    pub evicted: bool,
    /// sha256 of the record's JSON with this field absent ([`Record::seal`]); a flipped bit
    /// anywhere in the record shows. Records of format 1 have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpstreamRef {
    pub kind: String,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputRef {
    pub role: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    /// Path relative to the entry's `artifacts/` directory.
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Big intermediates (pruned weights) that the retention policy may drop once every stage
    /// reading them is done.
    pub transient: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Timing {
    /// Unix seconds.
    pub started: f64,
    pub finished: f64,
    /// Seconds of the stage's own work.
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Provenance {
    pub device: String,
    pub host: String,
    pub orchestrate_version: String,
    pub git_revision: String,
    pub libraries: BTreeMap<String, String>,
}

impl Record {
    fn digest(&self) -> String {
        let unsealed = Record {
            checksum: None,
            ..self.clone()
        };
        crate::util::hash::sha256_hex(&serde_json::to_vec(&unsealed).expect("record serialises"))
    }

    /// Sets the checksum over everything else.
    pub fn seal(&mut self) {
        self.checksum = Some(self.digest());
    }

    /// Whether the record is intact: its checksum matches (a format-1 record has none).
    pub fn intact(&self) -> bool {
        match &self.checksum {
            Some(sum) => *sum == self.digest(),
            None => self.format < 2,
        }
    }

    /// A metric as f64, if present and numeric.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).and_then(Json::as_f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flipped_bit_breaks_the_seal() {
        let mut r = Record {
            format: RECORD_FORMAT,
            key: "k".into(),
            kind: "evaluate".into(),
            version: 1,
            label: "evaluate a".into(),
            params: serde_json::json!({"b": 1, "a": [1.5, 2]}),
            upstream: vec![],
            inputs: vec![],
            artifacts: vec![],
            metrics: serde_json::json!({"top1": 0.42}),
            timing: Timing::default(),
            provenance: Provenance::default(),
            evicted: false,
            checksum: None,
        };
        assert!(!r.intact(), "a format-2 record must be sealed");
        r.seal();
        let text = serde_json::to_string(&r).unwrap();
        let back: Record = serde_json::from_str(&text).unwrap();
        assert!(back.intact());
        let flipped: Record = serde_json::from_str(&text.replace("0.42", "0.52")).unwrap();
        assert!(!flipped.intact());
    }
}
