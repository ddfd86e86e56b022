//! The prediction log: the row type and its SQL, and the writer that gets every row into
//! PostgreSQL (or, while PostgreSQL cannot take it, into the local spool) before the request is
//! answered. [`writer`] is the handle; each of its jobs has a file of its own.

pub mod committed;
pub mod connections;
pub mod drain;
pub mod events;
pub mod failover;
pub mod group_commit;
pub mod partitions;
pub mod record;
pub mod shadow;
pub mod spool;
pub mod store;
pub mod writer;

pub use record::{PredictionRecord, PredictionStatus, without_nul, without_nul_str};
pub use store::{Cursor, PredictionFilter};
pub use writer::{LogError, LogStatus, LogWriter};
