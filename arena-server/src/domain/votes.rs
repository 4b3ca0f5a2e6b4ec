//! Battles and human votes: the rules, at no I/O.
//!
//! A battle shows two answers of a settled match (or, as a gold check, one
//! answer against another match's answer to a different prompt) without
//! any name. Its ballot is a server-signed, single-use token bound to the
//! voter, the match, the order shown and the issue time ([`Ballot`]). A
//! vote is stored either way; it counts when no [`Reason`] stands against
//! it and its voter is neither flagged ([`flag_voters`]) nor unreliable on
//! gold ballots ([`Standing::reliable`]). Counted votes on a match make a
//! human pair ([`human_label`]) and feed the judge's audit ([`audit`]).

use super::DomainError;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};

/// What a voter may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// Answer A is better.
    A,
    /// Answer B is better.
    B,
    Tie,
    /// Both are bad: a tie for the pair, said differently.
    Bad,
    Skip,
}

impl Choice {
    pub const ALL: [Choice; 5] = [Choice::A, Choice::B, Choice::Tie, Choice::Bad, Choice::Skip];

    pub fn as_str(self) -> &'static str {
        match self {
            Choice::A => "a",
            Choice::B => "b",
            Choice::Tie => "tie",
            Choice::Bad => "bad",
            Choice::Skip => "skip",
        }
    }

    pub fn parse(text: &str) -> Result<Choice, DomainError> {
        Choice::ALL
            .into_iter()
            .find(|c| c.as_str() == text)
            .ok_or_else(|| DomainError::new("choice", format!("choice {text:?} is not one of a, b, tie, bad, skip")))
    }

    /// The choice as a call on the two answers shown (A first); a skip
    /// makes no call.
    pub fn call(self) -> Option<Call> {
        match self {
            Choice::A => Some(Call::First),
            Choice::B => Some(Call::Second),
            Choice::Tie | Choice::Bad => Some(Call::Tie),
            Choice::Skip => None,
        }
    }
}

/// A call on an ordered pair of answers: the first is better, the second,
/// or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    First,
    Second,
    Tie,
}

impl Call {
    pub fn decisive(self) -> bool {
        self != Call::Tie
    }

    pub fn flipped(self) -> Call {
        match self {
            Call::First => Call::Second,
            Call::Second => Call::First,
            Call::Tie => Call::Tie,
        }
    }

    fn index(self) -> usize {
        match self {
            Call::First => 0,
            Call::Second => 1,
            Call::Tie => 2,
        }
    }
}

/// Why a stored vote does not count (`votes.reason`); a flagged or
/// unreliable voter's votes do not count either, decided when votes are
/// aggregated ([`Standing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The voter skipped.
    Skipped,
    /// Cast faster than the reading floor.
    TooFast,
    /// Over the voter's or the address's daily cap.
    OverCap,
    /// An answer names one of the match's agents or their owners.
    Identity,
    /// A gold check: it rates the voter, never a match.
    Gold,
}

impl Reason {
    pub const ALL: [Reason; 5] = [Reason::Skipped, Reason::TooFast, Reason::OverCap, Reason::Identity, Reason::Gold];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Skipped => "skipped",
            Reason::TooFast => "too_fast",
            Reason::OverCap => "over_cap",
            Reason::Identity => "identity",
            Reason::Gold => "gold",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// What a report says is wrong with a battle's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportReason {
    Abuse,
    PersonalData,
}

impl ReportReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportReason::Abuse => "abuse",
            ReportReason::PersonalData => "personal_data",
        }
    }

    pub fn parse(text: &str) -> Result<ReportReason, DomainError> {
        match text {
            "abuse" => Ok(ReportReason::Abuse),
            "personal_data" => Ok(ReportReason::PersonalData),
            other => Err(DomainError::new("reason", format!("reason {other:?} is not one of abuse, personal_data"))),
        }
    }
}

// ---------------------------------------------------------------- ballots

/// Seconds a ballot stays valid.
pub const BALLOT_TTL_S: i64 = 30 * 60;
/// The longest ballot token read (checked before any work).
pub const MAX_BALLOT_CHARS: usize = 1024;

/// What a ballot binds: one voter, one match, the order the two answers
/// were shown in, the gold decoy if any, the issue time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ballot {
    /// The vote's id once cast: a ballot is used once.
    pub id: uuid::Uuid,
    pub voter: uuid::Uuid,
    #[serde(rename = "match")]
    pub match_id: uuid::Uuid,
    /// The slots shown as A and B. In a gold ballot `slot_b` is unused:
    /// B is the decoy.
    pub a: i16,
    pub b: i16,
    /// A gold ballot's decoy: another match's answer, to another prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoy: Option<(uuid::Uuid, i16)>,
    /// A gold ballot shows the known-better answer as B when true.
    #[serde(default)]
    pub gold_second: bool,
    /// Milliseconds since the Unix epoch.
    pub issued_ms: i64,
}

/// Why a ballot token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BallotError {
    #[error("the ballot is not one this server signed")]
    Forged,
    #[error("the ballot expired; take a new battle")]
    Expired,
    #[error("the ballot was issued to another voter")]
    NotYours,
}

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 under a 32-byte key (zero-padded to the block, as HMAC
/// pads any shorter key).
fn keyed(key: &[u8; 32]) -> HmacSha256 {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    <HmacSha256 as hmac::digest::KeyInit>::new(hmac::digest::generic_array::GenericArray::from_slice(&block))
}

/// `data` XOR a keystream of HMAC-SHA256(key, "arena-ballot" ‖ nonce ‖
/// block counter) blocks: a PRF in counter mode.
fn keystream_xor(key: &[u8; 32], nonce: &[u8], data: &[u8]) -> Vec<u8> {
    data.chunks(32)
        .enumerate()
        .flat_map(|(i, chunk)| {
            let mut mac = keyed(key);
            mac.update(b"arena-ballot");
            mac.update(nonce);
            mac.update(&(i as u64).to_be_bytes());
            let block = mac.finalize().into_bytes();
            chunk.iter().zip(block).map(|(d, k)| d ^ k).collect::<Vec<u8>>()
        })
        .collect()
}

impl Ballot {
    /// The token: a random nonce and the claims encrypted under `key` (a
    /// keystream of HMAC-SHA256 blocks over the nonce and a counter), as
    /// hex, a dot, and the HMAC-SHA256 of that hex (encrypt, then MAC). The
    /// voter holds it but cannot read it: a gold check and the order of the
    /// slots stay hidden.
    pub fn seal(&self, key: &[u8; 32]) -> String {
        use rand::RngCore;
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        let mut body = nonce.to_vec();
        body.extend(keystream_xor(key, &nonce, &serde_json::to_vec(self).unwrap_or_default()));
        let body = hex::encode(body);
        let mut mac = keyed(key);
        mac.update(body.as_bytes());
        format!("{body}.{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// The claims of a token this server sealed for `voter`, not older
    /// than [`BALLOT_TTL_S`] at `now_ms`. The MAC is checked in constant
    /// time before anything is decrypted.
    pub fn open(token: &str, key: &[u8; 32], voter: uuid::Uuid, now_ms: i64) -> Result<Ballot, BallotError> {
        if token.len() > MAX_BALLOT_CHARS {
            return Err(BallotError::Forged);
        }
        let (body, tag) = token.split_once('.').ok_or(BallotError::Forged)?;
        let tag = hex::decode(tag).map_err(|_| BallotError::Forged)?;
        let mut mac = keyed(key);
        mac.update(body.as_bytes());
        mac.verify_slice(&tag).map_err(|_| BallotError::Forged)?;
        let raw = hex::decode(body).map_err(|_| BallotError::Forged)?;
        if raw.len() < 16 {
            return Err(BallotError::Forged);
        }
        let (nonce, cipher) = raw.split_at(16);
        let claims: Ballot =
            serde_json::from_slice(&keystream_xor(key, nonce, cipher)).map_err(|_| BallotError::Forged)?;
        if claims.voter != voter {
            return Err(BallotError::NotYours);
        }
        if now_ms - claims.issued_ms > BALLOT_TTL_S * 1000 || claims.issued_ms > now_ms + 5_000 {
            return Err(BallotError::Expired);
        }
        Ok(claims)
    }

    /// The voter's choice as a call on the match's slots in ascending
    /// order (lower slot first), for a real (not gold) ballot.
    pub fn slot_call(&self, choice: Choice) -> Option<Call> {
        let call = choice.call()?;
        Some(if self.a < self.b { call } else { call.flipped() })
    }
}

/// Whether a gold ballot's answer was right: the known-better answer
/// chosen (a tie, "both bad" and a skip are not).
pub fn gold_right(ballot: &Ballot, choice: Choice) -> bool {
    matches!((ballot.gold_second, choice), (false, Choice::A) | (true, Choice::B))
}

// ---------------------------------------------------------------- counting rules

/// The least milliseconds a vote on texts of `words` words takes to count.
pub fn reading_floor_ms(words: usize, base_ms: u64, per_word_ms: u64) -> i64 {
    (base_ms + per_word_ms * words as u64).min(60_000) as i64
}

/// Words in `text` (runs of non-space).
pub fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Text as the identity-word rule compares it: NFKC, zero-width and
/// invisible characters removed, common Cyrillic and Greek look-alikes
/// mapped to Latin, lower case; then its alphanumeric tokens, with runs of
/// single characters also joined ("c a l c", "c.a.l.c" → "calc").
pub fn identity_tokens(text: &str) -> Vec<String> {
    use unicode_normalization::UnicodeNormalization;
    let clean: String = text
        .nfkc()
        .filter(
            |c| !matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}' | '\u{034F}'),
        )
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'а' | 'α' => 'a',
            'в' | 'β' => 'b',
            'с' | 'ϲ' => 'c',
            'е' | 'ε' => 'e',
            'һ' => 'h',
            'і' | 'ι' | 'ӏ' => 'i',
            'ј' => 'j',
            'к' | 'κ' => 'k',
            'м' => 'm',
            'о' | 'ο' | 'σ' => 'o',
            'р' | 'ρ' => 'p',
            'ѕ' => 's',
            'т' | 'τ' => 't',
            'у' | 'γ' => 'y',
            'х' | 'χ' => 'x',
            'ν' => 'v',
            'ω' => 'w',
            'ɡ' => 'g',
            'ⅼ' => 'l',
            c => c,
        })
        .collect();
    let tokens: Vec<&str> = clean.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).collect();
    let mut out: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
    let mut run = String::new();
    let mut run_len = 0;
    for t in tokens.iter().chain(std::iter::once(&"  ")) {
        if t.chars().count() == 1 {
            run.push_str(t);
            run_len += 1;
        } else {
            if run_len >= 3 {
                out.push(std::mem::take(&mut run));
            }
            run.clear();
            run_len = 0;
        }
    }
    out
}

/// The first of `names` (agents' and owners' names) that `text` carries,
/// compared as [`identity_tokens`]: a name's tokens in a row, or the name
/// squashed into one token ("calc-bot" as "calcbot").
pub fn identity_leak<'n>(text: &str, names: &'n [String]) -> Option<&'n str> {
    let tokens = identity_tokens(text);
    names.iter().map(String::as_str).find(|name| {
        let parts = identity_tokens(name);
        if parts.is_empty() {
            return false;
        }
        let squashed: String = parts.concat();
        tokens.contains(&squashed) || tokens.windows(parts.len()).any(|w| w == parts.as_slice())
    })
}

/// A voter's record on gold ballots, and the outlier test's flag.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Standing {
    pub gold_total: i32,
    pub gold_right: i32,
    pub flagged: bool,
}

/// Gold ballots a voter answers before their accuracy can make them
/// unreliable.
pub const GOLD_MIN: i32 = 3;
/// The least reliability (Laplace-smoothed gold accuracy) that counts.
pub const MIN_RELIABILITY: f64 = 0.55;

impl Standing {
    /// The voter's gold accuracy with a uniform prior: (right + 1) / (total + 2).
    pub fn reliability(&self) -> f64 {
        (self.gold_right as f64 + 1.0) / (self.gold_total as f64 + 2.0)
    }

    /// Whether the voter's votes count: not flagged, and reliable enough
    /// on gold once [`GOLD_MIN`] gold ballots are answered.
    pub fn counts(&self) -> bool {
        !self.flagged && (self.gold_total < GOLD_MIN || self.reliability() >= MIN_RELIABILITY)
    }
}

// ---------------------------------------------------------------- human pairs

/// P(p > ½) for p ~ Beta(1 + wins, 1 + losses): the posterior that the
/// answer with `wins` is the better one, under a uniform prior. With
/// integer parameters it is P(Binomial(wins + losses + 1, ½) ≤ wins).
pub fn posterior_better(wins: u32, losses: u32) -> f64 {
    let n = wins + losses + 1;
    let mut total = 0.0;
    let mut c = 1.0f64; // C(n, 0)
    for k in 0..=wins {
        if k > 0 {
            c = c * (n - k + 1) as f64 / k as f64;
        }
        total += c;
    }
    total / 2f64.powi(n as i32)
}

/// The tier of a human pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// At least one decisive vote.
    HumanRaw,
    /// At least [`VERIFIED_VOTES`] decisive votes and a posterior of at
    /// least [`VERIFIED_POSTERIOR`].
    HumanVerified,
}

pub const VERIFIED_VOTES: u32 = 3;
pub const VERIFIED_POSTERIOR: f64 = 0.8;

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::HumanRaw => "human_raw",
            Tier::HumanVerified => "human_verified",
        }
    }
}

/// What the counted votes on one match's two slots say.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HumanLabel {
    pub chosen: i16,
    pub rejected: i16,
    pub votes_chosen: u32,
    pub votes_rejected: u32,
    pub votes_tied: u32,
    pub posterior: f64,
    pub tier: Tier,
    /// The voters' mean reliability.
    pub reliability: f64,
}

/// The human pair counted votes make on slots `(x, y)` (x < y); `calls`
/// are each counted vote's call on (x, y) with its voter's reliability.
/// None when no vote was decisive or the decisive votes split evenly (ties
/// make no pair).
pub fn human_label(x: i16, y: i16, calls: &[(Call, f64)]) -> Option<HumanLabel> {
    let count = |c: Call| calls.iter().filter(|(k, _)| *k == c).count() as u32;
    let (first, second, tied) = (count(Call::First), count(Call::Second), count(Call::Tie));
    if first == second {
        return None;
    }
    let (chosen, rejected, wins, losses) = if first > second { (x, y, first, second) } else { (y, x, second, first) };
    let posterior = posterior_better(wins, losses);
    let tier = if wins + losses >= VERIFIED_VOTES && posterior >= VERIFIED_POSTERIOR {
        Tier::HumanVerified
    } else {
        Tier::HumanRaw
    };
    let reliability = calls.iter().map(|(_, r)| r).sum::<f64>() / calls.len() as f64;
    Some(HumanLabel {
        chosen,
        rejected,
        votes_chosen: wins,
        votes_rejected: losses,
        votes_tied: tied,
        posterior,
        tier,
        reliability,
    })
}

/// Whether a match's hash puts it in the audit share: `pct` per cent of
/// voted matches, fixed by the match id, never used to train the judge.
pub fn in_audit_share(match_id: uuid::Uuid, pct: u8) -> bool {
    use sha2::Digest;
    let h = Sha256::digest(format!("arena-vote-audit-share\n{match_id}").as_bytes());
    (u16::from_be_bytes([h[0], h[1]]) % 100) < pct as u16
}

/// The audit share, in per cent of voted matches.
pub const AUDIT_SHARE_PCT: u8 = 30;

// ---------------------------------------------------------------- the audit

/// One counted vote as the audit reads it: the match, the two agents
/// (lower slot first), the voter's call and the judge's on them (who voted
/// does not enter the audit).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditVote {
    pub match_id: uuid::Uuid,
    pub agents: (String, String),
    pub human: Call,
    pub judge: Call,
}

/// A share with its Wilson 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    pub k: u64,
    pub n: u64,
    pub p: f64,
    pub lo: f64,
    pub hi: f64,
}

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

impl Rate {
    /// k of n with the Wilson score interval (n = 0: p 0, interval [0, 1]).
    pub fn wilson(k: u64, n: u64) -> Rate {
        if n == 0 {
            return Rate { k, n, p: 0.0, lo: 0.0, hi: 1.0 };
        }
        let (nf, p) = (n as f64, k as f64 / n as f64);
        let z2 = Z95 * Z95;
        let denom = 1.0 + z2 / nf;
        let center = (p + z2 / (2.0 * nf)) / denom;
        let half = Z95 / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
        Rate { k, n, p, lo: (center - half).max(0.0), hi: (center + half).min(1.0) }
    }
}

/// One agent's win rate among the audited votes by people and by the judge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentGap {
    pub agent: String,
    /// Votes where people were decisive, and the share this agent won.
    pub human: Rate,
    /// Votes where the judge was decisive, and the share it gave the agent.
    pub judge: Rate,
    /// judge − human, in points.
    pub gap: f64,
}

/// A match where people's majority and the judge disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disagreement {
    pub match_id: uuid::Uuid,
    pub human: Call,
    pub judge: Call,
    pub votes: u32,
}

/// The judge against people on a Space's audit share.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Audit {
    pub votes: u64,
    pub matches: u64,
    /// Counted votes needed for a ±5-point interval on the agreement, at
    /// the agreement within its interval nearest to one half.
    pub needed: u64,
    /// Judge–human agreement on every vote (three outcomes).
    pub agreement: Rate,
    /// … on votes where both were decisive.
    pub agreement_decisive: Rate,
    /// Human–human agreement over pairs of votes on one match.
    pub human_human: Rate,
    pub human_human_decisive: Rate,
    /// Cohen's κ between the judge and people (None: undefined).
    pub kappa: Option<f64>,
    /// Voted matches the judge decided.
    pub coverage: Rate,
    /// Rows: people's call (first, second, tie); columns: the judge's.
    pub confusion: [[u64; 3]; 3],
    pub agents: Vec<AgentGap>,
    pub disagreements: Vec<Disagreement>,
}

/// What a Space page's "judge vs people" card shows, from counts alone:
/// the 3×3 confusion (rows people, columns the judge) and the agreeing and
/// total pairs of votes on one match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub votes: u64,
    pub agreement: Rate,
    pub human_human: Rate,
    pub kappa: Option<f64>,
}

/// The card's figures from the confusion and the human–human pair counts
/// (the same definitions as [`audit`]).
pub fn summary(confusion: &[[u64; 3]; 3], hh_agree: u64, hh_total: u64) -> Summary {
    let votes: u64 = confusion.iter().flatten().sum();
    let agree: u64 = (0..3).map(|i| confusion[i][i]).sum();
    Summary {
        votes,
        agreement: Rate::wilson(agree, votes),
        human_human: Rate::wilson(hh_agree, hh_total),
        kappa: kappa(confusion),
    }
}

/// Counted votes needed for a ±`half` interval around `p` at 95%.
pub fn needed_for(p: f64, half: f64) -> u64 {
    (Z95 * Z95 * p * (1.0 - p) / (half * half)).ceil() as u64
}

/// Cohen's κ of a square confusion matrix (None when chance agreement is 1
/// or the matrix is empty).
pub fn kappa(m: &[[u64; 3]; 3]) -> Option<f64> {
    let n: u64 = m.iter().flatten().sum();
    if n == 0 {
        return None;
    }
    let nf = n as f64;
    let po = (0..3).map(|i| m[i][i]).sum::<u64>() as f64 / nf;
    let pe = (0..3)
        .map(|i| {
            let row: u64 = m[i].iter().sum();
            let col: u64 = (0..3).map(|r| m[r][i]).sum();
            row as f64 * col as f64
        })
        .sum::<f64>()
        / (nf * nf);
    if (1.0 - pe).abs() < 1e-12 { None } else { Some((po - pe) / (1.0 - pe)) }
}

/// The audit of `votes` (counted votes of the audit share).
pub fn audit(votes: &[AuditVote]) -> Audit {
    let mut confusion = [[0u64; 3]; 3];
    for v in votes {
        confusion[v.human.index()][v.judge.index()] += 1;
    }
    let agree = votes.iter().filter(|v| v.human == v.judge).count() as u64;
    let decisive: Vec<&AuditVote> = votes.iter().filter(|v| v.human.decisive() && v.judge.decisive()).collect();
    let agree_decisive = decisive.iter().filter(|v| v.human == v.judge).count() as u64;
    let agreement = Rate::wilson(agree, votes.len() as u64);

    let mut by_match: BTreeMap<uuid::Uuid, Vec<&AuditVote>> = BTreeMap::new();
    for v in votes {
        by_match.entry(v.match_id).or_default().push(v);
    }
    let (mut hh, mut hh_n, mut hhd, mut hhd_n) = (0u64, 0u64, 0u64, 0u64);
    let mut covered = 0u64;
    let mut disagreements = Vec::new();
    for (id, vs) in &by_match {
        for i in 0..vs.len() {
            for j in i + 1..vs.len() {
                hh_n += 1;
                hh += u64::from(vs[i].human == vs[j].human);
                if vs[i].human.decisive() && vs[j].human.decisive() {
                    hhd_n += 1;
                    hhd += u64::from(vs[i].human == vs[j].human);
                }
            }
        }
        let judge = vs[0].judge;
        covered += u64::from(judge.decisive());
        let first = vs.iter().filter(|v| v.human == Call::First).count();
        let second = vs.iter().filter(|v| v.human == Call::Second).count();
        let human = match first.cmp(&second) {
            std::cmp::Ordering::Greater => Call::First,
            std::cmp::Ordering::Less => Call::Second,
            std::cmp::Ordering::Equal => Call::Tie,
        };
        if human.decisive() && judge.decisive() && human != judge {
            disagreements.push(Disagreement { match_id: *id, human, judge, votes: vs.len() as u32 });
        }
    }

    let mut agents: BTreeMap<&str, [u64; 4]> = BTreeMap::new(); // human won, human n, judge won, judge n
    for v in votes {
        for (me, first) in [(&v.agents.0, true), (&v.agents.1, false)] {
            let e = agents.entry(me.as_str()).or_default();
            let mine = if first { Call::First } else { Call::Second };
            if v.human.decisive() {
                e[1] += 1;
                e[0] += u64::from(v.human == mine);
            }
            if v.judge.decisive() {
                e[3] += 1;
                e[2] += u64::from(v.judge == mine);
            }
        }
    }
    let agents = agents
        .into_iter()
        .map(|(agent, [hw, hn, jw, jn])| {
            let (human, judge) = (Rate::wilson(hw, hn), Rate::wilson(jw, jn));
            AgentGap { agent: agent.to_owned(), gap: 100.0 * (judge.p - human.p), human, judge }
        })
        .collect();
    Audit {
        votes: votes.len() as u64,
        matches: by_match.len() as u64,
        // The least favourable agreement the interval allows: a run of
        // agreement (3 of 3) does not prove a narrow interval is near.
        needed: needed_for(
            if agreement.lo <= 0.5 && agreement.hi >= 0.5 {
                0.5
            } else if agreement.hi < 0.5 {
                agreement.hi
            } else {
                agreement.lo
            },
            0.05,
        ),
        agreement,
        agreement_decisive: Rate::wilson(agree_decisive, decisive.len() as u64),
        human_human: Rate::wilson(hh, hh_n),
        human_human_decisive: Rate::wilson(hhd, hhd_n),
        kappa: kappa(&confusion),
        coverage: Rate::wilson(covered, by_match.len() as u64),
        confusion,
        agents,
        disagreements,
    }
}

// ---------------------------------------------------------------- the outlier test

/// One vote as the outlier test reads it (any share, skips left out).
#[derive(Debug, Clone, PartialEq)]
pub struct VoteFact {
    pub voter: uuid::Uuid,
    pub match_id: uuid::Uuid,
    /// The two agents, lower slot first.
    pub agents: (uuid::Uuid, uuid::Uuid),
    pub human: Call,
    /// The judge's call on the same two answers.
    pub judge: Call,
}

/// A voter the outlier test flags, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VoterFlag {
    pub voter: uuid::Uuid,
    /// The agent the voter favours.
    pub agent: uuid::Uuid,
    /// The voter's decisive votes in battles with the agent, and how many
    /// went to it.
    pub battles: u32,
    pub for_agent: u32,
    /// The log-likelihood ratio of "always picks this agent" against
    /// "votes like the crowd".
    pub llr: f64,
}

/// The false-flag rate the test aims at per voter (before the correction
/// for the number of agents the voter met).
pub const FLAG_ALPHA: f64 = 1e-2;
/// How often the "favours one agent" model lets the favourite lose.
const RIGGER_SLIP: f64 = 0.05;

/// P(X ≥ k) for X ~ Binomial(n, p).
pub fn binomial_tail(k: u32, n: u32, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    // Sum the terms from k to n in log space.
    let ln_choose = |n: u32, k: u32| -> f64 { (1..=k).map(|i| ((n - k + i) as f64).ln() - (i as f64).ln()).sum() };
    (k..=n).map(|i| (ln_choose(n, i) + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()).exp()).sum::<f64>().min(1.0)
}

/// Flags voters who favour one agent whatever its answers. For each
/// decisive vote, the crowd's probability that the first answer wins is
/// the other voters' decisive votes on the match plus the judge's call as
/// one more vote, with a uniform prior: (first + 1) / (decisive + 2). For
/// each voter and agent, the votes in battles with the agent are scored by
/// the log-likelihood ratio of "picks this agent (but for a 5% slip)"
/// against "picks as the crowd would"; a ratio above ln(1/α) plus the log
/// of the agents the voter met (Bonferroni) flags the voter. Honest
/// disagreement spreads over agents and follows the answers; a rigger's
/// piles onto one agent, good answers or bad.
pub fn flag_voters(votes: &[VoteFact]) -> Vec<VoterFlag> {
    // A rigger's votes lean the crowd they are measured against: measure
    // again without the flagged until the set stops growing.
    let mut flagged: std::collections::HashSet<uuid::Uuid> = std::collections::HashSet::new();
    let mut flags = Vec::new();
    for _ in 0..4 {
        flags = flag_round(votes, &flagged);
        let now: std::collections::HashSet<uuid::Uuid> = flags.iter().map(|f| f.voter).collect();
        if now.is_subset(&flagged) {
            break;
        }
        flagged.extend(now);
    }
    flags
}

/// One round of [`flag_voters`], the crowd counted without `excluded`.
fn flag_round(votes: &[VoteFact], excluded: &std::collections::HashSet<uuid::Uuid>) -> Vec<VoterFlag> {
    let mut by_match: HashMap<uuid::Uuid, (u32, u32)> = HashMap::new();
    for v in votes.iter().filter(|v| !excluded.contains(&v.voter)) {
        let e = by_match.entry(v.match_id).or_default();
        match v.human {
            Call::First => e.0 += 1,
            Call::Second => e.1 += 1,
            Call::Tie => {}
        }
    }
    // voter → agent → (battles, votes for it, llr)
    let mut tally: BTreeMap<uuid::Uuid, BTreeMap<uuid::Uuid, (u32, u32, f64)>> = BTreeMap::new();
    for v in votes {
        if !v.human.decisive() {
            continue;
        }
        let (mut first, mut second) = by_match.get(&v.match_id).copied().unwrap_or_default();
        if !excluded.contains(&v.voter) {
            match v.human {
                Call::First => first -= 1,
                _ => second -= 1,
            }
        }
        match v.judge {
            Call::First => first += 1,
            Call::Second => second += 1,
            Call::Tie => {}
        }
        let p_first = (first as f64 + 1.0) / ((first + second) as f64 + 2.0);
        for (agent, mine) in [(v.agents.0, Call::First), (v.agents.1, Call::Second)] {
            let crowd = if mine == Call::First { p_first } else { 1.0 - p_first };
            let picked = v.human == mine;
            let llr = if picked { ((1.0 - RIGGER_SLIP) / crowd).ln() } else { (RIGGER_SLIP / (1.0 - crowd)).ln() };
            let e = tally.entry(v.voter).or_default().entry(agent).or_default();
            e.0 += 1;
            e.1 += u32::from(picked);
            e.2 += llr;
        }
    }
    let mut flags = Vec::new();
    for (voter, agents) in tally {
        let threshold = (1.0 / FLAG_ALPHA).ln() + (agents.len().max(1) as f64).ln();
        let worst = agents.iter().max_by(|x, y| x.1.2.total_cmp(&y.1.2)).map(|(a, e)| (*a, *e));
        if let Some((agent, (battles, for_agent, llr))) = worst
            && llr > threshold
        {
            flags.push(VoterFlag { voter, agent, battles, for_agent, llr });
        }
    }
    flags
}

// ---------------------------------------------------------------- the rigging simulation

/// What a rigging simulation found (`arena lab vote-sim` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct RigReport {
    pub honest: usize,
    pub riggers: usize,
    pub votes: usize,
    pub flagged_riggers: usize,
    pub flagged_honest: usize,
    pub recall: f64,
    pub precision: f64,
    /// The favoured agent's human win rate: honest voters only, every
    /// voter unfiltered, and after the filter.
    pub win_rate_honest: f64,
    pub win_rate_unfiltered: f64,
    pub win_rate_filtered: f64,
}

/// Simulates `honest` voters (a noisy oracle: the known-better answer
/// 80%, the other 15%, a tie 5%) and `riggers` who always pick one agent
/// when it plays and vote honestly otherwise, each casting
/// `votes_per_voter` votes on matches between `agents` agents of spread
/// strengths; the judge is an oracle right 85% of the time. Then flags
/// with [`flag_voters`] and measures the favoured agent's win rate.
pub fn simulate_rigging(
    seed: u64,
    honest: usize,
    riggers: usize,
    votes_per_voter: usize,
    agents: usize,
    matches: usize,
) -> RigReport {
    use rand::{Rng, SeedableRng, seq::SliceRandom};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<uuid::Uuid> = (0..agents).map(|i| uuid::Uuid::from_u128(0xA000 + i as u128)).collect();
    let strength: Vec<f64> = (0..agents).map(|i| (i as f64 - (agents as f64 - 1.0) / 2.0) * 0.5).collect();
    let favoured = agents / 2;
    // Each match: two agents and which of them gave the better answer.
    let games: Vec<(usize, usize, bool, Call)> = (0..matches)
        .map(|_| {
            let x = rng.random_range(0..agents);
            let mut y = rng.random_range(0..agents - 1);
            if y >= x {
                y += 1;
            }
            let (x, y) = (x.min(y), x.max(y));
            let p_first = 1.0 / (1.0 + (strength[y] - strength[x]).exp());
            let first_better = rng.random::<f64>() < p_first;
            let r: f64 = rng.random();
            let right = if first_better { Call::First } else { Call::Second };
            let judge = if r < 0.85 {
                right
            } else if r < 0.95 {
                right.flipped()
            } else {
                Call::Tie
            };
            (x, y, first_better, judge)
        })
        .collect();
    let voters: Vec<uuid::Uuid> =
        (0..honest + riggers).map(|i| uuid::Uuid::from_u128(0xB000_0000 + i as u128)).collect();
    let mut facts = Vec::new();
    let mut order: Vec<usize> = (0..matches).collect();
    for (vi, voter) in voters.iter().enumerate() {
        let rigger = vi >= honest;
        order.shuffle(&mut rng);
        for &m in order.iter().take(votes_per_voter.min(matches)) {
            let (x, y, first_better, judge) = games[m];
            let right = if first_better { Call::First } else { Call::Second };
            let human = if rigger && (x == favoured || y == favoured) {
                if x == favoured { Call::First } else { Call::Second }
            } else {
                let r: f64 = rng.random();
                if r < 0.80 {
                    right
                } else if r < 0.95 {
                    right.flipped()
                } else {
                    Call::Tie
                }
            };
            facts.push(VoteFact {
                voter: *voter,
                match_id: uuid::Uuid::from_u128(0xC000_0000 + m as u128),
                agents: (ids[x], ids[y]),
                human,
                judge,
            });
        }
    }
    let flags = flag_voters(&facts);
    let flagged: std::collections::HashSet<uuid::Uuid> = flags.iter().map(|f| f.voter).collect();
    let is_rigger = |v: &uuid::Uuid| voters[honest..].contains(v);
    let flagged_riggers = flagged.iter().filter(|v| is_rigger(v)).count();
    let flagged_honest = flagged.len() - flagged_riggers;
    let win_rate = |keep: &dyn Fn(&VoteFact) -> bool| {
        let (mut won, mut n) = (0u64, 0u64);
        for f in facts.iter().filter(|f| keep(f) && f.human.decisive()) {
            let mine = if f.agents.0 == ids[favoured] {
                Call::First
            } else if f.agents.1 == ids[favoured] {
                Call::Second
            } else {
                continue;
            };
            n += 1;
            won += u64::from(f.human == mine);
        }
        if n == 0 { 0.0 } else { won as f64 / n as f64 }
    };
    RigReport {
        honest,
        riggers,
        votes: facts.len(),
        flagged_riggers,
        flagged_honest,
        recall: if riggers == 0 { 1.0 } else { flagged_riggers as f64 / riggers as f64 },
        precision: if flagged.is_empty() { 1.0 } else { flagged_riggers as f64 / flagged.len() as f64 },
        win_rate_honest: win_rate(&|f| !is_rigger(&f.voter)),
        win_rate_unfiltered: win_rate(&|_| true),
        win_rate_filtered: win_rate(&|f| !flagged.contains(&f.voter)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballots_open_only_as_sealed_for_their_voter_and_in_time() {
        let key = [7u8; 32];
        let voter = uuid::Uuid::new_v4();
        let b = Ballot {
            id: uuid::Uuid::new_v4(),
            voter,
            match_id: uuid::Uuid::new_v4(),
            a: 1,
            b: 0,
            decoy: None,
            gold_second: false,
            issued_ms: 1_000_000,
        };
        let token = b.seal(&key);
        assert_eq!(Ballot::open(&token, &key, voter, 1_000_500), Ok(b.clone()));
        assert_eq!(Ballot::open(&token, &[8u8; 32], voter, 1_000_500), Err(BallotError::Forged));
        assert_eq!(Ballot::open(&token, &key, uuid::Uuid::new_v4(), 1_000_500), Err(BallotError::NotYours));
        assert_eq!(Ballot::open(&token, &key, voter, 1_000_000 + BALLOT_TTL_S * 1000 + 1), Err(BallotError::Expired));
        // The claims cannot be read without the key, and any changed byte
        // breaks the MAC.
        let (body, tag) = token.split_once('.').unwrap();
        assert!(!String::from_utf8_lossy(&hex::decode(body).unwrap()).contains("issued_ms"), "the claims are sealed");
        let mut flipped = hex::decode(body).unwrap();
        flipped[20] ^= 1;
        assert_eq!(
            Ballot::open(&format!("{}.{tag}", hex::encode(flipped)), &key, voter, 1_000_500),
            Err(BallotError::Forged)
        );
        assert_ne!(b.seal(&key), token, "a fresh nonce each time");
        assert_eq!(Ballot::open("x", &key, voter, 0), Err(BallotError::Forged));
        assert_eq!(Ballot::open(&"a".repeat(5000), &key, voter, 0), Err(BallotError::Forged));
        // A call is on the slots in ascending order whatever the order shown.
        assert_eq!(b.slot_call(Choice::A), Some(Call::Second));
        assert_eq!(b.slot_call(Choice::Bad), Some(Call::Tie));
        assert_eq!(b.slot_call(Choice::Skip), None);
    }

    #[test]
    fn identity_words_are_found_through_disguises_and_only_as_words() {
        let names = vec!["calc-bot".to_owned(), "ada".to_owned()];
        for leak in [
            "I am calc-bot, trust me.",
            "CALC BOT says hi",
            "calcbot here",
            "c a l c b o t",
            "c.a.l.c.b.o.t wins",
            "ｃａｌｃ－ｂｏｔ",
            "cal\u{200B}c-bot",
            "Vote for Аda!",
            "A.D.A. made me",
        ] {
            assert!(identity_leak(leak, &names).is_some(), "{leak}");
        }
        for clean in ["Adapt the calculator", "a bot can calculate", "Canada is large", "ad hoc"] {
            assert_eq!(identity_leak(clean, &names), None, "{clean}");
        }
    }

    #[test]
    fn standing_counts_until_gold_says_otherwise() {
        assert!(Standing::default().counts());
        assert!(Standing { gold_total: 2, gold_right: 0, flagged: false }.counts(), "too few golds to judge");
        assert!(!Standing { gold_total: 4, gold_right: 1, flagged: false }.counts());
        assert!(Standing { gold_total: 4, gold_right: 3, flagged: false }.counts());
        assert!(!Standing { gold_total: 9, gold_right: 9, flagged: true }.counts());
    }

    #[test]
    fn the_posterior_is_the_beta_tail() {
        // Checked against the Beta CDF by numeric integration.
        for (w, l) in [(0u32, 0u32), (1, 0), (3, 0), (2, 1), (5, 2), (10, 4), (0, 3)] {
            let (a, b) = (1.0 + w as f64, 1.0 + l as f64);
            let steps = 200_000;
            let mut above = 0.0;
            let mut total = 0.0;
            for i in 0..steps {
                let x = (i as f64 + 0.5) / steps as f64;
                let d = x.powf(a - 1.0) * (1.0 - x).powf(b - 1.0);
                total += d;
                if x > 0.5 {
                    above += d;
                }
            }
            assert!((posterior_better(w, l) - above / total).abs() < 1e-6, "{w}-{l}");
        }
        assert_eq!(posterior_better(3, 0), 15.0 / 16.0);
    }

    #[test]
    fn human_labels_follow_the_majority_and_their_tiers() {
        let r = 0.9;
        assert_eq!(human_label(0, 1, &[(Call::Tie, r)]), None, "a tie makes no pair");
        assert_eq!(human_label(0, 1, &[(Call::First, r), (Call::Second, r)]), None);
        let one = human_label(0, 1, &[(Call::Second, r), (Call::Tie, r)]).unwrap();
        assert_eq!((one.chosen, one.rejected, one.tier, one.votes_tied), (1, 0, Tier::HumanRaw, 1));
        let three = human_label(0, 1, &[(Call::First, r); 3]).unwrap();
        assert_eq!((three.chosen, three.tier), (0, Tier::HumanVerified));
        let split = human_label(0, 1, &[(Call::First, r), (Call::First, r), (Call::Second, r)]).unwrap();
        assert_eq!(split.tier, Tier::HumanRaw, "2–1 has posterior 11/16 < 0.8");
    }

    /// An independent reference: the textbook example of Cohen's κ (two
    /// raters, 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 → κ =
    /// 0.4) and Wilson intervals written out from the formula.
    #[test]
    fn audit_figures_equal_a_reference_computation() {
        let m = uuid::Uuid::from_u128;
        let mut votes = Vec::new();
        let mut id = 0u128;
        let mut push = |human: Call, judge: Call, n: usize, votes: &mut Vec<AuditVote>| {
            for _ in 0..n {
                id += 1;
                votes.push(AuditVote { match_id: m(id), agents: ("x".into(), "y".into()), human, judge });
            }
        };
        push(Call::First, Call::First, 20, &mut votes);
        push(Call::First, Call::Second, 5, &mut votes);
        push(Call::Second, Call::First, 10, &mut votes);
        push(Call::Second, Call::Second, 15, &mut votes);
        let a = audit(&votes);
        assert!((a.kappa.unwrap() - 0.4).abs() < 1e-12, "{:?}", a.kappa);
        assert_eq!(a.confusion, [[20, 5, 0], [10, 15, 0], [0, 0, 0]]);
        assert_eq!((a.agreement.k, a.agreement.n), (35, 50));
        // Wilson by hand: p = 0.7, n = 50.
        let (p, n, z) = (0.7f64, 50f64, Z95);
        let center = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
        let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
        assert!((a.agreement.lo - (center - half)).abs() < 1e-12 && (a.agreement.hi - (center + half)).abs() < 1e-12);
        assert!((a.agreement.lo - 0.5625).abs() < 5e-4 && (a.agreement.hi - 0.8090).abs() < 5e-4, "{:?}", a.agreement);
        // At the interval's end nearest one half: 0.5625 → 379 votes.
        assert_eq!(a.needed, (z * z * a.agreement.lo * (1.0 - a.agreement.lo) / 0.0025).ceil() as u64);
        assert_eq!(a.needed, 379);
        // Every match has one voter: no human–human pairs; the judge decided all.
        assert_eq!(a.human_human.n, 0);
        assert_eq!((a.coverage.k, a.coverage.n), (50, 50));
        assert_eq!(a.disagreements.len(), 15);
        // x won 30 of 50 by the judge and 25 of 50 by people.
        let x = &a.agents[0];
        assert_eq!((x.agent.as_str(), x.human.k, x.human.n, x.judge.k, x.judge.n), ("x", 25, 50, 30, 50));
        assert!((x.gap - 10.0).abs() < 1e-9);

        // Two voters on one match, with ties: human–human pairs counted.
        let tied = vec![
            AuditVote { match_id: m(1), agents: ("x".into(), "y".into()), human: Call::Tie, judge: Call::Tie },
            AuditVote { match_id: m(1), agents: ("x".into(), "y".into()), human: Call::Tie, judge: Call::Tie },
            AuditVote { match_id: m(1), agents: ("x".into(), "y".into()), human: Call::First, judge: Call::Tie },
        ];
        let t = audit(&tied);
        assert_eq!((t.human_human.k, t.human_human.n), (1, 3));
        assert_eq!(t.human_human_decisive.n, 0);
        assert_eq!((t.agreement_decisive.n, t.coverage.k, t.coverage.n), (0, 0, 1));
        assert_eq!(t.kappa, Some(0.0), "the judge always says tie: κ = 0");
        assert!(t.disagreements.is_empty());
    }

    #[test]
    fn the_binomial_tail_sums_the_terms() {
        assert!((binomial_tail(3, 3, 0.5) - 0.125).abs() < 1e-12);
        assert!((binomial_tail(2, 3, 0.5) - 0.5).abs() < 1e-12);
        assert!((binomial_tail(1, 4, 0.25) - (1.0 - 0.75f64.powi(4))).abs() < 1e-12);
        assert_eq!(binomial_tail(0, 4, 0.3), 1.0);
    }

    /// The rigging target over several seeds: 100 honest voters, 10
    /// who always favour one agent, 100 votes each over 8 agents; after the filter the agent's human win
    /// rate moves by less than 2 points and the riggers are flagged with
    /// recall ≥ 80% at precision ≥ 90%.
    #[test]
    fn riggers_are_flagged_and_their_agent_stays_where_honest_voters_put_it() {
        for seed in 1..=5 {
            let r = simulate_rigging(seed, 100, 10, 100, 8, 600);
            assert!(r.recall >= 0.8 && r.precision >= 0.9, "seed {seed}: {r:?}");
            assert!((r.win_rate_filtered - r.win_rate_honest).abs() < 0.02, "seed {seed}: {r:?}");
            assert!(r.win_rate_unfiltered - r.win_rate_honest > 0.02, "seed {seed}: the riggers moved it: {r:?}");
        }
        for seed in 1..=3 {
            let none = simulate_rigging(seed, 110, 0, 100, 8, 600);
            assert!(none.flagged_honest <= 1, "{none:?}");
        }
    }
}
