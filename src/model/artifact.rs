//! The serialized estimator: a postcard-encoded, versioned envelope around a smartcore model.
//!
//! postcard is a plain serde data format: decoding cannot execute code (unlike pickle), and the
//! checksum in the card is verified *before* decoding, so a tampered or truncated file is refused.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::linear_regression::LinearRegression;

/// Bumped whenever [`Estimator`]'s encoding changes, so old artifacts fail loudly instead of
/// decoding into garbage.
pub const ARTIFACT_FORMAT: u32 = 1;

/// smartcore's ordinary least squares on dense f64 rows.
pub type LinearModel = LinearRegression<f64, f64, DenseMatrix<f64>, Vec<f64>>;

/// A fitted estimator. New model families are added as variants.
#[derive(Debug, Serialize, Deserialize)]
pub enum Estimator {
    /// Ordinary least squares.
    Linear(LinearModel),
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: u32,
    estimator: Estimator,
}

/// Why an artifact could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The bytes do not hash to what the card says.
    #[error("checksum mismatch: the card expects sha256 {expected}, the file has {actual}")]
    ChecksumMismatch {
        /// From the card.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// The bytes are not a valid envelope.
    #[error("cannot decode the artifact")]
    Decode(#[source] postcard::Error),
    /// Written by an incompatible version of this program.
    #[error("artifact format {found} is not supported (this build reads format {ARTIFACT_FORMAT}); retrain the model")]
    UnsupportedFormat {
        /// Format number found in the file.
        found: u32,
    },
    /// smartcore refused to predict.
    #[error("the estimator failed to predict: {0}")]
    Predict(String),
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Estimator {
    /// Encodes the estimator; the same fitted model always gives the same bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        #[derive(Serialize)]
        struct EnvelopeRef<'a> {
            format: u32,
            estimator: &'a Estimator,
        }
        postcard::to_allocvec(&EnvelopeRef { format: ARTIFACT_FORMAT, estimator: self })
    }

    /// Verifies `bytes` against `expected_sha256`, then decodes them.
    pub fn from_verified_bytes(bytes: &[u8], expected_sha256: &str) -> Result<Self, ArtifactError> {
        let actual = sha256_hex(bytes);
        if !actual.eq_ignore_ascii_case(expected_sha256) {
            return Err(ArtifactError::ChecksumMismatch { expected: expected_sha256.to_owned(), actual });
        }
        let envelope: Envelope = postcard::from_bytes(bytes).map_err(ArtifactError::Decode)?;
        if envelope.format != ARTIFACT_FORMAT {
            return Err(ArtifactError::UnsupportedFormat { found: envelope.format });
        }
        Ok(envelope.estimator)
    }

    /// Predicts one value per row. Rows must have the model's feature count.
    pub fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, ArtifactError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ncols = rows[0].len();
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        let x = DenseMatrix::new(rows.len(), ncols, flat, false).map_err(|e| ArtifactError::Predict(e.to_string()))?;
        match self {
            Estimator::Linear(model) => model.predict(&x).map_err(|e| ArtifactError::Predict(e.to_string())),
        }
    }
}
