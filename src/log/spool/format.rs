//! The bytes of a spool segment: header, framed records, and the reader for every format
//! version a segment on disk may have.
//!
//! ```text
//! header:  b"HPSPOOL\n"  u32 LE format version
//! record:  u32 LE payload length  u32 LE CRC32C(payload)  payload
//! record:  ...
//! ```
//!
//! Version 1: a payload is one batch, the JSON array of its rows as [`SpoolRow`] objects. One
//! record is one batch. Records are only ever appended, each followed by `fdatasync`, so only the
//! last record of a segment can be torn by a crash (its length or checksum does not match): it is
//! skipped with a warning, and it was never acknowledged (the fsync had not returned).
//!
//! The committed fixtures in `tests/fixtures/spool/` are segments of each version; a test drains
//! them into PostgreSQL, so a change that cannot read them fails before it ships.

use std::io;
use std::path::Path;

use super::row::SpoolRow;
use crate::log::record::PredictionRecord;

/// First bytes of every segment.
pub const MAGIC: &[u8; 8] = b"HPSPOOL\n";
/// The format version this build writes. Readers exist for every version up to it.
pub const FORMAT_VERSION: u32 = 1;
/// Magic + version.
pub const HEADER_LEN: usize = 12;
/// Length + checksum in front of each payload.
pub const RECORD_OVERHEAD: usize = 8;

/// Why a segment cannot be read. The segment stays on disk either way.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The segment.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a segment of any version this build reads, or a record that passed its
    /// checksum does not decode (written by a build with a format bug or a newer version).
    #[error("{path} is unreadable: {why}")]
    Unreadable {
        /// The segment.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// A segment's content: its batches, and how many bytes at its end were unreadable.
#[derive(Debug, Default)]
pub struct SegmentContent {
    /// Batches in order.
    pub batches: Vec<Vec<PredictionRecord>>,
    /// Bytes after the last valid record (a torn write), 0 normally.
    pub torn_bytes: usize,
}

/// The header of a new segment.
pub fn header() -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

/// One framed record holding `rows` as one batch.
pub fn encode_batch(rows: &[&PredictionRecord]) -> serde_json::Result<Vec<u8>> {
    let spooled: Vec<SpoolRow<'_>> = rows.iter().map(|r| SpoolRow::of(r)).collect();
    let payload = serde_json::to_vec(&spooled)?;
    let mut record = Vec::with_capacity(RECORD_OVERHEAD + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    record.extend_from_slice(&payload);
    Ok(record)
}

/// The little-endian u32 at `at`, if the data reaches that far.
fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Reads a segment's batches, stopping at the first record whose length or checksum does not
/// match (a torn write: logged, and reported in [`SegmentContent::torn_bytes`]).
pub fn read_segment(path: &Path) -> Result<SegmentContent, ReadError> {
    let data = std::fs::read(path).map_err(|source| ReadError::Io { path: path.display().to_string(), source })?;
    let unreadable = |why: String| ReadError::Unreadable { path: path.display().to_string(), why };
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        // A crash right after creating the file, before its header was synced.
        if data.len() < HEADER_LEN && MAGIC.starts_with(&data[..data.len().min(8)]) {
            tracing::warn!(path = %path.display(), bytes = data.len(), "empty spool segment with a torn header");
            return Ok(SegmentContent { batches: Vec::new(), torn_bytes: data.len() });
        }
        return Err(unreadable("not a spool segment".into()));
    }
    let version = read_u32(&data, 8).unwrap_or_default();
    let decode: fn(&[u8]) -> serde_json::Result<Vec<PredictionRecord>> = match version {
        1 => decode_v1,
        other => return Err(unreadable(format!("spool format {other}; this build reads 1 to {FORMAT_VERSION}"))),
    };
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
        let start = at + RECORD_OVERHEAD;
        let Some(payload) = data.get(start..start + len as usize) else {
            content.torn_bytes = torn(at, "short payload");
            break;
        };
        if crc32c::crc32c(payload) != crc {
            content.torn_bytes = torn(at, "checksum mismatch");
            break;
        }
        let batch = decode(payload).map_err(|err| unreadable(format!("record at offset {at}: {err}")))?;
        content.batches.push(batch);
        at = start + payload.len();
    }
    Ok(content)
}

/// Version 1: a JSON array of [`SpoolRow`] objects.
fn decode_v1(payload: &[u8]) -> serde_json::Result<Vec<PredictionRecord>> {
    let rows: Vec<SpoolRow<'static>> = serde_json::from_slice(payload)?;
    Ok(rows.into_iter().map(SpoolRow::into_record).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::sample as row;

    fn segment(dir: &Path, records: &[Vec<u8>]) -> std::path::PathBuf {
        let path = dir.join("00000000000000000001.seg");
        let mut bytes = header().to_vec();
        for record in records {
            bytes.extend_from_slice(record);
        }
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn batches_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (row(1), row(2), row(3));
        let path = segment(dir.path(), &[encode_batch(&[&a, &b]).unwrap(), encode_batch(&[&c]).unwrap()]);
        let content = read_segment(&path).unwrap();
        assert_eq!(content.batches, vec![vec![a, b], vec![c]]);
        assert_eq!(content.torn_bytes, 0);
    }

    #[test]
    fn a_torn_last_record_is_skipped_and_the_records_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (row(1), row(2));
        let second = encode_batch(&[&b]).unwrap();
        // Cut the second record in half, as a crash mid-write would.
        let path = segment(dir.path(), &[encode_batch(&[&a]).unwrap(), second[..second.len() - 20].to_vec()]);
        let content = read_segment(&path).unwrap();
        assert_eq!(content.batches, vec![vec![a.clone()]]);
        assert!(content.torn_bytes > 0);
        // A flipped byte in the last payload fails its checksum the same way.
        let mut flipped = second.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0xff;
        let path = segment(dir.path(), &[encode_batch(&[&a]).unwrap(), flipped]);
        assert_eq!(read_segment(&path).unwrap().batches, vec![vec![a]]);
    }

    #[test]
    fn other_formats_are_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000001.seg");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&99u32.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let err = read_segment(&path).unwrap_err();
        assert!(matches!(err, ReadError::Unreadable { .. }) && err.to_string().contains("spool format 99"), "{err}");
    }

    #[test]
    fn a_record_that_passes_its_checksum_but_does_not_decode_makes_the_segment_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let payload = br#"[{"not": "a row"}]"#;
        let mut record = (payload.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        record.extend_from_slice(payload);
        let path = segment(dir.path(), &[record]);
        assert!(matches!(read_segment(&path), Err(ReadError::Unreadable { .. })));
    }
}
