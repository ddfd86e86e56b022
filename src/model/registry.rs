//! Loading model versions from `models/<name>/<version>/`, choosing the one that answers, and
//! swapping the whole set atomically on reload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use serde::{Deserialize, Serialize};

use super::artifact::{ArtifactError, Column, Encoded, Pipeline};
use super::card::{CARD_FILE, ModelCard};
use super::catalogue::PRICE_FEATURE;
use super::features::{Feature, FeatureValue, HouseFeatures, InvalidFeature};

/// Why the model directory could not be loaded. The server refuses to start on any of these, and a
/// reload that hits one keeps the previous set.
#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    /// A file the model needs is absent or unreadable.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O cause.
        #[source]
        source: std::io::Error,
    },
    /// The card is not valid JSON of the expected shape.
    #[error("invalid model card {path}")]
    Card {
        /// The card file.
        path: PathBuf,
        /// The JSON cause.
        #[source]
        source: serde_json::Error,
    },
    /// The artifact failed verification or decoding.
    #[error("model artifact {path} is unusable")]
    Artifact {
        /// The artifact file.
        path: PathBuf,
        /// Checksum or decoding cause.
        #[source]
        source: ArtifactError,
    },
    /// The card does not describe the artifact it sits next to.
    #[error("model card {path} lists features {card:?}, the artifact uses {artifact:?}")]
    FeatureMismatch {
        /// The card file.
        path: PathBuf,
        /// From the card.
        card: Vec<String>,
        /// From the artifact.
        artifact: Vec<String>,
    },
    /// A reference distribution in the card is malformed (drift reports would be wrong).
    #[error("model card {path}: reference distribution of {feature} is malformed: {reason}")]
    BadReference {
        /// The card file.
        path: PathBuf,
        /// The feature (`_price` for the prediction).
        feature: String,
        /// What is wrong.
        reason: String,
    },
    /// The directory name does not match the card.
    #[error("{path} holds model {card_id}; it must live in <name>/<version>/")]
    Misplaced {
        /// The version directory.
        path: PathBuf,
        /// `name@version` from the card.
        card_id: String,
    },
    /// No `card.json` anywhere under the model directory.
    #[error("no model found under {0} (expected <name>/<version>/card.json); run `house-price-api train`")]
    Empty(PathBuf),
    /// A configured model (default or shadow) is not among the loaded ones.
    #[error("{role} model {wanted:?} not found; loaded: {available:?}")]
    UnknownModel {
        /// `default` or `shadow`.
        role: &'static str,
        /// The configured `name` or `name@version`.
        wanted: String,
        /// `name@version` of every loaded model.
        available: Vec<String>,
    },
}

/// Why an answered prediction deserves caution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// The value lies outside the range the model saw in training.
    OutOfRange,
    /// The label was never seen in training; the card's imputation value was used instead.
    UnseenCategory,
}

/// A per-request warning, returned with the prediction and stored with its log row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, async_graphql::SimpleObject)]
pub struct PredictionWarning {
    /// The input feature (API name).
    pub feature: String,
    /// What is wrong.
    pub kind: WarningKind,
    /// Human-readable detail.
    pub message: String,
}

/// A priced house.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Predicted price, USD.
    pub price: f64,
    /// Features the model needed but the client did not send (or sent with an unseen label).
    pub imputed: Vec<Feature>,
    /// Every feature value the model used, after imputation.
    pub values: BTreeMap<Feature, FeatureValue>,
    /// Out-of-range values and unseen labels.
    pub warnings: Vec<PredictionWarning>,
    /// (feature, reference bin) of every client-sent value and of the price, for the drift
    /// counters; bin -1 marks a feature's warning.
    pub drift_bins: Vec<(&'static str, i32)>,
}

/// Why one house could not be priced.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The input does not fit the model (unknown category): the client's fault.
    #[error(transparent)]
    Invalid(#[from] InvalidFeature),
    /// The estimator failed: a server fault.
    #[error(transparent)]
    Model(#[from] ArtifactError),
}

/// A verified, ready-to-predict model version.
#[derive(Debug)]
pub struct LoadedModel {
    /// Its card, as read from disk.
    pub card: ModelCard,
    pipeline: Pipeline,
}

impl LoadedModel {
    /// Loads `dir/card.json` and the artifact it names, verifying the artifact's sha256 first.
    pub fn load(dir: &Path) -> Result<Self, ModelLoadError> {
        let card_path = dir.join(CARD_FILE);
        let card = read_card(dir)?;
        let artifact_path = dir.join(&card.artifact.file);
        let bytes = read(&artifact_path)?;
        let pipeline = Pipeline::from_verified_bytes(&bytes, &card.artifact.sha256)
            .map_err(|source| ModelLoadError::Artifact { path: artifact_path, source })?;
        let in_card: Vec<String> = card.features.iter().map(|f| f.name.clone()).collect();
        let in_artifact: Vec<String> = pipeline.encoder.features().iter().map(|f| f.name().to_owned()).collect();
        if in_card != in_artifact {
            return Err(ModelLoadError::FeatureMismatch { path: card_path, card: in_card, artifact: in_artifact });
        }
        for (feature, reference) in card.references() {
            if let Err(reason) = reference.check() {
                return Err(ModelLoadError::BadReference { path: card_path, feature: feature.to_owned(), reason });
            }
        }
        Ok(Self { card, pipeline })
    }

    /// `name@version`.
    pub fn id(&self) -> String {
        self.card.id()
    }

    /// Prices each house; each succeeds or fails on its own. Inputs must already be validated for
    /// plausibility ([`HouseFeatures::validate`]).
    pub fn score(&self, houses: &[&HouseFeatures]) -> Vec<Result<Scored, ScoreError>> {
        let mut encoded: Vec<_> = houses.iter().map(|h| self.pipeline.encode(h)).collect();
        // The rows go to the estimator; the rest of each encoding stays for monitoring.
        let rows: Vec<Vec<f64>> =
            encoded.iter_mut().filter_map(|e| e.as_mut().ok().map(|e| std::mem::take(&mut e.row))).collect();
        let mut prices = match self.pipeline.predict(&rows) {
            Ok(prices) => prices.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(err) => {
                let message = err.to_string();
                rows.iter().map(|_| Err(ArtifactError::Predict(message.clone()))).collect()
            }
        }
        .into_iter();
        encoded
            .into_iter()
            .map(|e| {
                let e = e?;
                let price =
                    prices.next().unwrap_or_else(|| Err(ArtifactError::Predict("too few predictions".into())))?;
                if !price.is_finite() {
                    return Err(ArtifactError::Predict(format!("non-finite prediction {price}")).into());
                }
                let (warnings, drift_bins) = self.monitor(&e, price);
                Ok(Scored { price, imputed: e.imputed, values: e.values, warnings, drift_bins })
            })
            .collect()
    }

    /// Compares one encoded request with the card: warnings for values outside the training range
    /// and unseen labels, and the reference bin of each client-sent value and of the price.
    fn monitor(&self, encoded: &Encoded, price: f64) -> (Vec<PredictionWarning>, Vec<(&'static str, i32)>) {
        let mut warnings = Vec::new();
        let mut bins = Vec::new();
        for (feature, label) in &encoded.unseen {
            warnings.push(PredictionWarning {
                feature: feature.name().to_owned(),
                kind: WarningKind::UnseenCategory,
                message: format!("{feature}: {label:?} was not seen in training; the imputation value was used"),
            });
            bins.push((feature.name(), -1));
        }
        // The card lists the artifact's features in the same order (checked at load).
        for (feature, spec) in self.pipeline.encoder.columns.iter().map(Column::feature).zip(&self.card.features) {
            if encoded.imputed.contains(&feature) {
                continue;
            }
            let bin = match encoded.values.get(&feature) {
                Some(FeatureValue::Number(x)) => {
                    if let (Some(min), Some(max)) = (spec.min, spec.max)
                        && (*x < min || *x > max)
                    {
                        warnings.push(PredictionWarning {
                            feature: spec.name.clone(),
                            kind: WarningKind::OutOfRange,
                            message: format!("{}: {x} is outside the training range {min} to {max}", spec.name),
                        });
                        bins.push((feature.name(), -1));
                    }
                    spec.reference.bin_of_number(*x)
                }
                Some(FeatureValue::Category(label)) => spec.reference.bin_of_label(label),
                None => None,
            };
            if let Some(bin) = bin {
                bins.push((feature.name(), bin as i32));
            }
        }
        if let Some(bin) = self.card.prediction_reference.bin_of_number(price) {
            bins.push((PRICE_FEATURE, bin as i32));
        }
        (warnings, bins)
    }
}

/// Reads and parses `dir/card.json` (the artifact is not touched).
pub fn read_card(dir: &Path) -> Result<ModelCard, ModelLoadError> {
    let path = dir.join(CARD_FILE);
    serde_json::from_slice(&read(&path)?).map_err(|source| ModelLoadError::Card { path, source })
}

/// Every `<root>/<name>/<version>/` holding a card, ordered by name then version directory.
pub fn version_dirs(root: &Path) -> Result<Vec<PathBuf>, ModelLoadError> {
    let mut dirs = Vec::new();
    for name_dir in sorted_subdirs(root)? {
        dirs.extend(sorted_subdirs(&name_dir)?.into_iter().filter(|dir| dir.join(CARD_FILE).is_file()));
    }
    Ok(dirs)
}

/// The card of every version under `root` (what `model-table` prints), in [`version_dirs`] order.
pub fn read_cards(root: &Path) -> Result<Vec<ModelCard>, ModelLoadError> {
    version_dirs(root)?.iter().map(|dir| read_card(dir)).collect()
}

fn read(path: &Path) -> Result<Vec<u8>, ModelLoadError> {
    std::fs::read(path).map_err(|source| ModelLoadError::Read { path: path.to_owned(), source })
}

/// One consistent set of loaded models: what a request sees from start to end.
#[derive(Debug)]
pub struct ModelSet {
    models: Vec<Arc<LoadedModel>>,
    default: Arc<LoadedModel>,
    shadow: Option<Arc<LoadedModel>>,
}

impl ModelSet {
    /// Loads every `<root>/<name>/<version>/card.json`. Any unusable version fails the whole load:
    /// serving a partial set would silently change which models exist.
    pub fn load(root: &Path, default_model: &str, shadow_model: Option<&str>) -> Result<Self, ModelLoadError> {
        let mut models = Vec::new();
        for version_dir in version_dirs(root)? {
            let model = LoadedModel::load(&version_dir)?;
            let expected = root.join(&model.card.name).join(&model.card.version);
            if version_dir != expected {
                return Err(ModelLoadError::Misplaced { path: version_dir, card_id: model.id() });
            }
            models.push(Arc::new(model));
        }
        if models.is_empty() {
            return Err(ModelLoadError::Empty(root.to_owned()));
        }
        let unknown = |role, wanted: &str, models: &[Arc<LoadedModel>]| ModelLoadError::UnknownModel {
            role,
            wanted: wanted.to_owned(),
            available: models.iter().map(|m| m.id()).collect(),
        };
        let default = find(&models, default_model).ok_or_else(|| unknown("default", default_model, &models))?;
        let shadow = match shadow_model {
            Some(spec) => Some(find(&models, spec).ok_or_else(|| unknown("shadow", spec, &models))?),
            None => None,
        };
        Ok(Self { models, default, shadow })
    }

    /// The model that answers when the client does not choose one.
    pub fn default_model(&self) -> &Arc<LoadedModel> {
        &self.default
    }

    /// The model that also scores every prediction off the response path, if configured.
    pub fn shadow_model(&self) -> Option<&Arc<LoadedModel>> {
        self.shadow.as_ref()
    }

    /// Every loaded version, by name then version directory order.
    pub fn models(&self) -> &[Arc<LoadedModel>] {
        &self.models
    }

    /// `name@version` of every loaded version.
    pub fn ids(&self) -> Vec<String> {
        self.models.iter().map(|m| m.id()).collect()
    }

    /// `name@version`, or the highest semantic version of `name`.
    pub fn find(&self, spec: &str) -> Option<Arc<LoadedModel>> {
        find(&self.models, spec)
    }
}

/// The live model set; swapped whole by [`ModelRegistry::install`].
#[derive(Debug)]
pub struct ModelRegistry {
    root: PathBuf,
    default_model: String,
    shadow_model: Option<String>,
    current: ArcSwap<ModelSet>,
}

impl ModelRegistry {
    /// Loads the initial set; fails (and the server refuses to start) if any model is unusable.
    pub fn load(root: &Path, default_model: &str, shadow_model: Option<&str>) -> Result<Self, ModelLoadError> {
        let set = ModelSet::load(root, default_model, shadow_model)?;
        Ok(Self {
            root: root.to_owned(),
            default_model: default_model.to_owned(),
            shadow_model: shadow_model.map(str::to_owned),
            current: ArcSwap::from_pointee(set),
        })
    }

    /// The current set. Hold it for the whole request: a concurrent reload does not change it.
    pub fn snapshot(&self) -> Arc<ModelSet> {
        self.current.load_full()
    }

    /// Loads the model directory as it is now, checksums verified, without serving it yet: a
    /// broken model fails the scan and the current set is untouched.
    pub fn scan(&self) -> Result<ModelSet, ModelLoadError> {
        ModelSet::load(&self.root, &self.default_model, self.shadow_model.as_deref())
    }

    /// Swaps a scanned set in atomically: requests that already hold a snapshot finish on the
    /// previous set, which is returned.
    pub fn install(&self, set: Arc<ModelSet>) -> Arc<ModelSet> {
        self.current.swap(set)
    }

    /// The directory scanned.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Splits a model spec: `name` → (name, None), `name@version` → (name, Some(version)).
pub fn parse_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (spec, None),
    }
}

fn find(models: &[Arc<LoadedModel>], spec: &str) -> Option<Arc<LoadedModel>> {
    let (name, version) = parse_spec(spec);
    models
        .iter()
        .filter(|m| m.card.name == name && version.is_none_or(|v| m.card.version == v))
        .max_by(|a, b| version_key(&a.card.version).cmp(&version_key(&b.card.version)))
        .cloned()
}

fn version_key(version: &str) -> (Option<semver::Version>, &str) {
    (semver::Version::parse(version).ok(), version)
}

fn sorted_subdirs(dir: &Path) -> Result<Vec<PathBuf>, ModelLoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ModelLoadError::Read { path: dir.to_owned(), source })?;
    let mut dirs: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    Ok(dirs)
}
