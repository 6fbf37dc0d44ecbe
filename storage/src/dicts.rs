//! The writer side of shared dictionaries ([`skein_codec::SharedDict`]): one dictionary per storage partition
//! (retention tier × time partition), so that a dictionary expires with the blocks that reference it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use skein_codec::{CodecError, SharedDict};
use skein_model::Span;

/// How many partitions' dictionaries a writer keeps in memory; late chunks for older partitions start a new one.
pub const MAX_OPEN_DICTIONARIES: usize = 8;

/// Dictionary entries created while encoding a chunk; they must be stored with (or before) its block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DictAppend {
    /// The dictionary.
    pub dict_id: u64,
    /// Number of the first entry in `entries`.
    pub first: u32,
    /// New serialized entries (`kind u8 ‖ payload`, see [`skein_codec::v2`]), numbered from `first`.
    pub entries: Vec<Arc<[u8]>>,
}

/// A writer's shared dictionaries, keyed by (important tier, partition start second).
pub struct Dictionaries {
    partition_secs: u64,
    open: Mutex<BTreeMap<(u64, bool), SharedDict>>,
}

impl Dictionaries {
    /// Dictionaries scoped to partitions of `partition_secs` seconds.
    pub fn new(partition_secs: u64) -> Self {
        Self { partition_secs: partition_secs.max(1), open: Mutex::new(BTreeMap::new()) }
    }

    /// The start second of the partition holding data that starts at `start_unix_nanos`.
    pub fn partition_of(&self, start_unix_nanos: u64) -> u64 {
        crate::partition_start_secs(start_unix_nanos, self.partition_secs)
    }

    /// Encodes one trace chunk with the dictionary of its partition, returning the block and any new entries.
    ///
    /// # Errors
    /// As [`skein_codec::encode`].
    pub fn encode(
        &self,
        spans: &[Span],
        start_unix_nanos: u64,
        important: bool,
    ) -> Result<(Vec<u8>, Option<DictAppend>), CodecError> {
        self.with_dict(start_unix_nanos, important, |dict| skein_codec::encode_with_dict(spans, dict))
    }

    /// Encodes a pack of chunks (each one trace's spans) of one partition with its dictionary
    /// ([`skein_codec::encode_pack`]), returning the pack and any new entries.
    ///
    /// # Errors
    /// As [`skein_codec::encode_pack`].
    pub fn encode_pack(
        &self,
        traces: &[&[Span]],
        start_unix_nanos: u64,
        important: bool,
    ) -> Result<(Vec<u8>, Option<DictAppend>), CodecError> {
        self.with_dict(start_unix_nanos, important, |dict| skein_codec::encode_pack(traces, Some(dict)))
    }

    fn with_dict(
        &self,
        start_unix_nanos: u64,
        important: bool,
        encode: impl FnOnce(&mut SharedDict) -> Result<Vec<u8>, CodecError>,
    ) -> Result<(Vec<u8>, Option<DictAppend>), CodecError> {
        let partition = self.partition_of(start_unix_nanos);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !open.contains_key(&(partition, important))
            && open.len() >= MAX_OPEN_DICTIONARIES
            && let Some(oldest) = open.keys().next().copied()
        {
            open.remove(&oldest);
        }
        let dict = open.entry((partition, important)).or_default();
        let block = encode(dict)?;
        let (first, entries) = dict.take_unpersisted();
        let append = (!entries.is_empty()).then(|| DictAppend { dict_id: dict.id(), first, entries });
        Ok((block, append))
    }

    /// Forgets every dictionary. Called when a write carrying new entries failed for good, so that no later block
    /// references entries that never reached storage; new dictionaries (new IDs) start afterwards.
    pub fn reset(&self) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
