//! Feeds arbitrary bytes to the trace-block decoder (versions 1 and 2, with and without a shared dictionary).
//! Any panic, overflow or runaway allocation is a bug: corrupt blocks must decode to an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_collector::codec::{self, SharedDict};

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode(data);
    // The same bytes as stored dictionary entries (split at 0xff), which readers rebuild before decoding blocks.
    let _ = codec::decode_dictionary(data.split(|&b| b == 0xff));
    // A dictionary with a few entries under the ID the block names, so version-2 string references resolve.
    if let Ok(Some((id, _))) = codec::dictionary_of(data) {
        let mut dict = SharedDict::with_id(id);
        let seed = skein_collector::model::Span::minimal(
            skein_collector::model::TraceId([1; 16]),
            skein_collector::model::SpanId([1; 8]),
            "op",
            skein_collector::model::service_resource("svc"),
        );
        let _ = codec::encode_with_dict(std::slice::from_ref(&seed), &mut dict);
        let _ = codec::decode_with(data, &dict);
    }
});
