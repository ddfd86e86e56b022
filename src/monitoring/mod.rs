//! Model monitoring from the request log: ground-truth outcomes, accuracy over time, drift
//! against each model version's training reference, and the background evaluator with alerts.

pub mod alerts;
pub mod drift;
pub mod evaluator;
pub mod histogram;
pub mod outcomes;
pub mod performance;
pub mod references;
pub mod reports;
pub mod shadow_comparison;
pub mod stats;
pub mod traffic;
