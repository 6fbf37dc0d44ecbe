//! The trace-block codec: Skein's own columnar encoding of all spans of one trace (or one late chunk of it).
//!
//! A block is written once by the storage writer and read by every query, so it is optimised for size and for
//! decoding whole. Every block starts with the magic `SKTB` and a version byte; each version lives in its own
//! module behind [`BlockVersion`] (as Tempo keeps one package per encoding in `tempodb/encoding`): [`v1`] and
//! [`v2`]. [`wire`] holds the byte primitives, `values` the attribute layout both versions share, [`dict`] the
//! shared-dictionary entries. Layout of version 1 (all integers LEB128 varints unless noted; signed ones zig-zag):
//!
//! ```text
//! "SKTB" | version u8 = 1 | zstd( body )
//! body:  trace_id [16] | base_start_nanos | strings | resources | scopes | span_count | columns…
//! strings:   count, then (len, utf-8 bytes)…          — the dictionary: every string is stored once
//! resources: count, then (attrs, dropped, schema_url#)…
//! scopes:    count, then (name#, version#, attrs, dropped, schema_url#)…
//! columns, one after another, each a run of span_count values:
//!   span_id [8] · parent (0 none | 1 raw bytes in parent_raw | k+2 = index k in this block) · parent_raw ·
//!   start − base · end − start (wrapping) · name# · kind · flags · trace_state# · status code · status msg# ·
//!   resource · scope · dropped attrs/events/links · attributes · events · links · warnings
//! value: tag u8 (0 empty, 1 string#, 2 false, 3 true, 4 int, 5 f64 LE, 6 bytes, 7 array, 8 kvlist) then payload
//! ```
//!
//! `#` marks an index into the string dictionary. The codec is lossless for every field of the model (which is
//! itself lossless against OTLP); [`decode`] validates every length and index, so a corrupt block is an error,
//! never a panic.
//!
//! Version 2 ([`v2`], written by [`encode`] and [`encode_with_dict`]) adds shared per-partition dictionaries
//! (strings, whole resources and scopes, span templates), parent deltas, delta-encoded starts and one zstd frame
//! over column-ordered data. Version 1 blocks stay readable:
//! [`decode`] and [`decode_with`] accept both.
//!
//! This crate must not import any Skein crate but `skein-model`, nor do I/O: blocks come and go as bytes.

use skein_model::Span;

pub mod dict;
pub mod v1;
pub mod v2;
pub mod v3;
mod values;
pub mod wire;

pub use dict::{DictEntry, DictLookup, Dictionary, NoDict, Template};
pub use v1::{VERSION_1, encode as encode_v1};
pub use v2::{SharedDict, SpanOutline, VERSION_2, decode_dictionary};
pub use v3::{OpenPack, VERSION_3, decode_pack, encode_pack};

/// Magic bytes at the start of every block.
pub const MAGIC: &[u8; 4] = b"SKTB";
/// zstd level used for blocks.
pub const ZSTD_LEVEL: i32 = 3;
/// Upper bound on a decoded block body, to refuse decompression bombs.
pub const MAX_BODY_BYTES: usize = 1 << 30;

/// A codec failure.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The block does not start with the magic bytes.
    #[error("not a trace block (bad magic)")]
    BadMagic,
    /// The block's version is not known to this build.
    #[error("unsupported trace block version {0}")]
    UnsupportedVersion(u8),
    /// The block holds no spans or spans of different traces.
    #[error("a block holds the spans of exactly one trace: {0}")]
    NotOneTrace(String),
    /// zstd failed.
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
    /// The body is truncated or an index points outside its table.
    #[error("corrupt trace block: {0}")]
    Corrupt(&'static str),
    /// The block references a shared dictionary the reader does not have (or not enough of it).
    #[error("shared dictionary {0:016x} is missing")]
    MissingDictionary(u64),
}

/// One block layout: its version byte and its decoder. Encoders differ in what they take (version 2 a shared
/// dictionary), so they are each version's own `encode`; decoding is uniform, which [`decode_with`] dispatches on.
pub trait BlockVersion {
    /// The version byte after the magic.
    const VERSION: u8;

    /// Decodes a whole block of this version (magic and version byte included) into its spans, resolving
    /// shared-dictionary references through `dicts` (version 1 has none).
    ///
    /// # Errors
    /// As [`decode_with`].
    fn decode(block: &[u8], dicts: &dyn DictLookup) -> Result<Vec<Span>, CodecError>;
}

/// Encodes the spans of one trace into a version 2 block that uses no shared dictionary (self-contained).
///
/// # Errors
/// [`CodecError::NotOneTrace`] when `spans` is empty or mixes trace IDs; [`CodecError::Zstd`] if compression fails.
pub fn encode(spans: &[Span]) -> Result<Vec<u8>, CodecError> {
    v2::encode(spans, None)
}

/// Encodes the spans of one trace into a version 2 block that references (and extends) a shared dictionary.
/// New entries must be persisted ([`SharedDict::take_unpersisted`]) with the block.
///
/// # Errors
/// As [`encode`].
pub fn encode_with_dict(spans: &[Span], dict: &mut SharedDict) -> Result<Vec<u8>, CodecError> {
    v2::encode(spans, Some(dict))
}

/// Decodes a self-contained block (version 1, or version 2 without a shared dictionary) into its spans, in the
/// order they were encoded.
///
/// # Errors
/// [`CodecError::BadMagic`] / [`CodecError::UnsupportedVersion`] for foreign data, [`CodecError::Corrupt`] for a
/// truncated or inconsistent body, [`CodecError::Zstd`] when decompression fails,
/// [`CodecError::MissingDictionary`] when the block needs a shared dictionary (use [`decode_with`]).
pub fn decode(block: &[u8]) -> Result<Vec<Span>, CodecError> {
    decode_with(block, &NoDict)
}

/// Decodes a block of any supported version, resolving shared-dictionary references through `dicts`.
///
/// # Errors
/// As [`decode`]; [`CodecError::MissingDictionary`] when `dicts` lacks the block's dictionary.
pub fn decode_with(block: &[u8], dicts: &dyn DictLookup) -> Result<Vec<Span>, CodecError> {
    if block.len() < 5 || &block[..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    match block[4] {
        v if v == v1::V1::VERSION => v1::V1::decode(block, dicts),
        v if v == v2::V2::VERSION => v2::V2::decode(block, dicts),
        v if v == v3::V3::VERSION => v3::V3::decode(block, dicts),
        v => Err(CodecError::UnsupportedVersion(v)),
    }
}

/// The dictionary a block needs: `(dict_id, dict_len)`, or `None` when it needs none (version 1 blocks and
/// self-contained version 2 and 3 blocks; both start their header with `dict_id u64 LE | dict_len uvarint`).
///
/// # Errors
/// [`CodecError::BadMagic`] for foreign data, [`CodecError::Corrupt`] when the header is truncated.
pub fn dictionary_of(block: &[u8]) -> Result<Option<(u64, usize)>, CodecError> {
    if block.len() < 5 || &block[..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    if block[4] != VERSION_2 && block[4] != VERSION_3 {
        return Ok(None);
    }
    let mut r = wire::Reader { buf: block, pos: 5 };
    let dict_id = u64::from_le_bytes(r.array::<8>()?);
    let dict_len = usize::try_from(r.uvarint()?).map_err(|_| CodecError::Corrupt("dictionary length"))?;
    Ok((dict_id != 0 && dict_len > 0).then_some((dict_id, dict_len)))
}

/// Decodes a block's outline: every span with its IDs, parent, name, kind, times, status, resource, scope,
/// events and links, but with empty span `attributes` (version 2 keeps attribute values in a column of their own,
/// which this skips; a version 1 block is decoded whole and its attributes dropped). What a trace summary or a
/// search result list needs, at a fraction of a full decode's cost.
///
/// # Errors
/// As [`decode_with`].
pub fn decode_outline_with(block: &[u8], dicts: &dyn DictLookup) -> Result<Vec<Span>, CodecError> {
    if block.len() < 5 || &block[..4] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    match block[4] {
        v if v == v1::V1::VERSION => {
            let mut spans = v1::V1::decode(block, dicts)?;
            spans.iter_mut().for_each(|s| s.attributes = Vec::new());
            Ok(spans)
        }
        v if v == v2::V2::VERSION => v2::decode(block, dicts, MAX_BODY_BYTES, false),
        v if v == v3::V3::VERSION => {
            Ok(v3::decode_pack(block, dicts, &|_| true, false)?.into_iter().flatten().collect())
        }
        v => Err(CodecError::UnsupportedVersion(v)),
    }
}

#[cfg(test)]
mod tests;
