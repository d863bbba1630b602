//! Training pieces shared by the stages that train: an explicit-list AdamW, the reference
//! trainers' learning-rate schedules, the Convpass adapters and the adapted vision forward with
//! a classifier head (SLS retraining, spec structured-and-analysis.md §2.5–2.8).

pub mod adamw;
pub mod contrastive;
pub mod convpass;
pub mod schedule;

pub use adamw::AdamW;
