//! Shared dictionaries as readers see them: the entries (strings, whole resources and scopes, span templates) a
//! version 2 block may reference instead of repeating, and how a reader finds a block's dictionary.

use std::sync::Arc;

use skein_model::{CompactString, Resource, Scope, SpanKind, Value};

use crate::CodecError;

/// A span template: what spans of one kind of operation in one process have in common.
#[derive(Debug, PartialEq)]
pub struct Template {
    /// The process.
    pub resource: Arc<Resource>,
    /// The instrumentation scope.
    pub scope: Arc<Scope>,
    /// Operation (span name).
    pub name: CompactString,
    /// Span kind.
    pub kind: SpanKind,
    /// Attribute keys, in the spans' order.
    pub keys: Vec<CompactString>,
    /// Per key, the value spans of this template usually carry (that of the span that created the template);
    /// spans store only the values that differ.
    pub defaults: Vec<Option<Value>>,
}

/// One decoded entry of a shared dictionary.
#[derive(Clone, Debug, PartialEq)]
pub enum DictEntry {
    /// A string: service, operation, attribute key or frequent value.
    Str(Arc<str>),
    /// A whole resource.
    Resource(Arc<Resource>),
    /// A whole instrumentation scope.
    Scope(Arc<Scope>),
    /// A span template.
    Template(Arc<Template>),
}

/// A decoded shared dictionary, entries numbered from 0.
pub type Dictionary = Arc<[DictEntry]>;

/// Where a reader finds shared dictionaries.
pub trait DictLookup {
    /// The entries of dictionary `dict_id`, at least `min_len` of them.
    ///
    /// # Errors
    /// [`CodecError::MissingDictionary`] when the dictionary (or enough of it) is not available.
    fn dictionary(&self, dict_id: u64, min_len: usize) -> Result<Dictionary, CodecError>;
}

/// A [`DictLookup`] that has no dictionaries (blocks encoded without one decode with it).
pub struct NoDict;

impl DictLookup for NoDict {
    fn dictionary(&self, dict_id: u64, _min_len: usize) -> Result<Dictionary, CodecError> {
        Err(CodecError::MissingDictionary(dict_id))
    }
}
