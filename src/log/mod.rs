//! The request log: row type, SQL, and the batching writer.

pub mod record;
pub mod store;
pub mod writer;

pub use record::{LogRecord, PredictionStatus};
pub use store::{Cursor, HistoryFilter};
pub use writer::{LogError, LogWriter};
