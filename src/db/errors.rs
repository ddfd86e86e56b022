//! The one classifier of database errors: what a failed statement says about the database, the
//! connection and the data. The API's error mapping (`error.rs`) and the log writer's retry and
//! failover decisions both read it, so they cannot disagree about what "unavailable" means.

/// What kind of failure a `sqlx::Error` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFault {
    /// The connection is gone: I/O or TLS error, or the server ended the session (SQLSTATE class
    /// 08 connection exception, 57P01-57P03 admin shutdown / crash shutdown / cannot connect now).
    /// The database may well answer on a new connection.
    ConnectionLost,
    /// The connection's protocol state is broken (a message the client did not expect). The
    /// statement may succeed on another connection; for a client it is a server fault.
    ProtocolBroken,
    /// No connection could be had, or the server refuses work for now: pool timed out or closed,
    /// SQLSTATE class 53 (insufficient resources) or another class 57 (operator intervention,
    /// e.g. 57014 statement cancelled).
    Unavailable,
    /// The rows, not the database, are at fault: SQLSTATE class 22 (data exception) or 23
    /// (integrity constraint). Retrying the same rows fails again.
    Data,
    /// Anything else: a bug or a schema mismatch.
    Other,
}

impl DbFault {
    /// Classifies `err`.
    pub fn of(err: &sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => Self::ConnectionLost,
            sqlx::Error::Protocol(_) => Self::ProtocolBroken,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Self::Unavailable,
            sqlx::Error::Database(db) => match db.code() {
                Some(code) if code.starts_with("08") || code.starts_with("57P") => Self::ConnectionLost,
                Some(code) if code.starts_with("53") || code.starts_with("57") => Self::Unavailable,
                Some(code) if code.starts_with("22") || code.starts_with("23") => Self::Data,
                _ => Self::Other,
            },
            _ => Self::Other,
        }
    }

    /// The database cannot serve now (clients get `SERVICE_UNAVAILABLE` and may retry).
    pub fn is_unavailable(self) -> bool {
        matches!(self, Self::ConnectionLost | Self::Unavailable)
    }

    /// The connection, not the statement, failed: worth running the statement again on another.
    pub fn is_dead_connection(self) -> bool {
        matches!(self, Self::ConnectionLost | Self::ProtocolBroken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_level_errors_are_lost_connections() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(DbFault::of(&io), DbFault::ConnectionLost);
        assert!(DbFault::of(&io).is_unavailable() && DbFault::of(&io).is_dead_connection());
    }

    #[test]
    fn a_broken_protocol_is_retried_elsewhere_but_is_not_unavailability() {
        let fault = DbFault::of(&sqlx::Error::Protocol("unexpected message".into()));
        assert!(fault.is_dead_connection());
        assert!(!fault.is_unavailable());
    }

    #[test]
    fn pool_exhaustion_is_unavailability_of_a_live_connection() {
        for err in [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed] {
            let fault = DbFault::of(&err);
            assert_eq!(fault, DbFault::Unavailable);
            assert!(!fault.is_dead_connection());
        }
    }

    #[test]
    fn other_errors_are_neither() {
        let fault = DbFault::of(&sqlx::Error::RowNotFound);
        assert_eq!(fault, DbFault::Other);
        assert!(!fault.is_unavailable() && !fault.is_dead_connection());
    }
}
