//! The write-ahead log: an export request is acknowledged only after its bytes are in the log and fsynced.
//!
//! - **Layout**: a directory of segments `<seq as 16 hex digits>.wal`; each holds records
//!   `len u32 LE ‖ crc32 u32 LE ‖ payload`, the payload being the export request as OTLP protobuf
//!   (`ExportTraceServiceRequest`, as received). A segment is closed at [`SEGMENT_BYTES`].
//! - **Group commit**: one writer thread takes every append waiting in its bounded queue, writes them with one
//!   `write` and one `fdatasync`, then acknowledges them all (`skein_wal_fsync_seconds` per commit).
//! - **Budget**: appends beyond `max_bytes` of segments on disk are refused ([`WalError::Full`]); the receivers
//!   answer `RESOURCE_EXHAUSTED` / 429 and count it.
//! - **Deletion**: every record holds a reference on its segment ([`SegmentRefs`]); the pipeline moves it to the
//!   traces the spans join and drops it when those traces are written or sampled out. A closed segment is deleted
//!   once it and every older segment have no references.
//! - **Replay**: [`Wal::open`] returns every record of the existing segments, oldest first; a torn or corrupt
//!   record ends its segment (it was never acknowledged) and is counted in `skein_wal_corrupt_records_total`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// A segment is closed and a new one started beyond this size, bytes.
pub const SEGMENT_BYTES: u64 = 32 * 1024 * 1024;
/// Appends waiting for the writer thread.
pub const QUEUE_RECORDS: usize = 1024;
/// Largest record payload, bytes (an export request is at most 64 MiB decoded).
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;
const HEADER_BYTES: usize = 8;

/// Write-ahead-log errors.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The segments on disk already use the whole budget.
    #[error("write-ahead log full ({used} of {max} bytes): storage is behind")]
    Full {
        /// Bytes on disk.
        used: u64,
        /// The budget.
        max: u64,
    },
    /// Writing or syncing failed; nothing of the record is acknowledged.
    #[error("write-ahead log I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The writer thread has stopped.
    #[error("write-ahead log closed")]
    Closed,
}

/// References per segment (see the module documentation). Cheap to clone.
#[derive(Clone, Default)]
pub struct SegmentRefs(Arc<Mutex<BTreeMap<u64, i64>>>);

impl SegmentRefs {
    /// Adds a reference on `seq`.
    pub fn acquire(&self, seq: u64) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(seq).or_default() += 1;
        }
    }

    /// Drops a reference on `seq`.
    pub fn release(&self, seq: u64) {
        if let Ok(mut m) = self.0.lock()
            && let Some(n) = m.get_mut(&seq)
        {
            *n -= 1;
            if *n <= 0 {
                m.remove(&seq);
            }
        }
    }

    /// The oldest segment still referenced.
    pub fn oldest(&self) -> Option<u64> {
        self.0.lock().ok().and_then(|m| m.keys().next().copied())
    }
}

/// One replayed record.
#[derive(Debug)]
pub struct Record {
    /// Its segment.
    pub seq: u64,
    /// The payload.
    pub payload: Vec<u8>,
}

struct Append {
    payload: bytes::Bytes,
    done: oneshot::Sender<Result<u64, WalError>>,
}

enum Msg {
    Append(Append),
    /// Delete released segments now.
    Collect(oneshot::Sender<()>),
    /// Close the active segment (when not empty), then delete released segments.
    Rotate(oneshot::Sender<()>),
}

/// Handle on the log. Cheap to clone.
#[derive(Clone)]
pub struct Wal {
    tx: mpsc::Sender<Msg>,
    refs: SegmentRefs,
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.wal"))
}

fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if let Some(hex) = name.strip_suffix(".wal")
            && let Ok(seq) = u64::from_str_radix(hex, 16)
        {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Parses one segment's records; stops at the first torn or corrupt record (returns how many were skipped: 0 or 1).
pub fn parse_segment(seq: u64, bytes: &[u8]) -> (Vec<Record>, u64) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + HEADER_BYTES) else { return (out, 1) };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len) else { return (out, 1) };
        if len > MAX_RECORD_BYTES || crc32fast::hash(payload) != crc {
            return (out, 1);
        }
        out.push(Record { seq, payload: payload.to_vec() });
        at += HEADER_BYTES + len;
    }
    (out, 0)
}

struct Writer {
    dir: PathBuf,
    max_bytes: u64,
    file: File,
    seq: u64,
    size: u64,
    /// Closed segments and their sizes.
    closed: BTreeMap<u64, u64>,
    refs: SegmentRefs,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn used(&self) -> u64 {
        self.size + self.closed.values().sum::<u64>()
    }

    fn gauges(&self) {
        self.metrics.wal_bytes.set(i64::try_from(self.used()).unwrap_or(i64::MAX));
        self.metrics.wal_segments.set(self.closed.len() as i64 + 1);
    }

    /// Deletes closed segments older than every referenced one.
    fn collect(&mut self) {
        let keep_from = self.refs.oldest().unwrap_or(self.seq).min(self.seq);
        let dead: Vec<u64> = self.closed.range(..keep_from).map(|(s, _)| *s).collect();
        for seq in dead {
            match std::fs::remove_file(segment_path(&self.dir, seq)) {
                Ok(()) => {
                    self.closed.remove(&seq);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.closed.remove(&seq);
                }
                Err(e) => tracing::warn!(seq, error = %e, "cannot delete a written write-ahead-log segment"),
            }
        }
        self.gauges();
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let next = self.seq + 1;
        let file = OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, next))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.closed.insert(self.seq, self.size);
        self.file = file;
        self.seq = next;
        self.size = 0;
        Ok(())
    }

    fn commit(&mut self, batch: Vec<Append>) {
        self.collect();
        if self.size >= SEGMENT_BYTES
            && let Err(e) = self.rotate()
        {
            tracing::error!(error = %e, "cannot start a new write-ahead-log segment");
        }
        let mut buf = Vec::new();
        let mut accepted = Vec::with_capacity(batch.len());
        let mut used = self.used();
        for a in batch {
            let len = (a.payload.len() + HEADER_BYTES) as u64;
            if used + len > self.max_bytes {
                let _ = a.done.send(Err(WalError::Full { used, max: self.max_bytes }));
                continue;
            }
            used += len;
            buf.extend_from_slice(&(a.payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(&a.payload).to_le_bytes());
            buf.extend_from_slice(&a.payload);
            accepted.push(a.done);
        }
        if accepted.is_empty() {
            return;
        }
        let started = Instant::now();
        let result = self.file.write_all(&buf).and_then(|()| self.file.sync_data());
        self.metrics.wal_fsync_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.size += buf.len() as u64;
                self.metrics.wal_records.inc_by(accepted.len() as u64);
                for done in accepted {
                    self.refs.acquire(self.seq);
                    if done.send(Ok(self.seq)).is_err() {
                        // The request went away after its bytes were logged; they will still be processed at
                        // replay, so nothing is lost; the reference keeps the segment until then.
                        tracing::debug!("write-ahead-log append completed for a cancelled request");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write-ahead-log write failed; requests refused");
                // Start a fresh segment so a partial write cannot sit in front of later records.
                let _ = self.rotate();
                for done in accepted {
                    let _ = done.send(Err(WalError::Io(std::io::Error::new(e.kind(), e.to_string()))));
                }
            }
        }
        self.gauges();
    }
}

impl Wal {
    /// Opens (creating) the log in `dir`, returning the handle and every record already there, oldest first.
    /// Each returned record holds a reference on its segment, to be released like a new append's.
    ///
    /// # Errors
    /// I/O errors creating the directory or reading segments.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Result<(Wal, Vec<Record>), WalError> {
        std::fs::create_dir_all(dir)?;
        let refs = SegmentRefs::default();
        let mut records = Vec::new();
        let mut closed = BTreeMap::new();
        let segments = list_segments(dir)?;
        for (seq, path) in &segments {
            let bytes = std::fs::read(path)?;
            let (recs, corrupt) = parse_segment(*seq, &bytes);
            metrics.wal_corrupt_records.inc_by(corrupt);
            for r in &recs {
                refs.acquire(r.seq);
            }
            records.extend(recs);
            closed.insert(*seq, bytes.len() as u64);
        }
        let seq = segments.last().map_or(0, |(s, _)| s + 1);
        let file = OpenOptions::new().create(true).append(true).open(segment_path(dir, seq))?;
        let mut writer =
            Writer { dir: dir.to_path_buf(), max_bytes, file, seq, size: 0, closed, refs: refs.clone(), metrics };
        writer.gauges();
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE_RECORDS);
        std::thread::Builder::new().name("skein-wal".into()).spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut batch = Vec::new();
                let mut collects = Vec::new();
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    match msg {
                        Msg::Append(a) => batch.push(a),
                        Msg::Collect(done) => collects.push((false, done)),
                        Msg::Rotate(done) => collects.push((true, done)),
                    }
                    if batch.len() < QUEUE_RECORDS {
                        next = rx.try_recv().ok();
                    }
                }
                if !batch.is_empty() {
                    writer.commit(batch);
                }
                if !collects.is_empty() {
                    // Close the active segment when asked to, or when every record in it has been released (an
                    // idle collector then holds no log at all, and a restart replays nothing).
                    let released = writer.refs.oldest().is_none_or(|oldest| oldest > writer.seq);
                    if (released || collects.iter().any(|(rotate, _)| *rotate))
                        && writer.size > 0
                        && let Err(e) = writer.rotate()
                    {
                        tracing::warn!(error = %e, "cannot close the write-ahead-log segment");
                    }
                    writer.collect();
                    for (_, done) in collects {
                        let _ = done.send(());
                    }
                }
            }
            writer.collect();
        })?;
        Ok((Wal { tx, refs }, records))
    }

    /// The segment references (shared with the pipeline).
    pub fn refs(&self) -> &SegmentRefs {
        &self.refs
    }

    /// Appends one record and waits for its group commit; returns its segment (holding a reference on it).
    ///
    /// # Errors
    /// [`WalError::Full`] over budget, [`WalError::Io`] when writing or fsync failed, [`WalError::Closed`].
    pub async fn append(&self, payload: bytes::Bytes) -> Result<u64, WalError> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Msg::Append(Append { payload, done })).await.map_err(|_| WalError::Closed)?;
        rx.await.map_err(|_| WalError::Closed)?
    }

    /// Deletes every closed segment that is no longer referenced (closing the active one first when all its records
    /// are released), and waits for it.
    pub async fn collect(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Collect(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Closes the active segment if it holds records (so it can be deleted once released), then collects.
    /// Used at shutdown, after the pipeline has drained.
    pub async fn rotate_and_collect(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Rotate(done)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_replay_in_order_and_segments_are_deleted_when_released() {
        let dir = tempfile::tempdir().expect("tmp");
        let metrics = Arc::new(Metrics::default());
        let (wal, old) = Wal::open(dir.path(), 1 << 30, metrics.clone()).expect("open");
        assert!(old.is_empty());
        let s1 = wal.append(bytes::Bytes::from(b"one".to_vec())).await.expect("append");
        let s2 = wal.append(bytes::Bytes::from(b"two".to_vec())).await.expect("append");
        assert_eq!(s1, s2);
        drop(wal);
        // Reopen: both records come back, oldest first, holding references.
        let (wal, replay) = Wal::open(dir.path(), 1 << 30, metrics.clone()).expect("reopen");
        let payloads: Vec<_> = replay.iter().map(|r| r.payload.clone()).collect();
        assert_eq!(payloads, vec![b"one".to_vec(), b"two".to_vec()]);
        let new_seq = wal.append(bytes::Bytes::from(b"three".to_vec())).await.expect("append");
        assert!(new_seq > s1);
        assert!(segment_path(dir.path(), s1).exists(), "referenced segment kept");
        for r in &replay {
            wal.refs().release(r.seq);
        }
        // The next commit collects.
        wal.append(bytes::Bytes::from(b"four".to_vec())).await.expect("append");
        assert!(!segment_path(dir.path(), s1).exists(), "released segment deleted");
        assert!(segment_path(dir.path(), new_seq).exists());
    }

    #[tokio::test]
    async fn an_idle_fully_released_log_is_emptied() {
        let dir = tempfile::tempdir().expect("tmp");
        let (wal, _) = Wal::open(dir.path(), 1 << 30, Arc::new(Metrics::default())).expect("open");
        let seq = wal.append(bytes::Bytes::from(b"x".to_vec())).await.expect("append");
        wal.collect().await;
        assert!(segment_path(dir.path(), seq).exists(), "still referenced");
        wal.refs().release(seq);
        wal.collect().await;
        assert!(!segment_path(dir.path(), seq).exists(), "released and idle: closed and deleted");
        drop(wal);
        let (_, replay) = Wal::open(dir.path(), 1 << 30, Arc::new(Metrics::default())).expect("reopen");
        assert!(replay.is_empty());
    }

    #[tokio::test]
    async fn torn_tail_is_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tmp");
        let (metrics, registry) = crate::metrics::registered();
        {
            let (wal, _) = Wal::open(dir.path(), 1 << 30, metrics.clone()).expect("open");
            wal.append(bytes::Bytes::from(b"kept".to_vec())).await.expect("append");
        }
        let path = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open seg");
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).expect("torn write");
        drop(f);
        let (_wal, replay) = Wal::open(dir.path(), 1 << 30, metrics.clone()).expect("reopen");
        assert_eq!(replay.len(), 1);
        assert!(skein_testkit::render(&registry).contains("skein_wal_corrupt_records_total 1"));
    }

    #[tokio::test]
    async fn budget_refuses_appends() {
        let dir = tempfile::tempdir().expect("tmp");
        let (wal, _) = Wal::open(dir.path(), 100, Arc::new(Metrics::default())).expect("open");
        wal.append(bytes::Bytes::from(vec![0; 60])).await.expect("fits");
        assert!(matches!(wal.append(bytes::Bytes::from(vec![0; 60])).await, Err(WalError::Full { .. })));
    }
}
