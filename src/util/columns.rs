//! Names of the main table's accuracy columns, written once: the tables fill them, the manifest's
//! `[[reference]]` entries may name them.

/// Retrieval recall of the evaluated model (R@1/5/10 both ways) and their mean.
pub const RETRIEVAL: [&str; 7] = [
    "image_to_text_r1",
    "image_to_text_r5",
    "image_to_text_r10",
    "text_to_image_r1",
    "text_to_image_r5",
    "text_to_image_r10",
    "r_mean",
];

/// The same after retraining, at the selected epoch.
pub const RETRAIN_RETRIEVAL: [&str; 7] = [
    "retrain_image_to_text_r1",
    "retrain_image_to_text_r5",
    "retrain_image_to_text_r10",
    "retrain_text_to_image_r1",
    "retrain_text_to_image_r5",
    "retrain_text_to_image_r10",
    "retrain_r_mean",
];

/// Every column a published number can be compared on (in percent).
pub const REFERENCE: [&str; 17] = [
    "top1",
    "top5",
    RETRIEVAL[0],
    RETRIEVAL[1],
    RETRIEVAL[2],
    RETRIEVAL[3],
    RETRIEVAL[4],
    RETRIEVAL[5],
    RETRIEVAL[6],
    "retrain_best_top1",
    RETRAIN_RETRIEVAL[0],
    RETRAIN_RETRIEVAL[1],
    RETRAIN_RETRIEVAL[2],
    RETRAIN_RETRIEVAL[3],
    RETRAIN_RETRIEVAL[4],
    RETRAIN_RETRIEVAL[5],
    RETRAIN_RETRIEVAL[6],
];

#[cfg(test)]
mod tests {
    #[test]
    fn retrained_columns_are_the_evaluated_ones_prefixed() {
        for (a, b) in super::RETRIEVAL.iter().zip(super::RETRAIN_RETRIEVAL) {
            assert_eq!(format!("retrain_{a}"), b);
        }
    }
}
