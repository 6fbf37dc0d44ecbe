//! Trace-ID hashing for probabilistic sampling, shared by the collector's tail `probabilistic` policy and the
//! agent's head sampler so that both keep exactly the same traces at the same percentage.
//!
//! The function is the OpenTelemetry Collector's (`processor/tailsamplingprocessor/internal/sampling/
//! probabilistic.go`): 64-bit FNV-1a over the salt bytes followed by the 16 trace-ID bytes; a trace is sampled
//! when the hash is `<=` `u64::MAX × percentage / 100`. The default salt is `"default-hash-seed"`.

/// The salt the OpenTelemetry Collector uses when `hash_salt` is empty.
pub const DEFAULT_HASH_SALT: &str = "default-hash-seed";

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `salt` followed by `trace_id`.
pub fn trace_id_hash(salt: &str, trace_id: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in salt.as_bytes().iter().chain(trace_id) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The hash threshold for `percentage` (0–100; clamped): hashes `<=` it are sampled. 0 % gives 0 (only a hash of
/// exactly 0 would pass, as upstream), 100 % gives `u64::MAX`.
pub fn threshold(percentage: f64) -> u64 {
    let ratio = if percentage.is_nan() { 0.0 } else { (percentage / 100.0).clamp(0.0, 1.0) };
    // u64::MAX × ratio without losing the low bits to f64: ratio as a 53-bit fixed-point fraction.
    let scaled = (ratio * (1u64 << 53) as f64).round() as u128;
    ((u128::from(u64::MAX) * scaled) >> 53).min(u128::from(u64::MAX)) as u64
}

/// Whether `trace_id` is kept at `percentage` with `salt` (empty salt means [`DEFAULT_HASH_SALT`]).
pub fn sampled(salt: &str, trace_id: &[u8], percentage: f64) -> bool {
    let salt = if salt.is_empty() { DEFAULT_HASH_SALT } else { salt };
    trace_id_hash(salt, trace_id) <= threshold(percentage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // FNV-1a 64 test vectors (http://www.isthe.com/chongo/tech/comp/fnv/): "" and "a".
        assert_eq!(trace_id_hash("", b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(trace_id_hash("a", b""), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(trace_id_hash("", b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn thresholds_cover_the_range() {
        assert_eq!(threshold(100.0), u64::MAX);
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(50.0), u64::MAX / 2);
        assert_eq!(threshold(250.0), u64::MAX);
    }

    #[test]
    fn percentage_is_respected_over_many_ids() {
        let kept = (0u32..20_000)
            .filter(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_be_bytes());
                id[8..12].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_le_bytes());
                sampled("", &id, 10.0)
            })
            .count();
        assert!((1_700..2_300).contains(&kept), "{kept} of 20000 at 10 %");
    }
}
