//! Reading the protobuf wire format field by field, without a schema: the one field reader under Skein's two
//! OTLP byte walkers, the agent's routing (which copies spans as byte ranges) and the collector's direct decoder
//! (`skein_model::otlp::decode_export`).
//!
//! Wire format: <https://protobuf.dev/programming-guides/encoding/>. What is refused follows prost's decoder, so
//! that neither walker refuses a request prost would accept nor accepts one it would refuse: varints of at most
//! 10 bytes whose 10th byte is 0 or 1, keys up to `u32::MAX`, field number 0 and wire types 6 and 7 refused,
//! lengths within the message, and (deprecated proto2) groups skipped whole, each field nested in a group
//! counted against [`RECURSION_LIMIT`] as prost counts it.

/// prost's `RECURSION_LIMIT`: a message (or group) at this depth may hold no fields that need decoding.
pub const RECURSION_LIMIT: u32 = 100;

/// The bytes are not valid protobuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// Byte offset in the outermost buffer.
    pub offset: usize,
    /// What was wrong.
    pub what: &'static str,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed protobuf at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for WireError {}

/// A field's value, by wire type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WireValue<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1 (`fixed64`, `sfixed64`, `double`), little-endian.
    Fixed64(u64),
    /// Wire type 2: the bytes of a string, bytes field or nested message.
    Len(&'a [u8]),
    /// Wire type 3: a group, skipped whole.
    Group,
    /// Wire type 5 (`fixed32`, `sfixed32`, `float`), little-endian.
    Fixed32(u32),
}

impl WireValue<'_> {
    /// The wire type number.
    pub fn wire_type(&self) -> u8 {
        match self {
            WireValue::Varint(_) => 0,
            WireValue::Fixed64(_) => 1,
            WireValue::Len(_) => 2,
            WireValue::Group => 3,
            WireValue::Fixed32(_) => 5,
        }
    }
}

/// One field of a message.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    /// Field number.
    pub number: u32,
    /// Its value.
    pub value: WireValue<'a>,
    /// The whole field as encoded: key, length and value.
    pub raw: &'a [u8],
}

/// The fields of one message, in wire order.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    depth: u32,
}

/// A tag read by [`Fields::tagged`].
enum Tagged<'a> {
    Field(u32, WireValue<'a>),
    EndGroup(u32),
}

impl<'a> Fields<'a> {
    /// The fields of the message `buf`, which starts at byte `base` of the outermost buffer (for error offsets),
    /// at nesting depth 0.
    pub fn new(buf: &'a [u8], base: usize) -> Self {
        Self::at_depth(buf, base, 0)
    }

    /// The fields of a message nested `depth` messages deep (the top-level message is 0).
    pub fn at_depth(buf: &'a [u8], base: usize, depth: u32) -> Self {
        Self { buf, pos: 0, base, depth }
    }

    /// Offset of the next unread byte in the outermost buffer.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn err(&self, what: &'static str) -> WireError {
        WireError { offset: self.offset(), what }
    }

    /// Reads a base-128 varint.
    ///
    /// # Errors
    /// Truncated, or longer than 10 bytes, or a 10th byte above 1 (more than 64 bits).
    pub fn varint(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.err("truncated varint"))?;
            if i == 9 && b > 1 {
                return Err(self.err("varint longer than 64 bits"));
            }
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    /// The next field, or `None` at the end of the message.
    ///
    /// # Errors
    /// A [`WireError`] at the first malformed byte.
    pub fn next_field(&mut self) -> Result<Option<Field<'a>>, WireError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let start = self.pos;
        match self.tagged(self.depth, false)? {
            Tagged::Field(number, value) => Ok(Some(Field { number, value, raw: &self.buf[start..self.pos] })),
            Tagged::EndGroup(_) => Err(self.err("end-group tag without a group")),
        }
    }

    /// Reads one tag and its value at `depth`; a group is skipped whole. Inside a group (`nested`), every field
    /// but the end tag counts against the recursion limit, as prost's `skip_field` counts it.
    fn tagged(&mut self, depth: u32, nested: bool) -> Result<Tagged<'a>, WireError> {
        let key = self.varint()?;
        let key = u32::try_from(key).map_err(|_| self.err("key out of range"))?;
        let number = key >> 3;
        let wire = key & 7;
        if wire > 5 {
            return Err(self.err("unsupported wire type"));
        }
        if number == 0 {
            return Err(self.err("field number 0"));
        }
        if wire == 4 {
            return Ok(Tagged::EndGroup(number));
        }
        if nested && depth >= RECURSION_LIMIT {
            return Err(self.err("recursion limit reached"));
        }
        let value = match wire {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(u64::from_le_bytes(self.fixed::<8>()?)),
            5 => WireValue::Fixed32(u32::from_le_bytes(self.fixed::<4>()?)),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.err("length out of range"))?;
                if self.buf.len() - self.pos < len {
                    return Err(self.err("length beyond the end of the message"));
                }
                let v = &self.buf[self.pos..self.pos + len];
                self.pos += len;
                WireValue::Len(v)
            }
            _ => {
                loop {
                    if self.pos >= self.buf.len() {
                        return Err(self.err("group without an end-group tag"));
                    }
                    match self.tagged(depth + 1, true)? {
                        Tagged::EndGroup(n) if n == number => break,
                        Tagged::EndGroup(_) => return Err(self.err("end-group tag of another group")),
                        Tagged::Field(..) => {}
                    }
                }
                WireValue::Group
            }
        };
        Ok(Tagged::Field(number, value))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let bytes = self.buf.get(self.pos..self.pos + N).ok_or_else(|| self.err("truncated fixed-width field"))?;
        self.pos += N;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Every field of `buf`, or the error.
    fn all(buf: &[u8]) -> Result<Vec<(u32, WireValue<'_>)>, WireError> {
        let mut fields = Fields::new(buf, 0);
        let mut out = Vec::new();
        while let Some(f) = fields.next_field()? {
            out.push((f.number, f.value));
        }
        Ok(out)
    }

    #[test]
    fn reads_each_wire_type_and_the_raw_field() {
        let mut buf = Vec::new();
        varint(1 << 3, &mut buf);
        varint(300, &mut buf);
        varint(2 << 3 | 1, &mut buf);
        buf.extend(7u64.to_le_bytes());
        varint(3 << 3 | 2, &mut buf);
        varint(3, &mut buf);
        buf.extend(b"abc");
        varint(4 << 3 | 5, &mut buf);
        buf.extend(9u32.to_le_bytes());
        varint(5 << 3 | 3, &mut buf);
        varint(6 << 3, &mut buf);
        varint(1, &mut buf);
        varint(5 << 3 | 4, &mut buf);
        let want = vec![
            (1, WireValue::Varint(300)),
            (2, WireValue::Fixed64(7)),
            (3, WireValue::Len(b"abc")),
            (4, WireValue::Fixed32(9)),
            (5, WireValue::Group),
        ];
        assert_eq!(all(&buf).expect("valid"), want);
        let mut fields = Fields::new(&buf, 0);
        let first = fields.next_field().expect("valid").expect("a field");
        assert_eq!(first.raw, &buf[..3]);
    }

    #[test]
    fn refuses_what_prost_refuses() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // 10-byte varint, 10th byte 1
            vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02], // 10th byte 2: over 64 bits
            vec![0x08, 0x80],                                                       // truncated varint
            vec![0x00, 0x01],                                                       // field number 0
            vec![0x0e, 0x01],                                                       // wire type 6
            vec![0x0c],                                                             // end group without a group
            vec![0x0b, 0x14],                                                       // group ended by another tag
            vec![0x0b],                                                             // group never ended
            vec![0x0a, 0x05, 0x01],                                                 // length past the end
            vec![0x09, 0x01, 0x02],                                                 // truncated fixed64
            vec![0x80, 0x80, 0x80, 0x80, 0x10, 0x00],                               // key over u32::MAX
            vec![0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00],                               // key u32::MAX - 7: field 2^29-1
        ];
        for case in cases {
            let prost_ok = prost_accepts(&case);
            assert_eq!(all(&case).is_ok(), prost_ok, "input {case:02x?}");
        }
        // Groups nested to the limit: prost counts each field inside a group one level deeper.
        for levels in [98u32, 99, 100, 101] {
            let mut buf = Vec::new();
            for _ in 0..levels {
                varint(1 << 3 | 3, &mut buf);
            }
            varint(2 << 3, &mut buf);
            varint(0, &mut buf);
            for _ in 0..levels {
                varint(1 << 3 | 4, &mut buf);
            }
            assert_eq!(all(&buf).is_ok(), prost_accepts(&buf), "{levels} nested groups");
        }
    }

    /// A message with no fields: prost skips every field of it, or refuses the input.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Nothing {}

    /// Whether prost decodes `buf` (every field unknown, so skipped).
    fn prost_accepts(buf: &[u8]) -> bool {
        Nothing::decode(buf).is_ok()
    }
}
