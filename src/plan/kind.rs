//! Stage kinds. Each has a `version` that is part of every key of that kind: bump it when the
//! implementation's output for the same inputs changes, and exactly those entries recompute.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    /// Vision-tower fine-tuning with a frozen zero-shot head; produces a model.
    Finetune,
    /// Draws and preprocesses the calibration set of one (model, dataset, size, seed).
    Calibrate,
    /// Prunes a model with one method at one sparsity.
    Prune,
    /// Retrains a pruned (or truncated) model; pruned weights stay zero.
    Retrain,
    /// Zero-shot evaluation of a dense, pruned or retrained model.
    Evaluate,
    /// TwoNN intrinsic dimension after every encoder layer.
    IntrinsicDimension,
}

impl StageKind {
    pub const ALL: [StageKind; 6] = [
        StageKind::Finetune,
        StageKind::Calibrate,
        StageKind::Prune,
        StageKind::Retrain,
        StageKind::Evaluate,
        StageKind::IntrinsicDimension,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StageKind::Finetune => "finetune",
            StageKind::Calibrate => "calibrate",
            StageKind::Prune => "prune",
            StageKind::Retrain => "retrain",
            StageKind::Evaluate => "evaluate",
            StageKind::IntrinsicDimension => "intrinsic-dimension",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Implementation version, part of the key.
    pub fn version(self) -> u32 {
        match self {
            // 2: AdamW over an explicit tensor list, checkpointed (resumable).
            StageKind::Finetune => 2,
            StageKind::Calibrate => 1,
            // 2: entries declare their artifact kind (`artifact.json`); deviations are a list.
            StageKind::Prune => 2,
            // 2: dropout seeded per step, checkpointed (resumable).
            StageKind::Retrain => 2,
            StageKind::Evaluate => 1,
            StageKind::IntrinsicDimension => 1,
        }
    }
}

impl std::fmt::Display for StageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::StageKind;

    #[test]
    fn the_manifest_knows_every_kind_by_name() {
        let names: Vec<&str> = StageKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, crate::manifest::types::STAGE_KIND_NAMES);
    }
}
