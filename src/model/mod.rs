//! The prediction model: input features and their validation, the serialized pipeline, model
//! cards, the registry of loaded versions, and the training pipeline.

pub mod artifact;
pub mod card;
pub mod catalogue;
pub mod dataset;
pub mod events;
pub mod explain;
pub mod features;
pub mod forest;
pub mod in_force;
pub mod registry;
pub mod train;

pub use card::ModelCard;
pub use catalogue::PRICE_FEATURE;
pub use features::{Feature, FeatureValue, HouseFeatures, InvalidFeature};
pub use registry::{
    Interval, LoadedModel, MONITORED_LEVEL, ModelLoadError, ModelRegistry, ModelRoles, ModelSet, PredictionWarning,
    ScoreError, Scored, UnsupportedLevel, WarningKind,
};
