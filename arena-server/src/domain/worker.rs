//! Open runtime workers: what a worker registers, what it is assigned,
//! what it returns (the signed rollout record), the checks a record gets
//! without the model, how often a worker is audited, what it is paid and
//! what it stands to lose.
//!
//! The server decides everything a worker could cherry-pick: the prompt as
//! token ids, the base model and adapter by sha256, the sampling settings
//! and the seed (fixed per match and seat, so a job leased again after an
//! abandoned lease must give the same tokens). A worker returns token ids,
//! never text.

use super::{DomainError, MatchId};
use agent_runtime::Finish;
use agent_runtime::sampling::SamplingParams;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Jobs a worker may ask for in one lease.
pub const MAX_BATCH: i32 = 64;
/// A new worker's first audited matches (its calibration): every one is
/// audited until this many passed in a row.
pub const PROBATION: i32 = 8;
/// The longest a lease call waits for work.
pub const MAX_WAIT_S: u64 = 20;

/// Where a worker generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    pub fn parse(raw: &str) -> Result<Device, DomainError> {
        match raw {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            _ => Err(DomainError::new("device", format!("unknown device {raw:?}: cpu or cuda"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// Tokens per second no honest machine of this class beats for one
    /// sequence: a record answered faster than this was not generated.
    pub fn max_tokens_per_s(self) -> f64 {
        match self {
            Device::Cpu => 2_000.0,
            Device::Cuda => 20_000.0,
        }
    }
}

/// What a worker says about itself when it registers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub name: String,
    /// The ed25519 public key its records are signed with, hex.
    pub public_key: String,
    pub model_sha256: String,
    pub runtime_version: String,
    /// The numeric recipe of its kernels (`arena model bench` prints it).
    pub recipe: String,
    pub device: String,
    pub max_batch: i32,
    /// Credits locked while the worker works, returned after it leaves and
    /// its escrow window has passed.
    pub stake: i64,
}

/// A checked registration.
#[derive(Debug, Clone)]
pub struct NewWorker {
    pub name: String,
    pub public_key: [u8; 32],
    pub model_sha256: String,
    pub runtime_version: String,
    pub recipe: String,
    pub device: Device,
    pub max_batch: i32,
    pub stake: i64,
}

impl Registration {
    /// Checks every field; `min_stake` is the operator's floor.
    pub fn check(self, min_stake: i64) -> Result<NewWorker, DomainError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(DomainError::new("name", "a worker's name is 1 to 64 printable characters"));
        }
        let key = hex::decode(self.public_key.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| DomainError::new("public_key", "an ed25519 public key is 32 bytes, hex-encoded"))?;
        VerifyingKey::from_bytes(&key).map_err(|_| DomainError::new("public_key", "not a valid ed25519 public key"))?;
        if !is_sha256(&self.model_sha256) {
            return Err(DomainError::new("model_sha256", "a sha256 is 64 lowercase hex digits"));
        }
        for (field, value) in [("runtime_version", &self.runtime_version), ("recipe", &self.recipe)] {
            if value.is_empty() || value.len() > 64 || !value.chars().all(|c| c.is_ascii_graphic()) {
                return Err(DomainError::new(field, format!("{field} is 1 to 64 visible ASCII characters")));
            }
        }
        if !(1..=MAX_BATCH).contains(&self.max_batch) {
            return Err(DomainError::new("max_batch", format!("max_batch is 1 to {MAX_BATCH}")));
        }
        if self.stake < min_stake {
            return Err(DomainError::new("stake", format!("a worker stakes at least {min_stake} credits")));
        }
        Ok(NewWorker {
            name,
            public_key: key,
            model_sha256: self.model_sha256,
            runtime_version: self.runtime_version,
            recipe: self.recipe,
            device: Device::parse(&self.device)?,
            max_batch: self.max_batch,
            stake: self.stake,
        })
    }
}

pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The identity of a computation: everything that decides its tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub base_sha256: String,
    pub adapter_sha256: Option<String>,
    /// The chat template's sha256 (the prompt was rendered with it).
    pub template_sha256: String,
    /// The reference runtime's version and recipe: what the exact tier
    /// replays with.
    pub runtime_version: String,
    pub recipe: String,
    /// Sampling settings, the seed included.
    pub params: SamplingParams,
    /// sha256 of the prompt's token ids (little-endian u32s).
    pub prompt_sha256: String,
}

/// A job as the server hands it out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub job_id: Uuid,
    pub match_id: MatchId,
    pub slot: i16,
    /// How many times this seat was leased before (its seed is the same).
    pub attempt: i32,
    pub prompt_tokens: Vec<u32>,
    pub identity: Identity,
}

/// What a worker returns for one job. Its sha256 (see [`RolloutRecord::digest`])
/// is what the worker signs and what the match record keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRecord {
    pub lease_id: Uuid,
    pub job_id: Uuid,
    pub match_id: MatchId,
    pub slot: i16,
    pub attempt: i32,
    pub identity: Identity,
    /// The completion's token ids, without the token that ended the turn.
    pub tokens: Vec<u32>,
    /// Each drawn token's log-probability under the unmodified
    /// distribution (logits / temperature), the end token's last.
    pub logprobs: Vec<f32>,
    pub finish: Finish,
    pub end_token: Option<u32>,
    /// Self-reported generation time (informational).
    pub elapsed_ms: u64,
}

impl RolloutRecord {
    /// sha256 over a version tag and the record's JSON (fields in
    /// declaration order; floats written to round-trip).
    pub fn digest(&self) -> [u8; 32] {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::new().chain_update(b"arena-rollout-v1\n").chain_update(&json).finalize().into()
    }

    pub fn sign(&self, key: &SigningKey) -> String {
        hex::encode(key.sign(&self.digest()).to_bytes())
    }

    /// Whether `signature` (hex) signs this record under `public_key`.
    pub fn verify(&self, public_key: &[u8], signature: &str) -> Result<(), String> {
        let key = <[u8; 32]>::try_from(public_key)
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
            .ok_or("the worker's public key is unusable")?;
        let sig = hex::decode(signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or("the signature is not 64 bytes of hex")?;
        key.verify(&self.digest(), &sig).map_err(|_| "the signature does not match the record".to_owned())
    }
}

/// sha256 of token ids as little-endian u32s.
pub fn tokens_sha256(tokens: &[u32]) -> String {
    let mut h = Sha256::new();
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// The checks a record gets at no model cost, against its assignment:
/// ids and identity equal, token ids in the vocabulary, the length within
/// the limit, log-probabilities one per drawn token, finite and ≤ 0, the
/// finish reason consistent with the tokens. The first problem, named.
pub fn check_record(
    assignment: &Assignment,
    lease_id: Uuid,
    record: &RolloutRecord,
    vocab: usize,
    end_of_turn: &[u32],
) -> Result<(), String> {
    if record.lease_id != lease_id {
        return Err("the record names another lease".to_owned());
    }
    if (record.job_id, record.match_id, record.slot, record.attempt)
        != (assignment.job_id, assignment.match_id, assignment.slot, assignment.attempt)
    {
        return Err("the record's job, match, seat or attempt is not the assignment's".to_owned());
    }
    if record.identity != assignment.identity {
        return Err("the record's computation (model, adapter, template, recipe, sampling, seed or prompt) is not the one assigned".to_owned());
    }
    let max = assignment.identity.params.max_new_tokens;
    if record.tokens.len() > max {
        return Err(format!("{} tokens; the limit is {max}", record.tokens.len()));
    }
    if let Some(bad) = record.tokens.iter().chain(&record.end_token).find(|&&t| t as usize >= vocab) {
        return Err(format!("token id {bad} is outside the vocabulary of {vocab}"));
    }
    let ended = record.finish == Finish::EndOfTurn;
    if record.logprobs.len() != record.tokens.len() + usize::from(ended) {
        return Err(format!(
            "{} log-probabilities for {} drawn tokens",
            record.logprobs.len(),
            record.tokens.len() + usize::from(ended)
        ));
    }
    if let Some(bad) = record.logprobs.iter().find(|v| !v.is_finite() || **v > 0.0) {
        return Err(format!("log-probability {bad} is not finite and ≤ 0"));
    }
    match (record.finish, record.end_token) {
        (Finish::EndOfTurn, Some(t)) if end_of_turn.contains(&t) => {}
        (Finish::EndOfTurn, _) => return Err("an end of turn needs a token that ends a turn".to_owned()),
        (_, Some(_)) => return Err("an end token without an end of turn".to_owned()),
        (Finish::Length, None) if record.tokens.len() != max => {
            return Err(format!("finish \"length\" after {} of {max} tokens", record.tokens.len()));
        }
        (Finish::Stop, None) if assignment.identity.params.stop.is_empty() => {
            return Err("finish \"stop\" without stop strings".to_owned());
        }
        _ => {}
    }
    if let Some(t) = record.tokens.iter().find(|t| end_of_turn.contains(t)) {
        return Err(format!("token {t} ends a turn but the completion goes on"));
    }
    Ok(())
}

/// The share of a worker's matches audited: all of them during probation
/// and after any failure (the streak restarts), then `PROBATION / streak`,
/// never below `floor`.
pub fn audit_rate(clean_streak: i32, floor: f64) -> f64 {
    if clean_streak < PROBATION { 1.0 } else { (f64::from(PROBATION) / f64::from(clean_streak)).max(floor).min(1.0) }
}

/// The audit draw for a match: sha256(secret ‖ match id) as a number in
/// [0, 1). A match is audited when its draw is below the rate; anyone with
/// the revealed secret can recompute it.
pub fn audit_draw(secret: &[u8], match_id: MatchId) -> f64 {
    let digest = Sha256::new().chain_update(secret).chain_update(match_id.0.as_bytes()).finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// What a worker earns for `tokens` generated tokens at `per_ktoken`
/// credits per thousand (rounded down; a lease's tokens are paid together).
pub fn pay_for(tokens: i64, per_ktoken: i64) -> i64 {
    tokens.saturating_mul(per_ktoken) / 1000
}

/// The money side of the rules, from the operator's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Economics {
    pub pay_per_ktoken: i64,
    /// Per cent of the stake a failed audit takes.
    pub slash_pct: i64,
    pub audit_floor: f64,
}

impl Economics {
    /// What a failed audit takes from a worker with `stake` (escrow comes on top).
    pub fn slash(&self, stake: i64) -> i64 {
        stake.saturating_mul(self.slash_pct) / 100
    }

    /// The most tokens one job may have for this worker so that cheating
    /// on it does not pay: audit rate × slash ≥ 10 × the job's pay (the
    /// escrow at risk is left out, so the bound holds with none).
    pub fn max_job_tokens(&self, stake: i64, clean_streak: i32) -> i64 {
        let at_risk = audit_rate(clean_streak, self.audit_floor) * self.slash(stake) as f64;
        let max_pay = at_risk / 10.0;
        if self.pay_per_ktoken == 0 {
            return i64::MAX;
        }
        (max_pay * 1000.0 / self.pay_per_ktoken as f64).floor() as i64
    }
}

/// A worker's way of playing, for the economics simulation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Strategy {
    /// Generates every job as assigned.
    Honest,
    /// Returns made-up answers without generating (saves all compute).
    Lazy,
    /// Cheats on a share of its jobs (to favour an agent, say), honest otherwise.
    Biased { share: f64 },
    /// Honest through its probation, then lazy at the falling rate.
    Sybil,
}

/// What one simulated worker's life gives its owner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub jobs: u64,
    pub caught: u64,
    /// Credits released to the owner, minus what was slashed, minus the
    /// compute spent (honest generation costs `cost_share` of its pay).
    pub profit: f64,
}

/// Simulates `jobs` matches of a worker playing `strategy` with `stake`,
/// each paying `pay` credits (at most the cap for the stake), with the
/// arena's audit rate, slash and escrow (pay held for `escrow_jobs` jobs).
/// A caught worker's stake falls below the minimum, so it leases no more:
/// the rest of its stake comes back and it registers again with a fresh
/// one (bans only delay it; they cost it nothing here). A cheated job brings
/// its cheater `bribe` credits besides its pay.
#[allow(clippy::too_many_arguments)]
pub fn simulate(
    strategy: Strategy,
    econ: &Economics,
    stake: i64,
    pay: f64,
    cost_share: f64,
    bribe: f64,
    escrow_jobs: usize,
    jobs: u64,
    seed: u64,
) -> Outcome {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Outcome { jobs: 0, caught: 0, profit: 0.0 };
    let mut streak = 0i32;
    let mut escrow: std::collections::VecDeque<f64> = std::collections::VecDeque::new();
    let mut stake_left = stake as f64;
    out.profit -= stake as f64; // locked now, returned when it leaves unslashed
    while out.jobs < jobs {
        out.jobs += 1;
        let rate = audit_rate(streak, econ.audit_floor);
        let cheats = match strategy {
            Strategy::Honest => false,
            Strategy::Lazy => true,
            Strategy::Biased { share } => rng.random::<f64>() < share,
            Strategy::Sybil => streak >= PROBATION,
        };
        if !cheats {
            out.profit -= cost_share * pay;
        }
        let audited = rng.random::<f64>() < rate;
        if cheats && audited {
            // Escrow forfeited, a slash, and (for the Sybil) a new identity.
            out.caught += 1;
            escrow.clear();
            stake_left -= (stake as f64 * econ.slash_pct as f64 / 100.0).min(stake_left);
            streak = 0;
            // Below the minimum stake it leases nothing more: what is left
            // comes back and a fresh identity stakes again.
            out.profit += stake_left;
            out.profit -= stake as f64;
            stake_left = stake as f64;
            continue;
        }
        if audited {
            streak += 1;
        }
        if cheats {
            out.profit += bribe;
        }
        escrow.push_back(pay);
        if escrow.len() > escrow_jobs {
            out.profit += escrow.pop_front().unwrap_or(0.0);
        }
    }
    // It leaves: the escrow and what is left of the stake come back.
    out.profit += escrow.iter().sum::<f64>() + stake_left;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RolloutRecord {
        RolloutRecord {
            lease_id: Uuid::from_u128(1),
            job_id: Uuid::from_u128(2),
            match_id: MatchId(Uuid::from_u128(3)),
            slot: 0,
            attempt: 0,
            identity: Identity {
                base_sha256: "a".repeat(64),
                adapter_sha256: None,
                template_sha256: "b".repeat(64),
                runtime_version: "0.1.0".into(),
                recipe: "q4q8-i16act-avx2-v2".into(),
                params: SamplingParams { max_new_tokens: 4, ..Default::default() },
                prompt_sha256: tokens_sha256(&[1, 2, 3]),
            },
            tokens: vec![5, 6],
            logprobs: vec![-0.1, -2.5, -0.01],
            finish: Finish::EndOfTurn,
            end_token: Some(2),
            elapsed_ms: 10,
        }
    }

    #[test]
    fn a_signed_record_verifies_and_any_change_breaks_it() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let r = record();
        let sig = r.sign(&key);
        let public = key.verifying_key().to_bytes();
        assert_eq!(r.verify(&public, &sig), Ok(()));
        // Through JSON and back: the same digest (floats round-trip).
        let back: RolloutRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.verify(&public, &sig), Ok(()));
        let mut edited = r.clone();
        edited.tokens[1] = 7;
        assert!(edited.verify(&public, &sig).is_err());
        let mut edited = r.clone();
        edited.logprobs[0] = -0.100_000_01;
        assert!(edited.verify(&public, &sig).is_err());
        let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key().to_bytes();
        assert!(r.verify(&other, &sig).is_err());
        assert!(r.verify(&public, "00").is_err());
    }

    #[test]
    fn cheap_checks_name_what_is_wrong() {
        let r = record();
        let a = Assignment {
            job_id: r.job_id,
            match_id: r.match_id,
            slot: 0,
            attempt: 0,
            prompt_tokens: vec![1, 2, 3],
            identity: r.identity.clone(),
        };
        let eot = [2u32];
        assert_eq!(check_record(&a, r.lease_id, &r, 100, &eot), Ok(()));
        let bad = |f: &dyn Fn(&mut RolloutRecord)| {
            let mut r = record();
            f(&mut r);
            check_record(&a, r.lease_id, &r, 100, &eot).unwrap_err()
        };
        assert!(bad(&|r| r.identity.params.seed = 9).contains("not the one assigned"));
        assert!(bad(&|r| r.identity.params.temperature = 1.0).contains("not the one assigned"));
        assert!(bad(&|r| r.tokens[0] = 100).contains("vocabulary"));
        assert!(bad(&|r| r.logprobs.pop().map(|_| ()).unwrap_or(())).contains("log-probabilities"));
        assert!(bad(&|r| r.logprobs[0] = 0.5).contains("≤ 0"));
        assert!(bad(&|r| r.end_token = Some(3)).contains("ends a turn"));
        assert!(bad(&|r| r.tokens = vec![5, 6, 7, 8, 9]).contains("limit"));
        assert!(
            bad(&|r| {
                r.finish = Finish::Length;
                r.end_token = None;
                r.logprobs.pop();
            })
            .contains("length")
        );
        assert!(bad(&|r| r.tokens[0] = 2).contains("goes on"));
        assert!(bad(&|r| r.slot = 1).contains("seat"));
        assert!(check_record(&a, Uuid::from_u128(9), &r, 100, &eot).unwrap_err().contains("lease"));
    }

    #[test]
    fn audits_fall_from_all_to_the_floor_and_draws_are_uniform() {
        assert_eq!(audit_rate(0, 0.05), 1.0);
        assert_eq!(audit_rate(PROBATION - 1, 0.05), 1.0);
        assert!(audit_rate(PROBATION * 2, 0.05) == 0.5);
        assert_eq!(audit_rate(100_000, 0.05), 0.05);
        let secret = b"s3cret";
        let n = 20_000;
        let below = (0..n).filter(|i| audit_draw(secret, MatchId(Uuid::from_u128(*i))) < 0.05).count();
        let share = below as f64 / n as f64;
        assert!((0.04..0.06).contains(&share), "{share}");
        assert_ne!(audit_draw(secret, MatchId(Uuid::from_u128(1))), audit_draw(b"other", MatchId(Uuid::from_u128(1))));
    }

    #[test]
    fn the_job_size_cap_keeps_cheating_unprofitable() {
        let e = Economics { pay_per_ktoken: 10, slash_pct: 50, audit_floor: 0.05 };
        for (stake, streak) in [(500, 0), (500, 1000), (5_000, 100), (100_000, 10)] {
            let tokens = e.max_job_tokens(stake, streak);
            let pay = pay_for(tokens, e.pay_per_ktoken) as f64;
            let rate = audit_rate(streak, e.audit_floor);
            assert!(rate * e.slash(stake) as f64 >= 10.0 * pay, "stake {stake}, streak {streak}: {tokens} tokens");
        }
        assert!(e.max_job_tokens(500, 1000) >= 1, "a minimal stake still takes work");
    }

    #[test]
    fn every_cheating_strategy_loses_money_and_honesty_earns() {
        let e = Economics { pay_per_ktoken: 10, slash_pct: 50, audit_floor: 0.05 };
        let stake = 500;
        // The biggest job the cap allows a worker at the floor.
        let pay = pay_for(e.max_job_tokens(stake, 10_000), e.pay_per_ktoken) as f64;
        assert!(pay >= 1.0);
        let run = |s: Strategy, bribe: f64| {
            let total: f64 = (0..20).map(|seed| simulate(s, &e, stake, pay, 0.5, bribe, 50, 5_000, seed).profit).sum();
            total / 20.0
        };
        assert!(run(Strategy::Honest, 0.0) > 0.0, "honest work pays");
        for s in [Strategy::Lazy, Strategy::Biased { share: 0.2 }, Strategy::Biased { share: 1.0 }, Strategy::Sybil] {
            // A cheated job's bribe as large as its pay.
            assert!(run(s, pay) < 0.0, "{s:?} profits: {}", run(s, pay));
        }
    }
}
