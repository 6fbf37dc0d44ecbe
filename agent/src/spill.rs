//! The on-disk spill queue: segment files of length-prefixed, checksummed records, replayed in order after a
//! restart.
//!
//! Layout: `<dir>/<seq:020>.spill`, oldest (lowest sequence number) first. A record is
//! `len: u32 LE | crc32(payload): u32 LE | spans: u32 LE | error_spans: u32 LE | dest: u64 LE | payload`, the
//! payload an encoded OTLP `ExportTraceServiceRequest` and `dest` the rendezvous key of its collector. A torn or corrupt tail (a crash mid-write) is cut off at the last good record
//! on open. Writes go to the page cache without `fsync`: an agent crash (SIGKILL, OOM kill) loses nothing; a power
//! loss of the node can lose the last seconds, which is the trade a sidecar must make to never slow the app.
//!
//! When full, [`Spill::append`] makes room by the drop policy: the oldest segment still holding non-error spans is
//! rewritten with only its error spans; only when every segment holds error spans alone is the oldest deleted.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::entry::Entry;

/// Bytes of a record header.
pub const HEADER_BYTES: u64 = 24;
const SUFFIX: &str = "spill";
/// Sequence number of the first segment in a new directory; lower numbers are left for requeued batches.
const FIRST_SEQ: u64 = 1 << 40;

#[derive(Clone, Copy, Debug, Default)]
struct Segment {
    seq: u64,
    bytes: u64,
    spans: u64,
    error_spans: u64,
}

/// What [`Spill::append`] did with the entry.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Spans dropped to make room (older data, or the entry's own non-error spans).
    pub dropped_spans: u64,
    /// Bytes written.
    pub written_bytes: u64,
}

/// The spill queue. Not thread-safe by itself: the `Buffer` (`crate::buffer`) holds it under its lock.
pub struct Spill {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    queued: VecDeque<Segment>,
    active: Option<(Segment, File)>,
    inflight: HashMap<u64, Segment>,
    total_bytes: u64,
    next_seq: u64,
}

fn path_of(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.{SUFFIX}"))
}

fn encode_record(e: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(&(e.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&e.payload).to_le_bytes());
    out.extend_from_slice(&e.spans.to_le_bytes());
    out.extend_from_slice(&e.error_spans.to_le_bytes());
    out.extend_from_slice(&e.dest.to_le_bytes());
    out.extend_from_slice(&e.payload);
}

/// Parses records from a segment's bytes; returns the entries and the length of the valid prefix.
fn decode_records(data: &Bytes) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= HEADER_BYTES as usize {
        let word =
            |i: usize| u32::from_le_bytes([data[pos + i], data[pos + i + 1], data[pos + i + 2], data[pos + i + 3]]);
        let (len, crc, spans, error_spans) = (word(0) as usize, word(4), word(8), word(12));
        let dest = u64::from(word(16)) | (u64::from(word(20)) << 32);
        let start = pos + HEADER_BYTES as usize;
        let Some(end) = start.checked_add(len).filter(|&e| e <= data.len()) else { break };
        let payload = data.slice(start..end);
        if crc32fast::hash(&payload) != crc || error_spans > spans {
            break;
        }
        entries.push(Entry { payload, spans, error_spans, dest });
        pos = end;
    }
    (entries, pos)
}

fn totals(entries: &[Entry]) -> (u64, u64, u64) {
    entries.iter().fold((0, 0, 0), |(b, s, e), x| {
        (b + HEADER_BYTES + x.payload.len() as u64, s + u64::from(x.spans), e + u64::from(x.error_spans))
    })
}

impl Spill {
    /// Opens (creating) the directory and indexes the segments left by a previous run, cutting torn tails.
    /// Returns the queue and the number of records lost to corruption.
    ///
    /// # Errors
    /// The directory cannot be created or read.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<(Self, u64)> {
        fs::create_dir_all(dir)?;
        let mut seqs: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(&format!(".{SUFFIX}"))?.parse().ok()
            })
            .collect();
        seqs.sort_unstable();
        let segment_bytes = (max_bytes / 8).clamp(64 * 1024, 4 * 1024 * 1024);
        let mut spill = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes,
            queued: VecDeque::new(),
            active: None,
            inflight: HashMap::new(),
            total_bytes: 0,
            next_seq: seqs.last().map_or(FIRST_SEQ, |s| s + 1),
        };
        let mut corrupt = 0;
        for seq in seqs {
            let path = path_of(dir, seq);
            let data = Bytes::from(fs::read(&path)?);
            let (entries, valid) = decode_records(&data);
            if valid < data.len() {
                corrupt += 1;
                tracing::warn!(path = %path.display(), valid, len = data.len(), "spill segment has a torn or corrupt tail; cut");
            }
            if entries.is_empty() {
                fs::remove_file(&path)?;
                continue;
            }
            if valid < data.len() {
                File::options().write(true).open(&path)?.set_len(valid as u64)?;
            }
            let (bytes, spans, error_spans) = totals(&entries);
            spill.total_bytes += bytes;
            spill.queued.push_back(Segment { seq, bytes, spans, error_spans });
        }
        Ok((spill, corrupt))
    }

    /// Bytes in all segment files (queued, being written and being sent).
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Spans in all segment files.
    pub fn spans(&self) -> u64 {
        self.segments().map(|s| s.spans).sum()
    }

    /// Whether a segment is waiting to be sent (in-flight ones excluded).
    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty() || self.active.as_ref().is_some_and(|(s, _)| s.spans > 0)
    }

    fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.queued.iter().chain(self.active.iter().map(|(s, _)| s)).chain(self.inflight.values())
    }

    fn seal(&mut self) {
        if let Some((seg, _file)) = self.active.take() {
            self.queued.push_back(seg);
        }
    }

    fn delete(&mut self, seg: &Segment) {
        if let Err(e) = fs::remove_file(path_of(&self.dir, seg.seq)) {
            tracing::warn!(seq = seg.seq, error = %e, "removing a spill segment");
        }
        self.total_bytes -= seg.bytes;
    }

    /// Rewrites queued segment `i` with its error spans only (deleting it when none). Returns dropped spans.
    fn compact(&mut self, i: usize) -> io::Result<u64> {
        let seg = self.queued[i];
        let data = Bytes::from(fs::read(path_of(&self.dir, seg.seq))?);
        let kept: Vec<Entry> = decode_records(&data).0.iter().filter_map(Entry::errors_only).collect();
        let (bytes, spans, error_spans) = totals(&kept);
        if kept.is_empty() {
            self.queued.remove(i);
            self.delete(&seg);
        } else {
            let mut buf = Vec::with_capacity(bytes as usize);
            kept.iter().for_each(|e| encode_record(e, &mut buf));
            let tmp = self.dir.join(format!("{:020}.tmp", seg.seq));
            fs::write(&tmp, &buf)?;
            fs::rename(&tmp, path_of(&self.dir, seg.seq))?;
            self.total_bytes = self.total_bytes - seg.bytes + bytes;
            self.queued[i] = Segment { seq: seg.seq, bytes, spans, error_spans };
        }
        Ok(seg.spans - spans)
    }

    /// Frees space for `need` more bytes by the drop policy; `incoming` is stripped to its error spans when only
    /// error spans are left on disk. Returns dropped spans and whether `incoming` still fits.
    fn make_room(&mut self, need: u64, incoming: &mut Option<Entry>) -> io::Result<(u64, bool)> {
        let mut dropped = 0;
        while self.total_bytes + need > self.max_bytes {
            if let Some(i) = self.queued.iter().position(|s| s.spans > s.error_spans) {
                dropped += self.compact(i)?;
            } else if self.active.as_ref().is_some_and(|(s, _)| s.spans > s.error_spans) {
                self.seal();
            } else if let Some(e) = incoming.as_ref().filter(|e| e.spans > e.error_spans) {
                dropped += u64::from(e.spans - e.error_spans);
                *incoming = e.errors_only();
                let Some(e) = incoming else { return Ok((dropped, false)) };
                return self.make_room(HEADER_BYTES + e.payload.len() as u64, incoming).map(|(d, f)| (dropped + d, f));
            } else if let Some(seg) = self.queued.pop_front() {
                dropped += seg.spans;
                self.delete(&seg);
            } else if self.active.is_some() {
                self.seal();
            } else {
                return Ok((dropped, false));
            }
        }
        Ok((dropped, true))
    }

    /// Appends an entry at the tail, making room by the drop policy first.
    ///
    /// # Errors
    /// Writing the segment failed (the entry is not stored).
    pub fn append(&mut self, entry: Entry) -> io::Result<AppendOutcome> {
        let mut incoming = Some(entry);
        let need = HEADER_BYTES + incoming.as_ref().map_or(0, |e| e.payload.len() as u64);
        let (mut dropped, fits) = self.make_room(need, &mut incoming)?;
        let entry = match incoming {
            Some(e) if fits => e,
            rest => {
                dropped += rest.map_or(0, |e| u64::from(e.spans));
                return Ok(AppendOutcome { dropped_spans: dropped, written_bytes: 0 });
            }
        };
        let need = HEADER_BYTES + entry.payload.len() as u64;
        if self.active.as_ref().is_some_and(|(s, _)| s.bytes + need > self.segment_bytes) {
            self.seal();
        }
        if self.active.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let file = File::options().create_new(true).append(true).open(path_of(&self.dir, seq))?;
            self.active = Some((Segment { seq, ..Segment::default() }, file));
        }
        let mut buf = Vec::with_capacity(need as usize);
        encode_record(&entry, &mut buf);
        if let Some((seg, file)) = &mut self.active {
            file.write_all(&buf)?;
            seg.bytes += need;
            seg.spans += u64::from(entry.spans);
            seg.error_spans += u64::from(entry.error_spans);
        }
        self.total_bytes += need;
        Ok(AppendOutcome { dropped_spans: dropped, written_bytes: need })
    }

    /// Takes the oldest segment for sending; it stays on disk (and is replayed after a crash) until
    /// [`Spill::ack`]. Returns its sequence number and entries.
    ///
    /// # Errors
    /// Reading the segment failed.
    pub fn take(&mut self) -> io::Result<Option<(u64, Vec<Entry>)>> {
        if self.queued.is_empty() {
            self.seal();
        }
        let Some(seg) = self.queued.pop_front() else { return Ok(None) };
        let mut data = Vec::with_capacity(seg.bytes as usize);
        File::open(path_of(&self.dir, seg.seq))?.read_to_end(&mut data)?;
        let (entries, _) = decode_records(&Bytes::from(data));
        self.inflight.insert(seg.seq, seg);
        Ok(Some((seg.seq, entries)))
    }

    /// Deletes a taken segment (its spans were delivered, dropped, or requeued by [`Spill::requeue_front`]).
    pub fn ack(&mut self, seq: u64) {
        if let Some(seg) = self.inflight.remove(&seq) {
            self.delete(&seg);
        }
    }

    /// Writes entries as a new segment at the head of the queue (sent next); [`Spill::enforce_budget`] then
    /// brings the queue back within its bound.
    ///
    /// # Errors
    /// Writing the segment failed.
    pub fn requeue_front(&mut self, entries: &[Entry]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let seq = self.segments().map(|s| s.seq).min().unwrap_or(self.next_seq) - 1;
        let (bytes, spans, error_spans) = totals(entries);
        let mut buf = Vec::with_capacity(bytes as usize);
        entries.iter().for_each(|e| encode_record(e, &mut buf));
        fs::write(path_of(&self.dir, seq), &buf)?;
        self.total_bytes += bytes;
        self.queued.push_front(Segment { seq, bytes, spans, error_spans });
        Ok(())
    }

    /// Enforces the byte budget by the drop policy (after a requeue). Returns dropped spans.
    ///
    /// # Errors
    /// Rewriting a segment failed.
    pub fn enforce_budget(&mut self) -> io::Result<u64> {
        self.make_room(0, &mut None).map(|(d, _)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::testing::{entry, id_of};

    #[test]
    fn survives_reopen_in_order_and_cuts_torn_tails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spill::open(dir.path(), 1 << 20).expect("open");
        for i in 0..5 {
            s.append(entry(i, 10, 0)).expect("append");
        }
        let bytes = s.bytes();
        drop(s);
        let path = path_of(dir.path(), FIRST_SEQ);
        let mut f = File::options().append(true).open(&path).expect("open segment");
        f.write_all(&[9, 0, 0, 0, 1, 2]).expect("torn write");
        let (mut s, corrupt) = Spill::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(corrupt, 1);
        assert_eq!(s.bytes(), bytes);
        assert_eq!(s.spans(), 50);
        let (seq, entries) = s.take().expect("read").expect("segment");
        assert_eq!(entries.iter().map(id_of).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert!(entries.iter().all(|e| e.dest == u64::from(id_of(e))), "the destination survives");
        s.ack(seq);
        assert_eq!((s.bytes(), s.spans()), (0, 0));
        assert!(fs::read_dir(dir.path()).expect("dir").next().is_none(), "acked segments are deleted");
    }

    #[test]
    fn full_disk_drops_oldest_non_error_spans_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Each entry is ~1 KiB; the budget holds about 100 of them; segments are 64 KiB.
        let (mut s, _) = Spill::open(dir.path(), 100 * 1100).expect("open");
        let mut dropped = 0;
        for i in 0..400u32 {
            let errors = if i % 10 == 0 { 5 } else { 0 };
            dropped += s.append(entry(i as u8, 10, errors)).expect("append").dropped_spans;
            assert!(s.bytes() <= 100 * 1100, "over budget at {i}: {}", s.bytes());
        }
        let on_disk = s.spans();
        assert_eq!(dropped + on_disk, 4000, "every span is stored or counted");
        // All 40 error entries (5 error spans each) are still there: only non-error spans were dropped.
        let mut errors = 0;
        while let Some((seq, entries)) = s.take().expect("read") {
            errors += entries.iter().map(|e| u64::from(e.error_spans)).sum::<u64>();
            s.ack(seq);
        }
        assert_eq!(errors, 200);
    }

    #[test]
    fn error_spans_go_last_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spill::open(dir.path(), 20 * 1100).expect("open");
        let mut dropped = 0;
        for i in 0..100u32 {
            dropped += s.append(entry(i as u8, 4, 4)).expect("append").dropped_spans;
        }
        assert_eq!(dropped + s.spans(), 400);
        let (_, first) = s.take().expect("read").expect("segment");
        assert!(id_of(&first[0]) > 70, "the newest error entries are kept, got {}", id_of(&first[0]));
    }

    #[test]
    fn requeued_entries_are_sent_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = Spill::open(dir.path(), 1 << 20).expect("open");
        s.append(entry(1, 1, 0)).expect("append");
        let (seq, taken) = s.take().expect("read").expect("segment");
        s.append(entry(2, 1, 0)).expect("append");
        s.requeue_front(&taken).expect("requeue");
        s.ack(seq);
        drop(s);
        let (mut s, _) = Spill::open(dir.path(), 1 << 20).expect("reopen");
        let order: Vec<u8> = std::iter::from_fn(|| s.take().expect("read"))
            .flat_map(|(_, e)| e.into_iter().map(|e| id_of(&e)))
            .collect();
        assert_eq!(order, vec![1, 2]);
    }
}
