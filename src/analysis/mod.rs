//! Measurements on model outputs: classification and retrieval metrics, TwoNN intrinsic
//! dimension, exact t-SNE and silhouette scores. Pure tensor code, tested against direct
//! references (float64 implementations, scikit-learn, the spec's check values).

pub mod metrics;
pub mod representation;
pub mod silhouette;
pub mod tsne;
pub mod twonn;
