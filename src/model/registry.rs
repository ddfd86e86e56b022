//! Loading model versions from `models/<name>/<version>/` and choosing the one that answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::artifact::{ArtifactError, Estimator};
use super::card::{CARD_FILE, ModelCard};
use super::features::{Feature, HouseFeatures};

/// Why the model directory could not be loaded. The server refuses to start on any of these.
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
    /// The card's features are not the ones this build can feed.
    #[error("model card {path} lists features {found:?}, this build provides {expected:?}")]
    FeatureMismatch {
        /// The card file.
        path: PathBuf,
        /// From the card.
        found: Vec<String>,
        /// What [`HouseFeatures::to_row`] produces.
        expected: Vec<String>,
    },
    /// No `card.json` anywhere under the model directory.
    #[error("no model found under {0} (expected <name>/<version>/card.json); run `house-price-api train`")]
    Empty(PathBuf),
    /// The configured default model is not among the loaded ones.
    #[error("default model {wanted:?} not found; loaded: {available:?}")]
    UnknownDefault {
        /// The configured `name` or `name@version`.
        wanted: String,
        /// `name@version` of every loaded model.
        available: Vec<String>,
    },
}

/// A verified, ready-to-predict model version.
#[derive(Debug)]
pub struct LoadedModel {
    /// Its card, as read from disk.
    pub card: ModelCard,
    estimator: Estimator,
}

impl LoadedModel {
    /// Loads `dir/card.json` and the artifact it names, verifying the artifact's sha256 first.
    pub fn load(dir: &Path) -> Result<Self, ModelLoadError> {
        let card_path = dir.join(CARD_FILE);
        let card_bytes = read(&card_path)?;
        let card: ModelCard = serde_json::from_slice(&card_bytes)
            .map_err(|source| ModelLoadError::Card { path: card_path.clone(), source })?;
        let expected: Vec<String> = Feature::ALL.iter().map(|f| f.graphql_name().to_owned()).collect();
        let found: Vec<String> = card.features.iter().map(|f| f.name.clone()).collect();
        if found != expected {
            return Err(ModelLoadError::FeatureMismatch { path: card_path, found, expected });
        }
        let artifact_path = dir.join(&card.artifact.file);
        let bytes = read(&artifact_path)?;
        let estimator = Estimator::from_verified_bytes(&bytes, &card.artifact.sha256)
            .map_err(|source| ModelLoadError::Artifact { path: artifact_path, source })?;
        Ok(Self { card, estimator })
    }

    /// Wraps a freshly trained estimator (used by `train` to evaluate what it is about to write).
    pub fn from_parts(card: ModelCard, estimator: Estimator) -> Self {
        Self { card, estimator }
    }

    /// `name@version`.
    pub fn id(&self) -> String {
        self.card.id()
    }

    /// Prices each house. Inputs must already be validated.
    pub fn predict(&self, houses: &[HouseFeatures]) -> Result<Vec<f64>, ArtifactError> {
        let rows: Vec<Vec<f64>> = houses.iter().map(HouseFeatures::to_row).collect();
        self.estimator.predict(&rows)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ModelLoadError> {
    std::fs::read(path).map_err(|source| ModelLoadError::Read { path: path.to_owned(), source })
}

/// All model versions found under the model directory, and the default one.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    models: Vec<Arc<LoadedModel>>,
    default: Arc<LoadedModel>,
}

impl ModelRegistry {
    /// Loads every `<root>/<name>/<version>/card.json`. Any unusable version fails the whole load:
    /// serving a partial set would silently change which models exist.
    ///
    /// `default_model` is `name` (highest version wins) or `name@version`.
    pub fn load(root: &Path, default_model: &str) -> Result<Self, ModelLoadError> {
        let mut models = Vec::new();
        for name_dir in sorted_subdirs(root)? {
            for version_dir in sorted_subdirs(&name_dir)? {
                if version_dir.join(CARD_FILE).is_file() {
                    models.push(Arc::new(LoadedModel::load(&version_dir)?));
                }
            }
        }
        if models.is_empty() {
            return Err(ModelLoadError::Empty(root.to_owned()));
        }
        Self::from_models(models, default_model)
    }

    /// Builds a registry from already loaded models.
    pub fn from_models(models: Vec<Arc<LoadedModel>>, default_model: &str) -> Result<Self, ModelLoadError> {
        let default = find(&models, default_model).ok_or_else(|| ModelLoadError::UnknownDefault {
            wanted: default_model.to_owned(),
            available: models.iter().map(|m| m.id()).collect(),
        })?;
        Ok(Self { models, default })
    }

    /// The model that answers when the client does not choose one.
    pub fn default_model(&self) -> &Arc<LoadedModel> {
        &self.default
    }

    /// Every loaded model version.
    pub fn models(&self) -> &[Arc<LoadedModel>] {
        &self.models
    }
}

/// Finds `name@version`, or the highest semantic version of `name`.
fn find(models: &[Arc<LoadedModel>], spec: &str) -> Option<Arc<LoadedModel>> {
    let (name, version) = match spec.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
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
