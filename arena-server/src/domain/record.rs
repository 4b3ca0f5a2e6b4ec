//! A settled match's record and the hash chain over a Space's records.
//! Each record names who played which version, hashes of what each wrote
//! and of the verdict, the ranks, rating changes, payouts and pairs; its
//! hash covers the previous record's hash, so changing any stored fact of
//! any settled match breaks every later link (`arena verify-log`).

use super::ids::{MatchId, SpaceId};
use sha2::{Digest, Sha256};

/// The stored facts of a settled match that its record covers. `seats` and
/// `pairs` are JSON arrays as PostgreSQL builds them (floats as its
/// shortest round-trip text), so a record reads the same however it is
/// rebuilt.
#[derive(Debug, Clone)]
pub struct MatchRecord {
    pub id: MatchId,
    pub space_id: SpaceId,
    pub space_version: i32,
    pub prompt: String,
    pub reference: Option<String>,
    pub pot: i64,
    pub seats: serde_json::Value,
    pub verdict_sha256: Option<String>,
    pub pairs: serde_json::Value,
}

/// The canonical record text of a match at position `seq` after `prev`.
pub fn compose(parts: &MatchRecord, seq: i64, prev: &str) -> String {
    serde_json::json!({
        "match": parts.id, "space": parts.space_id, "space_version": parts.space_version, "seq": seq, "prev": prev,
        "prompt": parts.prompt, "reference": parts.reference, "pot": parts.pot, "seats": parts.seats,
        "verdict_sha256": parts.verdict_sha256, "pairs": parts.pairs,
    })
    .to_string()
}

/// The hash of a record after the one whose hash is `prev`.
pub fn chain_hash(prev: &str, record: &str) -> String {
    hex::encode(
        Sha256::new().chain_update(prev.as_bytes()).chain_update(b"\n").chain_update(record.as_bytes()).finalize(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_the_previous_link() {
        assert_ne!(chain_hash("", "r"), chain_hash("x", "r"));
        assert_ne!(chain_hash("x", "r"), chain_hash("x", "s"));
    }
}
