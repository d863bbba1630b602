//! Measurements on model outputs: classification and retrieval metrics (and, later, TwoNN and
//! t-SNE). Pure tensor code, tested against direct references.

pub mod metrics;
