//! The request log: row type, SQL, and the batching writer.

pub mod record;
pub mod shadow;
pub mod spool;
pub mod store;
pub mod writer;

pub use record::{LogRecord, PredictionStatus, without_nul, without_nul_str};
pub use store::{Cursor, HistoryFilter};
pub use writer::{LogError, LogWriter};
