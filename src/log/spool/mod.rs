//! The write-ahead spool: where log batches wait on local disk while PostgreSQL cannot take them.
//!
//! When a batch cannot be committed in time (database unreachable, slower than `LOG_FAILOVER_MS`,
//! restarting), the writer appends it here and fsyncs before the waiting requests are answered
//! OK, so an OK answer still means the rows are durable. The writer's drain task writes the
//! spool into PostgreSQL, oldest segment first, through the same insert as direct writes.
//!
//! The bytes are in [`format`] (versioned; readers for every version on disk), the row type in
//! [`row`] (the spool's own, so the in-memory row can change without stranding spooled rows).
//!
//! A directory of segment files `<seq>.seg` (`seq` zero-padded, increasing). A segment is deleted
//! only once all its rows are committed. A restarted server never appends to an old segment. A
//! segment that cannot be read (an unknown version, a record that does not decode) is never
//! deleted or renamed: it stays where it is, is counted in [`Backlog::unreadable_segments`]
//! (readiness and `/metrics` show it), is skipped by the drain, and is tried again at the next
//! start, so a build that can read it drains it. Nothing else stops.

pub mod format;
pub mod row;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};

use self::format::{HEADER_LEN, ReadError, read_segment};
use super::record::PredictionRecord;

/// A segment is closed once it holds this much, so the drain reads (and holds in memory) one
/// bounded file at a time, and deletes the drained part of a long outage as it goes.
const SEGMENT_TARGET_BYTES: u64 = 4 << 20;

/// Why a batch could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// `SPOOL_MAX_BYTES` would be exceeded.
    #[error("the spool is full ({bytes} of {max} bytes)")]
    Full {
        /// Bytes on disk now.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The disk refused the write or the fsync.
    #[error("cannot write the spool: {0}")]
    Io(#[from] io::Error),
    /// A row could not be encoded (a bug).
    #[error("cannot encode log rows: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A segment waiting to be drained.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its sequence number (order of writing).
    pub seq: u64,
    /// Its file.
    pub path: PathBuf,
    /// File size.
    pub bytes: u64,
    /// Batches in it.
    pub records: u64,
    /// Rows in it.
    pub rows: u64,
    /// When its first batch was spooled (the file's modification time for leftovers).
    pub first_spooled_at: DateTime<Utc>,
    /// The oldest `created_at` among its rows.
    pub oldest_row: Option<DateTime<Utc>>,
}

/// What the spool holds, for `/health/ready` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Backlog {
    /// Bytes on disk.
    pub bytes: u64,
    /// Batches.
    pub records: u64,
    /// Rows.
    pub rows: u64,
    /// Segment files.
    pub segments: u64,
    /// When the oldest undrained batch was spooled.
    pub oldest_spooled_at: Option<DateTime<Utc>>,
    /// The oldest `created_at` among undrained rows.
    pub oldest_row: Option<DateTime<Utc>>,
    /// Segments that cannot be read: kept on disk, not drained, not counted above.
    pub unreadable_segments: u64,
}

struct Active {
    file: File,
    segment: Segment,
}

struct State {
    /// The segment appends go to; `None` until the first append after a seal.
    active: Option<Active>,
    /// Closed segments, oldest first.
    sealed: VecDeque<Segment>,
    /// Segments that cannot be read, with why: left on disk for a build (or an operator) that can.
    unreadable: Vec<(PathBuf, String)>,
    next_seq: u64,
}

/// The spool directory and its bookkeeping. Methods block on disk I/O: call them from
/// `spawn_blocking`.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Set when an append was refused for lack of room; cleared when a drained segment frees
    /// space. Readiness and async admission read it.
    full: AtomicBool,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`; segments left by an earlier run are
    /// queued for the drain, and those that cannot be read are reported (and kept).
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut sealed = Vec::new();
        let mut unreadable = Vec::new();
        let mut next_seq = 1;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(seq) = segment_seq(&path) else { continue };
            next_seq = next_seq.max(seq + 1);
            let content = match read_segment(&path) {
                Ok(content) => content,
                Err(err @ ReadError::Unreadable { .. }) => {
                    tracing::error!(error = %err, "a spool segment cannot be read: kept on disk, not drained");
                    unreadable.push((path, err.to_string()));
                    continue;
                }
                Err(ReadError::Io { source, .. }) => return Err(source),
            };
            let metadata = fs::metadata(&path)?;
            let modified = metadata.modified().map_or_else(|_| Utc::now(), DateTime::<Utc>::from);
            sealed.push(Segment {
                seq,
                bytes: metadata.len(),
                records: content.batches.len() as u64,
                rows: content.batches.iter().map(|b| b.len() as u64).sum(),
                first_spooled_at: modified,
                oldest_row: content.batches.iter().flatten().map(|r| r.created_at).min(),
                path,
            });
        }
        sealed.sort_by_key(|s| s.seq);
        if !sealed.is_empty() {
            tracing::warn!(
                segments = sealed.len(),
                rows = sealed.iter().map(|s| s.rows).sum::<u64>(),
                dir = %dir.display(),
                "spooled log rows from an earlier run: draining them"
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(State { active: None, sealed: sealed.into(), unreadable, next_seq }),
            full: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent bookkeeping (updates follow the I/O).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends one batch and fsyncs it. When this returns `Ok`, the rows survive a crash.
    pub fn append(&self, rows: &[&PredictionRecord]) -> Result<(), SpoolError> {
        let record = format::encode_batch(rows)?;
        let record_len = record.len() as u64;
        let mut state = self.lock();
        if let Some(full) = state.active.take_if(|a| a.segment.bytes >= SEGMENT_TARGET_BYTES) {
            state.sealed.push_back(full.segment);
        }
        let bytes = backlog_bytes(&state);
        let new_segment = if state.active.is_none() { HEADER_LEN as u64 } else { 0 };
        if bytes + record_len + new_segment > self.max_bytes {
            self.full.store(true, Ordering::Release);
            return Err(SpoolError::Full { bytes, max: self.max_bytes });
        }
        let active = match state.active.take() {
            Some(active) => active,
            None => self.open_segment(&mut state.next_seq)?,
        };
        let active = state.active.insert(active);
        active.file.write_all(&record)?;
        active.file.sync_data()?;
        let segment = &mut active.segment;
        segment.bytes += record_len;
        segment.records += 1;
        segment.rows += rows.len() as u64;
        let oldest = rows.iter().map(|r| r.created_at).min();
        segment.oldest_row = match (segment.oldest_row, oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(())
    }

    /// Creates the next segment file with its header, both fsynced.
    fn open_segment(&self, next_seq: &mut u64) -> io::Result<Active> {
        let seq = *next_seq;
        let path = self.dir.join(format!("{seq:020}.seg"));
        let mut file = OpenOptions::new().create_new(true).append(true).open(&path)?;
        file.write_all(&format::header())?;
        file.sync_all()?;
        // The new name must survive a crash too.
        File::open(&self.dir)?.sync_all()?;
        *next_seq += 1;
        let segment = Segment {
            seq,
            path,
            bytes: HEADER_LEN as u64,
            records: 0,
            rows: 0,
            first_spooled_at: Utc::now(),
            oldest_row: None,
        };
        Ok(Active { file, segment })
    }

    /// Closes the active segment (new appends start a new one) and returns every closed segment,
    /// oldest first: what the drain may read and delete.
    pub fn seal(&self) -> Vec<Segment> {
        let mut state = self.lock();
        if let Some(active) = state.active.take() {
            if active.segment.records > 0 {
                state.sealed.push_back(active.segment);
            } else {
                let _ = fs::remove_file(&active.segment.path);
            }
        }
        state.sealed.iter().cloned().collect()
    }

    /// Deletes a drained segment.
    pub fn remove(&self, seq: u64) -> io::Result<()> {
        let mut state = self.lock();
        let found = state.sealed.iter().position(|s| s.seq == seq);
        if let Some(segment) = found.and_then(|pos| state.sealed.remove(pos)) {
            fs::remove_file(&segment.path)?;
            File::open(&self.dir)?.sync_all()?;
            self.full.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Takes a segment that turned out unreadable out of the drain's way, keeping its file.
    pub fn set_aside(&self, seq: u64, why: String) {
        let mut state = self.lock();
        let found = state.sealed.iter().position(|s| s.seq == seq);
        if let Some(segment) = found.and_then(|pos| state.sealed.remove(pos)) {
            state.unreadable.push((segment.path, why));
        }
    }

    /// Whether nothing waits for the drain (no closed segment, nothing appended since the last
    /// seal). Unreadable segments do not count: the drain cannot do anything about them.
    pub fn is_empty(&self) -> bool {
        let state = self.lock();
        state.sealed.is_empty() && state.active.as_ref().is_none_or(|a| a.segment.records == 0)
    }

    /// The unreadable segments' files and why each cannot be read.
    pub fn unreadable(&self) -> Vec<(PathBuf, String)> {
        self.lock().unreadable.clone()
    }

    /// Totals over every readable segment, and the count of unreadable ones.
    pub fn backlog(&self) -> Backlog {
        let state = self.lock();
        let segments: Vec<&Segment> =
            state.sealed.iter().chain(state.active.as_ref().map(|a| &a.segment)).filter(|s| s.records > 0).collect();
        Backlog {
            bytes: backlog_bytes(&state),
            records: segments.iter().map(|s| s.records).sum(),
            rows: segments.iter().map(|s| s.rows).sum(),
            segments: segments.len() as u64,
            oldest_spooled_at: segments.iter().map(|s| s.first_spooled_at).min(),
            oldest_row: segments.iter().filter_map(|s| s.oldest_row).min(),
            unreadable_segments: state.unreadable.len() as u64,
        }
    }

    /// Whether the spool can take more: no append was refused since space was last freed (async
    /// mode refuses work it could not spool; readiness turns 503).
    pub fn has_room(&self) -> bool {
        !self.full.load(Ordering::Acquire) && backlog_bytes(&self.lock()) < self.max_bytes
    }
}

fn backlog_bytes(state: &State) -> u64 {
    state.sealed.iter().map(|s| s.bytes).sum::<u64>() + state.active.as_ref().map_or(0, |a| a.segment.bytes)
}

/// `<seq>.seg` → `seq`.
fn segment_seq(path: &Path) -> Option<u64> {
    (path.extension()? == "seg").then_some(())?;
    path.file_stem()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::format::{MAGIC, read_segment};
    use super::*;
    use crate::log::record::sample as row;

    #[test]
    fn appended_batches_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let (a, b, c) = (row(1), row(2), row(3));
        spool.append(&[&a, &b]).unwrap();
        spool.append(&[&c]).unwrap();
        assert_eq!(spool.backlog().rows, 3);
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let segments = spool.seal();
        assert_eq!(segments.len(), 1);
        let content = read_segment(&segments[0].path).unwrap();
        assert_eq!(content.batches, vec![vec![a, b], vec![c]]);
        spool.remove(segments[0].seq).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.backlog(), Backlog::default());
    }

    #[test]
    fn a_full_spool_refuses_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let a = row(1);
        // Room for the header and one single-row record, not for a second record.
        let one = (HEADER_LEN + format::encode_batch(&[&a]).unwrap().len()) as u64;
        let spool = Spool::open(dir.path(), one + 10).unwrap();
        spool.append(&[&a]).unwrap();
        let err = spool.append(&[&a, &a]).unwrap_err();
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        assert!(!spool.has_room());
        assert_eq!(spool.backlog().rows, 1, "the refused batch left nothing behind");
    }

    #[test]
    fn an_unreadable_segment_is_kept_reported_and_skipped_and_appends_go_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let unknown = dir.path().join(format!("{:020}.seg", 7));
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&99u32.to_le_bytes());
        fs::write(&unknown, &bytes).unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).expect("an unreadable segment does not stop the spool");
        assert!(spool.is_empty(), "nothing the drain could do");
        assert_eq!(spool.backlog().unreadable_segments, 1);
        assert!(spool.unreadable()[0].1.contains("spool format 99"));
        spool.append(&[&row(1)]).unwrap();
        let segments = spool.seal();
        assert_eq!(segments.len(), 1);
        assert!(segments[0].seq > 7, "a new segment never takes an unreadable one's name");
        assert_eq!(fs::read(&unknown).unwrap(), bytes, "the unreadable segment is untouched");
        spool.set_aside(segments[0].seq, "test".into());
        assert!(spool.is_empty());
        assert_eq!(spool.backlog().unreadable_segments, 2);
        assert!(segments[0].path.exists(), "set aside, not deleted");
    }
}
