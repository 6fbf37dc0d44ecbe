//! Byte-level primitives every block version uses: LEB128 varints (unsigned and zig-zag), length-prefixed
//! bytes, and a bounds-checked [`Reader`] (every read of untrusted input checks its length first).

use crate::CodecError;

/// Appends an unsigned LEB128 varint.
pub fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends a signed (zig-zag) LEB128 varint.
pub fn put_ivarint(buf: &mut Vec<u8>, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// [`CodecError::Corrupt`] for a missing value, built only when the value is missing: `ok_or` builds (and, on the
/// path every valid block takes, drops) the error each time, which showed in decode profiles.
pub trait OrCorrupt<T> {
    /// `Some(v)` → `Ok(v)`; `None` → `Err(CodecError::Corrupt(what))`.
    ///
    /// # Errors
    /// [`CodecError::Corrupt`] naming `what` when the value is missing.
    fn or_corrupt(self, what: &'static str) -> Result<T, CodecError>;
}

impl<T> OrCorrupt<T> for Option<T> {
    #[inline]
    fn or_corrupt(self, what: &'static str) -> Result<T, CodecError> {
        match self {
            Some(v) => Ok(v),
            None => Err(CodecError::Corrupt(what)),
        }
    }
}

/// A bounds-checked reader over a byte slice.
pub struct Reader<'a> {
    /// The bytes read.
    pub buf: &'a [u8],
    /// The next position.
    pub pos: usize,
}

impl<'a> Reader<'a> {
    /// One byte.
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.pos).or_corrupt("truncated")?;
        self.pos += 1;
        Ok(b)
    }

    /// An unsigned LEB128 varint.
    pub fn uvarint(&mut self) -> Result<u64, CodecError> {
        // Most varints of a block are one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err(CodecError::Corrupt("varint overflows u64"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Corrupt("varint too long"))
    }

    /// A signed (zig-zag) LEB128 varint.
    pub fn ivarint(&mut self) -> Result<i64, CodecError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A varint that fits a `u32`.
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        u32::try_from(self.uvarint()?).map_err(|_| CodecError::Corrupt("value exceeds u32"))
    }

    /// A zig-zag varint that fits an `i32`.
    pub fn i32(&mut self) -> Result<i32, CodecError> {
        i32::try_from(self.ivarint()?).map_err(|_| CodecError::Corrupt("value exceeds i32"))
    }

    /// An element count that must be backed by at least one remaining byte per element.
    pub fn count(&mut self) -> Result<usize, CodecError> {
        let n = self.count_any()?;
        if n > self.buf.len().saturating_sub(self.pos) {
            return Err(CodecError::Corrupt("count larger than the remaining bytes"));
        }
        Ok(n)
    }

    /// A count not bounded by the bytes left (items may be empty).
    pub fn count_any(&mut self) -> Result<usize, CodecError> {
        usize::try_from(self.uvarint()?).map_err(|_| CodecError::Corrupt("count exceeds usize"))
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.count_any()?;
        self.take(n)
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).or_corrupt("length overflows")?;
        let b = self.buf.get(self.pos..end).or_corrupt("truncated")?;
        self.pos = end;
        Ok(b)
    }

    /// `N` raw bytes.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let end = self.pos + N;
        let b = self.buf.get(self.pos..end).or_corrupt("truncated")?;
        self.pos = end;
        b.try_into().map_err(|_| CodecError::Corrupt("truncated"))
    }
}
