//! The write-ahead spool: where log batches wait on local disk while PostgreSQL cannot take them.
//!
//! When a batch cannot be committed in time (database unreachable, slower than `LOG_FAILOVER_MS`,
//! restarting), the writer appends it here and fsyncs before the waiting requests are answered
//! OK, so an OK answer still means the rows are durable. The writer's replay task drains the
//! spool into PostgreSQL, oldest segment first, through the same insert as direct writes.
//!
//! # Format (version 1)
//!
//! A directory of segment files `<seq>.seg` (`seq` zero-padded, increasing). Each file is:
//!
//! ```text
//! header:  b"HPSPOOL\n"  u32 LE format version
//! record:  u32 LE payload length  u32 LE CRC32C(payload)  payload (JSON array of log rows)
//! record:  ...
//! ```
//!
//! One record is one batch. Records are only ever appended, each followed by `fdatasync`; a
//! segment is deleted only once all its rows are committed. A crash in the middle of an append
//! leaves a torn last record: its length or checksum does not match, it is skipped with a
//! warning, and it was never acknowledged (the fsync had not returned). A restarted server never
//! appends to an old segment, so only the last record of a segment can be torn.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};

use super::record::LogRecord;

/// First bytes of every segment.
const MAGIC: &[u8; 8] = b"HPSPOOL\n";
/// The format version written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Magic + version.
const HEADER_LEN: usize = 12;
/// Length + checksum in front of each payload.
const RECORD_OVERHEAD: usize = 8;
/// A segment is closed once it holds this much, so replay reads (and holds in memory) one
/// bounded file at a time, and deletes the replayed part of a long outage as it goes.
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

/// A segment waiting to be replayed.
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
    /// When the oldest unreplayed batch was spooled.
    pub oldest_spooled_at: Option<DateTime<Utc>>,
    /// The oldest `created_at` among unreplayed rows.
    pub oldest_row: Option<DateTime<Utc>>,
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
    next_seq: u64,
}

/// The spool directory and its bookkeeping. Methods block on disk I/O: call them from
/// `spawn_blocking`.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Set when an append was refused for lack of room; cleared when a replayed segment frees
    /// space. Readiness and async admission read it.
    full: AtomicBool,
}

/// A segment's content: its batches, and how many bytes at its end were unreadable.
#[derive(Debug, Default)]
pub struct SegmentContent {
    /// Batches in order.
    pub batches: Vec<Vec<LogRecord>>,
    /// Bytes after the last valid record (a torn write), 0 normally.
    pub torn_bytes: usize,
}

impl Spool {
    /// Opens (creating it if needed) the spool in `dir`; segments left by an earlier run are
    /// queued for replay.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut sealed = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(seq) = segment_seq(&path) else { continue };
            let content = read_segment(&path)?;
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
        let next_seq = sealed.last().map_or(1, |s| s.seq + 1);
        if !sealed.is_empty() {
            tracing::warn!(
                segments = sealed.len(),
                rows = sealed.iter().map(|s| s.rows).sum::<u64>(),
                dir = %dir.display(),
                "spooled log rows from an earlier run: replaying them"
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            state: Mutex::new(State { active: None, sealed: sealed.into(), next_seq }),
            full: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent bookkeeping (updates follow the I/O).
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends one batch and fsyncs it. When this returns `Ok`, the rows survive a crash.
    pub fn append(&self, rows: &[&LogRecord]) -> Result<(), SpoolError> {
        let payload = serde_json::to_vec(rows)?;
        let record_len = (RECORD_OVERHEAD + payload.len()) as u64;
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
        let mut record = Vec::with_capacity(RECORD_OVERHEAD + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
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
        file.write_all(MAGIC)?;
        file.write_all(&FORMAT_VERSION.to_le_bytes())?;
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
    /// oldest first: what the replay task may read and delete.
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

    /// Deletes a replayed segment.
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

    /// Whether nothing waits for replay (no closed segment, nothing appended since the last seal).
    pub fn is_empty(&self) -> bool {
        let state = self.lock();
        state.sealed.is_empty() && state.active.as_ref().is_none_or(|a| a.segment.records == 0)
    }

    /// Totals over every segment.
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

/// The little-endian u32 at `at`, if the data reaches that far.
fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// `<seq>.seg` → `seq`.
fn segment_seq(path: &Path) -> Option<u64> {
    (path.extension()? == "seg").then_some(())?;
    path.file_stem()?.to_str()?.parse().ok()
}

/// Reads a segment's batches, stopping at the first record whose length or checksum does not
/// match (a torn write: logged, and reported in [`SegmentContent::torn_bytes`]).
pub fn read_segment(path: &Path) -> io::Result<SegmentContent> {
    let data = fs::read(path)?;
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        // A crash right after creating the file, before its header was synced.
        if data.len() < HEADER_LEN && MAGIC.starts_with(&data[..data.len().min(8)]) {
            tracing::warn!(path = %path.display(), bytes = data.len(), "empty spool segment with a torn header");
            return Ok(SegmentContent { batches: Vec::new(), torn_bytes: data.len() });
        }
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} is not a spool segment", path.display())));
    }
    let version = read_u32(&data, 8).unwrap_or_default();
    if version != FORMAT_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} has spool format {version}; this build reads {FORMAT_VERSION}", path.display()),
        ));
    }
    let mut content = SegmentContent::default();
    let mut at = HEADER_LEN;
    while at < data.len() {
        let torn = |at: usize, why: &str| {
            tracing::warn!(path = %path.display(), offset = at, bytes = data.len() - at, why,
                           "torn record at the end of a spool segment: skipped (it was never acknowledged)");
            data.len() - at
        };
        let (Some(len), Some(crc)) = (read_u32(&data, at), read_u32(&data, at + 4)) else {
            content.torn_bytes = torn(at, "short header");
            break;
        };
        let len = len as usize;
        let start = at + RECORD_OVERHEAD;
        let Some(payload) = data.get(start..start + len) else {
            content.torn_bytes = torn(at, "short payload");
            break;
        };
        if crc32c::crc32c(payload) != crc {
            content.torn_bytes = torn(at, "checksum mismatch");
            break;
        }
        let batch: Vec<LogRecord> = serde_json::from_slice(payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        content.batches.push(batch);
        at = start + len;
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::PredictionStatus;

    fn row(n: i32) -> LogRecord {
        LogRecord {
            id: uuid::Uuid::now_v7(),
            request_id: format!("r{n}"),
            item_index: Some(n),
            created_at: Utc::now(),
            route: "graphql".into(),
            operation: None,
            client: None,
            status: PredictionStatus::Ok,
            error_code: None,
            error_field: None,
            error_message: None,
            square_feet: Some(1500.0),
            bedrooms: Some(3),
            bathrooms: Some(2.0),
            raw_input: serde_json::json!({ "squareFeet": 1500 }),
            price: Some(180_000.0),
            model_name: Some("baseline-linear".into()),
            model_version: Some("1.0.0".into()),
            latency_us: 12,
            imputed_features: vec!["lotArea".into()],
            features: Some(serde_json::json!({ "squareFeet": 1500 })),
            shadow_price: None,
            shadow_model_name: None,
            shadow_model_version: None,
            warnings: serde_json::json!([]),
            house: None,
            drift_bins: vec![("squareFeet", 4), ("bedrooms", 2)],
        }
    }

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
        assert_eq!(content.torn_bytes, 0);
        spool.remove(segments[0].seq).unwrap();
        assert!(spool.is_empty());
        assert_eq!(spool.backlog(), Backlog::default());
    }

    #[test]
    fn a_torn_last_record_is_skipped_and_the_records_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let (a, b) = (row(1), row(2));
        spool.append(&[&a]).unwrap();
        spool.append(&[&b]).unwrap();
        let path = spool.seal()[0].path.clone();
        // Cut the second record in half, as a crash mid-write would.
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 20).unwrap();
        let content = read_segment(&path).unwrap();
        assert_eq!(content.batches, vec![vec![a.clone()]]);
        assert!(content.torn_bytes > 0);
        // A flipped byte in the last payload fails its checksum the same way.
        spool.append(&[&b]).unwrap();
        let path = spool.seal()[1].path.clone();
        let mut data = fs::read(&path).unwrap();
        let last = data.len() - 3;
        data[last] ^= 0xff;
        fs::write(&path, data).unwrap();
        assert!(read_segment(&path).unwrap().batches.is_empty());
    }

    #[test]
    fn a_full_spool_refuses_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let a = row(1);
        // Room for the header and one single-row record, not for a second record.
        let one = (HEADER_LEN + RECORD_OVERHEAD + serde_json::to_vec(&[&a]).unwrap().len()) as u64;
        let spool = Spool::open(dir.path(), one + 10).unwrap();
        spool.append(&[&a]).unwrap();
        let err = spool.append(&[&a, &a]).unwrap_err();
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        assert!(!spool.has_room());
        assert_eq!(spool.backlog().rows, 1, "the refused batch left nothing behind");
    }

    #[test]
    fn other_formats_are_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.seg");
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&99u32.to_le_bytes());
        fs::write(&path, header).unwrap();
        assert!(read_segment(&path).unwrap_err().to_string().contains("spool format 99"));
    }
}
