//! Loading model versions from `models/<name>/<version>/`, choosing the one that answers, and
//! swapping the whole set atomically on reload.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use serde::{Deserialize, Serialize};

use super::artifact::{ArtifactError, Column, Compiled, Encoded, Pipeline, estimate_errors_with};
use super::card::{CARD_FILE, ModelCard};
use super::catalogue::PRICE_FEATURE;
use super::explain::{Contributions, Explainer};
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
    /// The card has no interval at the monitored level.
    #[error("model card {path} has no {level} interval; retrain the model")]
    NoInterval {
        /// The card file.
        path: PathBuf,
        /// The level every model must have.
        level: f64,
    },
    /// A configured model (default or shadow) is not among the loaded ones.
    #[error("{role} model {wanted:?} not found; loaded: {available:?}")]
    UnknownModel {
        /// `default`, `three-input` or `shadow`.
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
    /// The interval at [`MONITORED_LEVEL`], stored with the row so coverage can be monitored;
    /// `None` when the price is not positive (a log-scale interval has no meaning there).
    pub interval: Option<Interval>,
    /// The error model's estimate of `|actual - price|`, USD.
    pub estimated_error: Option<f64>,
}

/// The interval level stored with every row and monitored against outcomes.
pub const MONITORED_LEVEL: f64 = 0.9;

/// A prediction interval, USD.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// Nominal coverage.
    pub level: f64,
}

/// An interval level the model was not calibrated for.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no {level} interval: {model} is calibrated for levels {supported:?}")]
pub struct UnsupportedLevel {
    /// The level asked for.
    pub level: f64,
    /// `name@version`.
    pub model: String,
    /// The levels it has.
    pub supported: Vec<f64>,
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
    /// The estimator and the error model as they are evaluated.
    compiled: Compiled,
    compiled_error_model: Compiled,
    explainer: Explainer,
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
        if card.intervals.quantile(MONITORED_LEVEL).is_none() {
            return Err(ModelLoadError::NoInterval { path: card_path, level: MONITORED_LEVEL });
        }
        let unusable = |source| ModelLoadError::Artifact { path: dir.join(&card.artifact.file), source };
        let compiled = Compiled::of(&pipeline.estimator).map_err(unusable)?;
        let compiled_error_model = Compiled::of(&pipeline.error_model).map_err(unusable)?;
        let explainer = Explainer::new(&pipeline, &compiled).map_err(unusable)?;
        Ok(Self { card, pipeline, compiled, compiled_error_model, explainer })
    }

    /// The interval of `price` at `level`, if the card has that level; `None` inside for a
    /// non-positive price.
    pub fn interval(&self, price: f64, level: f64) -> Result<Option<Interval>, UnsupportedLevel> {
        let q = self.card.intervals.quantile(level).ok_or_else(|| UnsupportedLevel {
            level,
            model: self.id(),
            supported: self.card.intervals.levels(),
        })?;
        Ok((price > 0.0).then(|| Interval { low: price * (-q).exp(), high: price * q.exp(), level }))
    }

    /// Per-feature contributions to the price of `house` (see [`crate::model::explain`]).
    pub fn contributions(&self, house: &HouseFeatures) -> Result<Contributions, ScoreError> {
        let encoded = self.pipeline.encode(house)?;
        Ok(self.explainer.contributions(&self.compiled, &self.pipeline.estimator, &encoded.row, &encoded.values)?)
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
        let predicted = self.predict(&rows);
        let mut prices = match predicted {
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
                let (price, estimated_error) =
                    prices.next().unwrap_or_else(|| Err(ArtifactError::Predict("too few predictions".into())))?;
                if !price.is_finite() {
                    return Err(ArtifactError::Predict(format!("non-finite prediction {price}")).into());
                }
                let (warnings, drift_bins) = self.monitor(&e, price);
                // The level is checked at load.
                let interval = self.interval(price, MONITORED_LEVEL).ok().flatten();
                Ok(Scored {
                    price,
                    imputed: e.imputed,
                    values: e.values,
                    warnings,
                    drift_bins,
                    interval,
                    estimated_error: estimated_error.is_finite().then_some(estimated_error),
                })
            })
            .collect()
    }

    /// Prices and estimated errors of encoded rows: [`Pipeline::predict`] and
    /// [`Pipeline::estimate_errors`], evaluated through the compiled forms.
    fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<(f64, f64)>, ArtifactError> {
        let prices: Vec<f64> = self
            .compiled
            .predict(&self.pipeline.estimator, rows)?
            .into_iter()
            .map(|raw| self.pipeline.to_price(raw))
            .collect();
        let errors = estimate_errors_with(rows, &prices, |input| {
            self.compiled_error_model.predict(&self.pipeline.error_model, input)
        })?;
        Ok(prices.into_iter().zip(errors).collect())
    }

    /// The same prices through smartcore's own `predict` (what training measured), for tests
    /// that compare the two paths.
    pub fn predict_with_smartcore(&self, houses: &[&HouseFeatures]) -> Result<Vec<(f64, f64)>, ScoreError> {
        let rows: Vec<Vec<f64>> =
            houses.iter().map(|h| self.pipeline.encode(h).map(|e| e.row)).collect::<Result<_, _>>()?;
        let prices = self.pipeline.predict(&rows)?;
        let errors = self.pipeline.estimate_errors(&rows, &prices)?;
        Ok(prices.into_iter().zip(errors).collect())
    }

    /// The same prices through the compiled forms.
    pub fn predict_compiled(&self, houses: &[&HouseFeatures]) -> Result<Vec<(f64, f64)>, ScoreError> {
        let rows: Vec<Vec<f64>> =
            houses.iter().map(|h| self.pipeline.encode(h).map(|e| e.row)).collect::<Result<_, _>>()?;
        Ok(self.predict(&rows)?)
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

/// Which model plays which part, as configured (`name` or `name@version` each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoles {
    /// Answers requests that choose no model and send optional features (`DEFAULT_MODEL`).
    pub default: String,
    /// Answers requests that choose no model and send only the three required inputs
    /// (`THREE_INPUT_MODEL`); `None`: the default model answers them too.
    pub three_input: Option<String>,
    /// Also scores every prediction, off the response path (`SHADOW_MODEL`).
    pub shadow: Option<String>,
}

impl ModelRoles {
    /// `default` answers every request that chooses no model; no shadow.
    pub fn new(default: &str) -> Self {
        Self { default: default.to_owned(), three_input: None, shadow: None }
    }

    /// With `model` for requests that send only the three required inputs.
    #[must_use]
    pub fn three_input(mut self, model: &str) -> Self {
        self.three_input = Some(model.to_owned());
        self
    }

    /// With `model` as the shadow.
    #[must_use]
    pub fn shadow(mut self, model: &str) -> Self {
        self.shadow = Some(model.to_owned());
        self
    }
}

/// One consistent set of loaded models: what a request sees from start to end.
#[derive(Debug)]
pub struct ModelSet {
    models: Vec<Arc<LoadedModel>>,
    default: Arc<LoadedModel>,
    three_input: Option<Arc<LoadedModel>>,
    shadow: Option<Arc<LoadedModel>>,
}

impl ModelSet {
    /// Loads every `<root>/<name>/<version>/card.json`. Any unusable version fails the whole load:
    /// serving a partial set would silently change which models exist.
    pub fn load(root: &Path, roles: &ModelRoles) -> Result<Self, ModelLoadError> {
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
        let default = find(&models, &roles.default).ok_or_else(|| unknown("default", &roles.default, &models))?;
        let role = |role, spec: &Option<String>| match spec {
            Some(spec) => find(&models, spec).map(Some).ok_or_else(|| unknown(role, spec, &models)),
            None => Ok(None),
        };
        let three_input = role("three-input", &roles.three_input)?;
        let shadow = role("shadow", &roles.shadow)?;
        Ok(Self { models, default, three_input, shadow })
    }

    /// The model that answers requests that choose none and send optional features.
    pub fn default_model(&self) -> &Arc<LoadedModel> {
        &self.default
    }

    /// The model that answers requests that choose none and send only the three required
    /// inputs, if configured (else the default model does).
    pub fn three_input_model(&self) -> Option<&Arc<LoadedModel>> {
        self.three_input.as_ref()
    }

    /// The model that prices `house` when the request does not choose one: the three-input
    /// model when only the three required inputs were sent, the default model otherwise.
    pub fn route(&self, house: &HouseFeatures) -> &Arc<LoadedModel> {
        match &self.three_input {
            Some(model) if house.optional.is_empty() => model,
            _ => &self.default,
        }
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
    roles: ModelRoles,
    current: ArcSwap<ModelSet>,
}

impl ModelRegistry {
    /// Loads the initial set; fails (and the server refuses to start) if any model is unusable.
    pub fn load(root: &Path, roles: ModelRoles) -> Result<Self, ModelLoadError> {
        let set = ModelSet::load(root, &roles)?;
        Ok(Self { root: root.to_owned(), roles, current: ArcSwap::from_pointee(set) })
    }

    /// The current set. Hold it for the whole request: a concurrent reload does not change it.
    pub fn snapshot(&self) -> Arc<ModelSet> {
        self.current.load_full()
    }

    /// Loads the model directory as it is now, checksums verified, without serving it yet: a
    /// broken model fails the scan and the current set is untouched.
    pub fn scan(&self) -> Result<ModelSet, ModelLoadError> {
        ModelSet::load(&self.root, &self.roles)
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
