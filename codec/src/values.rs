//! The attribute and value layout versions 1 and 2 share: writing attribute lists and values with a caller's
//! string references, and [`Strings`], the decode-side string table (a block's own strings, and in version 2 the
//! shared dictionary's) with the event, link, attribute and value readers built on it.

use std::sync::Arc;

use skein_model::{CompactString, Event, KeyValue, Link, Value};

use crate::CodecError;
use crate::dict::DictEntry;
use crate::wire::{OrCorrupt, Reader, put_bytes, put_ivarint, put_uvarint};

/// The index of `item` in `list` (by pointer, then by value), appending it when absent.
pub(crate) fn position_or_push<T: PartialEq>(list: &mut Vec<Arc<T>>, item: &Arc<T>) -> usize {
    if let Some(i) = list.iter().position(|x| Arc::ptr_eq(x, item) || **x == **item) {
        return i;
    }
    list.push(item.clone());
    list.len() - 1
}

/// Writes an attribute list (count, then key and value per entry) in the layout shared by versions 1 and 2;
/// `string(buf, s, is_key)` writes each string's reference.
pub(crate) fn put_attrs(buf: &mut Vec<u8>, attrs: &[KeyValue], string: &mut dyn FnMut(&mut Vec<u8>, &str, bool)) {
    put_uvarint(buf, attrs.len() as u64);
    for kv in attrs {
        string(buf, &kv.key, true);
        put_value(buf, &kv.value, string);
    }
}

/// Writes one value: tag u8 (0 empty, 1 string, 2 false, 3 true, 4 int, 5 f64 LE, 6 bytes, 7 array, 8 kvlist)
/// then its payload; strings through `string(buf, s, false)` (keys of nested kvlists with `is_key` true).
pub(crate) fn put_value(buf: &mut Vec<u8>, v: &Value, string: &mut dyn FnMut(&mut Vec<u8>, &str, bool)) {
    match v {
        Value::Empty => buf.push(0),
        Value::Str(s) => {
            buf.push(1);
            string(buf, s, false);
        }
        Value::Bool(false) => buf.push(2),
        Value::Bool(true) => buf.push(3),
        Value::Int(i) => {
            buf.push(4);
            put_ivarint(buf, *i);
        }
        Value::Double(d) => {
            buf.push(5);
            buf.extend_from_slice(&d.to_le_bytes());
        }
        Value::Bytes(b) => {
            buf.push(6);
            put_bytes(buf, b);
        }
        Value::Array(items) => {
            buf.push(7);
            put_uvarint(buf, items.len() as u64);
            for item in items {
                put_value(buf, item, string);
            }
        }
        Value::KvList(kvs) => {
            buf.push(8);
            put_attrs(buf, kvs, string);
        }
    }
}

/// String references of a block: version 1 indexes `strings` directly; version 2 (`shared` is `Some`) uses refs,
/// odd for entries of the shared dictionary and even for the block's local `strings`.
pub(crate) struct Strings<'a> {
    pub(crate) strings: &'a [String],
    pub(crate) shared: Option<&'a [DictEntry]>,
}

/// Maximum nesting of array/kvlist values accepted when decoding (OTLP allows nesting; this bounds recursion).
pub(crate) const MAX_VALUE_DEPTH: usize = 64;

impl Strings<'_> {
    /// A span's events column entry: count, then (time − span start, name#, attrs, dropped)….
    pub(crate) fn events(&self, r: &mut Reader<'_>, span_start: u64) -> Result<Vec<Event>, CodecError> {
        let n = r.count()?;
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            let time_unix_nanos = span_start.wrapping_add(r.ivarint()? as u64);
            let name = self.text(r)?;
            let attributes = self.attrs(r)?;
            let dropped_attributes_count = r.u32()?;
            events.push(Event { time_unix_nanos, name, attributes, dropped_attributes_count });
        }
        Ok(events)
    }

    /// A span's links column entry: count, then (trace_id, span_id, trace_state#, attrs, dropped, flags)….
    pub(crate) fn links(&self, r: &mut Reader<'_>) -> Result<Vec<Link>, CodecError> {
        let n = r.count()?;
        let mut links = Vec::with_capacity(n);
        for _ in 0..n {
            let trace_id = r.bytes()?.to_vec();
            let span_id = r.bytes()?.to_vec();
            let trace_state = self.string(r)?;
            let attributes = self.attrs(r)?;
            let dropped_attributes_count = r.u32()?;
            let flags = r.u32()?;
            links.push(Link { trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags });
        }
        Ok(links)
    }

    /// A counted list of strings (the warnings column).
    pub(crate) fn strings(&self, r: &mut Reader<'_>) -> Result<Vec<String>, CodecError> {
        let n = r.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.string(r)?);
        }
        Ok(out)
    }

    pub(crate) fn string(&self, r: &mut Reader<'_>) -> Result<String, CodecError> {
        self.str(r).map(str::to_owned)
    }

    /// A string as an inline-when-short [`CompactString`] (no heap allocation up to 24 bytes).
    pub(crate) fn text(&self, r: &mut Reader<'_>) -> Result<CompactString, CodecError> {
        self.str(r).map(CompactString::from)
    }

    /// A string reference resolved to the string it names.
    pub(crate) fn str<'s>(&'s self, r: &mut Reader<'_>) -> Result<&'s str, CodecError> {
        let i = r.count_any()?;
        let Some(shared) = self.shared else {
            return self.strings.get(i).map(String::as_str).or_corrupt("string index out of range");
        };
        if i & 1 == 0 {
            return self.strings.get(i >> 1).map(String::as_str).or_corrupt("string index out of range");
        }
        match shared.get(i >> 1) {
            Some(DictEntry::Str(s)) => Ok(s),
            Some(_) => Err(CodecError::Corrupt("dictionary entry is not a string")),
            None => Err(CodecError::Corrupt("dictionary reference out of range")),
        }
    }

    pub(crate) fn attrs(&self, r: &mut Reader<'_>) -> Result<Vec<KeyValue>, CodecError> {
        self.attrs_at(r, 0)
    }

    pub(crate) fn attrs_at(&self, r: &mut Reader<'_>, depth: usize) -> Result<Vec<KeyValue>, CodecError> {
        let n = r.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let key = self.text(r)?;
            let value = self.value(r, depth)?;
            out.push(KeyValue { key, value });
        }
        Ok(out)
    }

    pub(crate) fn value(&self, r: &mut Reader<'_>, depth: usize) -> Result<Value, CodecError> {
        if depth > MAX_VALUE_DEPTH {
            return Err(CodecError::Corrupt("values nested too deeply"));
        }
        Ok(match r.u8()? {
            0 => Value::Empty,
            1 => Value::Str(self.text(r)?),
            2 => Value::Bool(false),
            3 => Value::Bool(true),
            4 => Value::Int(r.ivarint()?),
            5 => Value::Double(f64::from_le_bytes(r.array::<8>()?)),
            6 => Value::Bytes(r.bytes()?.to_vec()),
            7 => {
                let n = r.count()?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(r, depth + 1)?);
                }
                Value::Array(items)
            }
            8 => Value::KvList(self.attrs_at(r, depth + 1)?),
            _ => return Err(CodecError::Corrupt("unknown value tag")),
        })
    }
}

/// Skips one value written by [`put_value`] (string references are varints).
pub(crate) fn skip_value(r: &mut Reader<'_>, depth: usize) -> Result<(), CodecError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(CodecError::Corrupt("values nested too deeply"));
    }
    match r.u8()? {
        0 | 2 | 3 => {}
        1 => {
            r.uvarint()?;
        }
        4 => {
            r.ivarint()?;
        }
        5 => {
            r.array::<8>()?;
        }
        6 => {
            r.bytes()?;
        }
        7 => {
            for _ in 0..r.count()? {
                skip_value(r, depth + 1)?;
            }
        }
        8 => {
            for _ in 0..r.count()? {
                r.uvarint()?;
                skip_value(r, depth + 1)?;
            }
        }
        _ => return Err(CodecError::Corrupt("unknown value tag")),
    }
    Ok(())
}
