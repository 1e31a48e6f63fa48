//! Keyed profile ranks for bottom-k sampling and the sample-size tiers.
//!
//! `rank(id) = SipHash-1-3(key, id bytes)`, treated as an i.i.d. uniform 64-bit number per
//! profile. Taking the k smallest ranks gives a uniform k-subset of the store, and reading it in
//! rank order makes every prefix a uniform subset too, which is what the estimators in
//! `estimate` rely on (estimation.md §0, §6). The hash is implemented here rather than taken from
//! `std` because `DefaultHasher`'s algorithm is not guaranteed across Rust releases, and a sample
//! must be reproducible from (key, snapshot) forever.
//!
//! Ties (probability ≈ N²/2⁶⁵, about 0.1% of stores of 2·10⁸ profiles have one) are broken by
//! comparing the id bytes, so callers sort by `(rank, id)`.
//!
//! Keys and ranks must never reach clients: anyone who knows the key can craft ids that land in
//! or out of the sample. [`RankKey`]'s `Debug` output is therefore redacted.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest store that is sampled whole (exclusive): below one million profiles the estimate
/// reads every profile.
pub const WHOLE_STORE_LIMIT: u64 = 1_000_000;

/// Sample size of the middle tier: the one million lowest ranks.
pub const LOWEST_RANKS_SAMPLE_SIZE: u64 = 1_000_000;

/// Largest store (inclusive) that uses the fixed one-million sample; above it the sample is 5%.
pub const LOWEST_RANKS_LIMIT: u64 = 20_000_000;

/// Denominator of the 5% tier: the sample holds ⌈N / 20⌉ profiles.
const FRACTION_DENOMINATOR: u64 = 20;

/// Names the rule that sized a sample (api.md §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SampleTier {
    /// The store has fewer than one million profiles and all of them are read.
    WholeStore,
    /// The store has one to twenty million profiles and the one million lowest ranks are read.
    LowestMillion,
    /// The store has more than twenty million profiles and the lowest 5% of ranks are read.
    FivePercent,
}

/// Returns the sample size and tier for a store of `store_size` profiles.
///
/// The tiers are Adobe's: the whole store under 1M profiles, the 1M lowest ranks from 1M to 20M,
/// and 5% above 20M. The 5% tier is bottom-k with k = ⌈N/20⌉ rather than Poisson sampling
/// (rank < 0.05·2⁶⁴), so the size is deterministic and the sample stays a rank-ordered prefix.
/// At N = 1,000,000 the middle tier reads the whole store, and just above 20M the 5% tier starts
/// at 1,000,001, so the size never decreases as the store grows.
pub fn sample_size_for(store_size: u64) -> (u64, SampleTier) {
    if store_size < WHOLE_STORE_LIMIT {
        (store_size, SampleTier::WholeStore)
    } else if store_size <= LOWEST_RANKS_LIMIT {
        (LOWEST_RANKS_SAMPLE_SIZE, SampleTier::LowestMillion)
    } else {
        (
            store_size.div_ceil(FRACTION_DENOMINATOR),
            SampleTier::FivePercent,
        )
    }
}

/// Holds the 128-bit secret that keys profile ranks.
///
/// Keeping the key fixed keeps the sample stable from day to day (a profile stays in until it is
/// deleted or outranked); rotating it draws an independent sample.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RankKey {
    k0: u64,
    k1: u64,
}

impl RankKey {
    /// Builds a key from its two 64-bit halves (SipHash's k0 and k1).
    pub const fn new(k0: u64, k1: u64) -> Self {
        Self { k0, k1 }
    }

    /// Builds a key from 16 bytes, read as two little-endian halves as the SipHash paper does.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        let (low, high) = bytes.split_at(8);
        Self::new(le_u64(low), le_u64(high))
    }

    /// Returns the rank of a profile id: SipHash-1-3 of its bytes under this key.
    pub fn rank(&self, profile_id: impl AsRef<[u8]>) -> u64 {
        siphash::<1, 3>(self.k0, self.k1, profile_id.as_ref())
    }
}

impl fmt::Debug for RankKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RankKey(<redacted>)")
    }
}

/// Reads up to eight bytes as a little-endian integer (shorter slices are zero-extended).
fn le_u64(bytes: &[u8]) -> u64 {
    debug_assert!(bytes.len() <= 8);
    bytes
        .iter()
        .rev()
        .fold(0, |word, &byte| (word << 8) | u64::from(byte))
}

/// Computes SipHash-C-D (Aumasson & Bernstein, 2012) of `message` with the key (k0, k1).
///
/// Generic over the round counts so the tests can check the shared code path against `std`'s
/// SipHash-2-4; ranks use 1-3, the variant `std`'s `HashMap` uses for speed.
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, message: &[u8]) -> u64 {
    let mut state = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut blocks = message.chunks_exact(8);
    for block in &mut blocks {
        let word = le_u64(block);
        state[3] ^= word;
        for _ in 0..C {
            sip_round(&mut state);
        }
        state[0] ^= word;
    }
    // The last block carries the message length mod 256 in its top byte.
    let last = ((message.len() as u64) << 56) | le_u64(blocks.remainder());
    state[3] ^= last;
    for _ in 0..C {
        sip_round(&mut state);
    }
    state[0] ^= last;
    state[2] ^= 0xff;
    for _ in 0..D {
        sip_round(&mut state);
    }
    state[0] ^ state[1] ^ state[2] ^ state[3]
}

/// Applies one SipRound to the four-word state.
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference key 00 01 .. 0f used by the published SipHash test vectors.
    fn reference_key() -> RankKey {
        RankKey::from_bytes(std::array::from_fn(|i| i as u8))
    }

    #[test]
    fn siphash_1_3_matches_reference_vectors() {
        // SipHash-1-3 of the messages [], [00], [00 01], .. under key 00..0f, as little-endian
        // bytes: the vectors of the independent `siphasher` crate (its `tests.rs`).
        const VECTORS: [[u8; 8]; 16] = [
            [0xdc, 0xc4, 0x0f, 0x05, 0x58, 0x01, 0xac, 0xab],
            [0x93, 0xca, 0x57, 0x7d, 0xf3, 0x9b, 0xf4, 0xc9],
            [0x4d, 0xd4, 0xc7, 0x4d, 0x02, 0x9b, 0xcb, 0x82],
            [0xfb, 0xf7, 0xdd, 0xe7, 0xb8, 0x0a, 0xf8, 0x8b],
            [0x28, 0x83, 0xd3, 0x88, 0x60, 0x57, 0x75, 0xcf],
            [0x67, 0x3b, 0x53, 0x49, 0x2f, 0xd5, 0xf9, 0xde],
            [0xa7, 0x22, 0x9f, 0xc5, 0x50, 0x2b, 0x0d, 0xc5],
            [0x40, 0x11, 0xb1, 0x9b, 0x98, 0x7d, 0x92, 0xd3],
            [0x8e, 0x9a, 0x29, 0x8d, 0x11, 0x95, 0x90, 0x36],
            [0xe4, 0x3d, 0x06, 0x6c, 0xb3, 0x8e, 0xa4, 0x25],
            [0x7f, 0x09, 0xff, 0x92, 0xee, 0x85, 0xde, 0x79],
            [0x52, 0xc3, 0x4d, 0xf9, 0xc1, 0x18, 0xc1, 0x70],
            [0xa2, 0xd9, 0xb4, 0x57, 0xb1, 0x84, 0xa3, 0x78],
            [0xa7, 0xff, 0x29, 0x12, 0x0c, 0x76, 0x6f, 0x30],
            [0x34, 0x5d, 0xf9, 0xc0, 0x11, 0xa1, 0x5a, 0x60],
            [0x56, 0x99, 0x51, 0x2a, 0x6d, 0xd8, 0x20, 0xd3],
        ];
        let key = reference_key();
        let message: Vec<u8> = (0..16).collect();
        for (len, expected) in VECTORS.iter().enumerate() {
            assert_eq!(
                key.rank(&message[..len]),
                u64::from_le_bytes(*expected),
                "length {len}"
            );
        }
    }

    #[test]
    #[allow(deprecated)] // std's SipHasher is deprecated but stable, and it is SipHash-2-4
    fn siphash_2_4_matches_std() {
        use std::hash::{Hasher, SipHasher};
        let message: Vec<u8> = (0..64u8)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        for (k0, k1) in [
            (0, 0),
            (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908),
            (u64::MAX, 42),
        ] {
            for len in 0..message.len() {
                let mut hasher = SipHasher::new_with_keys(k0, k1);
                hasher.write(&message[..len]);
                assert_eq!(
                    siphash::<2, 4>(k0, k1, &message[..len]),
                    hasher.finish(),
                    "length {len}"
                );
            }
        }
    }

    #[test]
    fn rank_depends_on_key_and_id_only() {
        let key = RankKey::new(1, 2);
        assert_eq!(key.rank("profile-1"), key.rank(b"profile-1"));
        assert_ne!(key.rank("profile-1"), key.rank("profile-2"));
        assert_ne!(key.rank("profile-1"), RankKey::new(1, 3).rank("profile-1"));
    }

    #[test]
    fn ranks_are_close_to_uniform() {
        // Bottom-k is a uniform sample only if ranks behave like uniform draws: 64 equal buckets of
        // 64,000 sequential ids must each hold 1,000 ± 5σ (σ ≈ 31).
        let key = RankKey::new(0x5eed, 0xc0ffee);
        let mut buckets = [0u32; 64];
        for id in 0..64_000u32 {
            buckets[(key.rank(format!("id-{id}")) >> 58) as usize] += 1;
        }
        for (bucket, &count) in buckets.iter().enumerate() {
            assert!(
                (845..=1155).contains(&count),
                "bucket {bucket} holds {count}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let rendered = format!("{:?}", RankKey::new(0xdead_beef, 0xfeed));
        assert_eq!(rendered, "RankKey(<redacted>)");
    }

    #[test]
    fn tiers_switch_at_their_boundaries() {
        use SampleTier::*;
        assert_eq!(sample_size_for(0), (0, WholeStore));
        assert_eq!(sample_size_for(1), (1, WholeStore));
        assert_eq!(sample_size_for(999_999), (999_999, WholeStore));
        assert_eq!(sample_size_for(1_000_000), (1_000_000, LowestMillion));
        assert_eq!(sample_size_for(1_000_001), (1_000_000, LowestMillion));
        assert_eq!(sample_size_for(20_000_000), (1_000_000, LowestMillion));
        assert_eq!(sample_size_for(20_000_001), (1_000_001, FivePercent));
        assert_eq!(sample_size_for(20_000_020), (1_000_001, FivePercent));
        assert_eq!(sample_size_for(20_000_021), (1_000_002, FivePercent));
        assert_eq!(sample_size_for(200_000_000), (10_000_000, FivePercent));
        assert_eq!(
            sample_size_for(u64::MAX),
            (u64::MAX.div_ceil(20), FivePercent)
        );
    }

    #[test]
    fn sample_size_never_exceeds_store_and_never_shrinks_as_the_store_grows() {
        let mut stores = vec![0, 1, 5, 500_000, 1 << 40];
        for boundary in [WHOLE_STORE_LIMIT, LOWEST_RANKS_LIMIT] {
            stores.extend(boundary - 3..=boundary + 3);
        }
        stores.sort_unstable();
        let mut previous = 0;
        for store in stores {
            let (size, _) = sample_size_for(store);
            assert!(size <= store, "store {store} sample {size}");
            assert!(size >= previous, "store {store} sample {size} < {previous}");
            previous = size;
        }
    }
}
