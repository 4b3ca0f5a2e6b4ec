//! Battles, votes, voters and human pairs (`domain::votes` holds the rules).

use crate::domain::votes::{
    self, AuditVote, Ballot, Call, Choice, HumanLabel, Reason, ReportReason, Standing, VoteFact, VoterFlag,
};
use crate::domain::{MatchId, SpaceId, UserId};
use sqlx::{PgConnection, PgPool, Row};

/// The key that signs ballots, made on first use and shared by every
/// process through the database.
pub async fn ballot_key(pool: &PgPool) -> Result<[u8; 32], sqlx::Error> {
    use rand::RngCore;
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    sqlx::query("insert into ballot_keys (id, key) values (1, $1) on conflict (id) do nothing")
        .bind(&fresh[..])
        .execute(pool)
        .await?;
    let key: Vec<u8> = sqlx::query_scalar("select key from ballot_keys where id = 1").fetch_one(pool).await?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&key[..32]);
    Ok(out)
}

/// A Space people vote in, as a battle card names it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VotingSpace {
    pub id: SpaceId,
    pub slug: String,
    pub name: String,
    pub criterion: String,
    pub designer_id: UserId,
    pub designer_votes: bool,
}

/// The Spaces whose current version opens votes (a paused Space's settled
/// matches still take votes).
pub async fn voting_spaces(pool: &PgPool) -> Result<Vec<VotingSpace>, sqlx::Error> {
    sqlx::query_as(
        "select s.id, s.slug, s.slug as name, coalesce(v.vote_criterion, '') as criterion, s.owner_id as designer_id,
                v.designer_votes
         from spaces s join space_versions v on v.space_id = s.id and v.version = s.current_version
         where v.votes_open
         order by s.slug",
    )
    .fetch_all(pool)
    .await
}

/// One answer a battle shows.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Answer {
    pub match_id: MatchId,
    pub slot: i16,
    pub text: String,
}

/// A battle the server picked: the match, its prompt, the two answers in
/// the order shown, and the gold decoy if it is a check.
#[derive(Debug, Clone)]
pub struct Battle {
    pub space: VotingSpace,
    pub match_id: MatchId,
    pub prompt: String,
    pub a: Answer,
    pub b: Answer,
    /// A gold check: which side is the known-better one (false: A).
    pub gold: Option<bool>,
    /// The names an answer must not carry (agents and owners).
    pub names: Vec<String>,
}

/// How the server chooses: a share of gold checks (`gold_share`, the
/// operator's `arena.vote_gold_pct`), a uniform share (the unbiased audit)
/// and the rest active (close or tied verdicts, the least voted).
pub const UNIFORM_SHARE: f64 = 0.45;
/// The settled matches a pick looks among, newest first, per Space.
const WINDOW: i64 = 5000;

/// The candidate matches for `voter` in `space`: settled, in the recent
/// window, none of the voter's agents, not voted on by the voter, two
/// different non-empty answers.
const CANDIDATES: &str = "
    with recent as (
        select m.id, m.prompt, m.settled_at from matches m
        where m.space_id = $1 and m.status = 'settled'
        order by m.created_at desc limit $3
    )
    select r.id, r.prompt,
           (select count(*) from votes v where v.match_id = r.id) as votes,
           coalesce((vd.verdict->>'confidence')::float8, 0) as confidence
    from recent r
    left join verdicts vd on vd.match_id = r.id
    where not exists (select 1 from match_agents ma where ma.match_id = r.id and ma.owner_id = $2)
      and not exists (select 1 from votes v where v.match_id = r.id and v.voter_id = $2)
      and (select count(distinct btrim(o.text)) from outputs o where o.match_id = r.id and btrim(o.text) <> '') >= 2";

/// Picks a battle for `voter` among the voting Spaces (`only`: one of
/// them), or None when there is nothing left to vote on.
pub async fn pick(
    pool: &PgPool,
    voter: UserId,
    only: Option<&str>,
    gold_share: f64,
    rng: &mut (impl rand::Rng + ?Sized),
) -> Result<Option<Battle>, sqlx::Error> {
    let mut spaces: Vec<VotingSpace> = voting_spaces(pool)
        .await?
        .into_iter()
        .filter(|s| only.is_none_or(|o| o == s.slug))
        .filter(|s| s.designer_votes || s.designer_id != voter)
        .collect();
    use rand::seq::{IndexedRandom, SliceRandom};
    spaces.shuffle(rng);
    for space in spaces {
        let roll: f64 = rng.random();
        let rows = sqlx::query(&format!("{CANDIDATES} order by r.settled_at desc"))
            .bind(space.id)
            .bind(voter)
            .bind(WINDOW)
            .fetch_all(pool)
            .await?;
        if rows.is_empty() {
            continue;
        }
        let mut ids: Vec<(MatchId, String, i64, f64)> = rows
            .iter()
            .map(|r| {
                (r.get::<MatchId, _>("id"), r.get("prompt"), r.get::<i64, _>("votes"), r.get::<f64, _>("confidence"))
            })
            .collect();
        // Active: the least voted, then the least confident verdicts, first.
        if roll >= gold_share + UNIFORM_SHARE {
            ids.sort_by(|a, b| a.2.cmp(&b.2).then(a.3.total_cmp(&b.3)));
            ids.truncate(20);
        }
        ids.shuffle(rng);
        for (id, prompt, _, _) in ids.into_iter().take(8) {
            let answers: Vec<Answer> = sqlx::query_as(
                "select match_id, slot, text from outputs where match_id = $1 and btrim(text) <> '' order by slot",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            let mut answers: Vec<Answer> = answers;
            answers.shuffle(rng);
            let Some(first) = answers.first().cloned() else { continue };
            let Some(second) = answers.iter().find(|a| a.text.trim() != first.text.trim()).cloned() else { continue };
            let mut names = names_of(pool, &[id]).await?;
            let (a, b, gold) = if roll < gold_share {
                // A gold check: one answer of this match against an answer
                // to another prompt in the same Space.
                let decoy: Option<Answer> = sqlx::query_as(
                    "select o.match_id, o.slot, o.text from matches m join outputs o on o.match_id = m.id
                     where m.space_id = $1 and m.status = 'settled' and m.prompt <> $2 and btrim(o.text) <> ''
                       and not exists (select 1 from match_agents ma where ma.match_id = m.id and ma.owner_id = $3)
                     order by m.created_at desc limit 50",
                )
                .bind(space.id)
                .bind(&prompt)
                .bind(voter)
                .fetch_all(pool)
                .await?
                .into_iter()
                .collect::<Vec<Answer>>()
                .choose(rng)
                .cloned();
                let Some(decoy) = decoy else { continue };
                names.extend(names_of(pool, &[decoy.match_id]).await?);
                if rng.random::<bool>() { (decoy, first, Some(true)) } else { (first, decoy, Some(false)) }
            } else {
                (first, second, None)
            };
            let text = format!("{}\n{}", a.text, b.text);
            if votes::identity_leak(&text, &names).is_some() {
                continue;
            }
            return Ok(Some(Battle { space, match_id: id, prompt, a, b, gold, names }));
        }
    }
    Ok(None)
}

/// The agents' names and their owners' usernames in `matches`.
pub async fn names_of(pool: &PgPool, matches: &[MatchId]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "select distinct n from (
             select a.name as n from match_agents ma join agents a on a.id = ma.agent_id where ma.match_id = any($1)
             union all
             select u.username from match_agents ma join users u on u.id = ma.owner_id where ma.match_id = any($1)
         ) x",
    )
    .bind(matches)
    .fetch_all(pool)
    .await
}

/// What a ballot shows, read again when it is cast (the texts it binds).
#[derive(Debug, Clone)]
pub struct Shown {
    pub space_id: SpaceId,
    pub space_version: i32,
    pub designer_id: UserId,
    pub designer_votes: bool,
    pub votes_open: bool,
    pub prompt: String,
    pub a: String,
    pub b: String,
    /// The owners of the match's agents (and the decoy's).
    pub owners: Vec<UserId>,
    pub names: Vec<String>,
}

/// The texts and owners of a ballot's battle; None when the match or an
/// answer is gone (a forged id never gets this far: the ballot is signed).
pub async fn shown(pool: &PgPool, ballot: &Ballot) -> Result<Option<Shown>, sqlx::Error> {
    let head = sqlx::query(
        "select m.space_id, m.space_version, m.prompt, s.owner_id, v.votes_open, v.designer_votes
         from matches m join spaces s on s.id = m.space_id
         join space_versions v on v.space_id = s.id and v.version = s.current_version
         where m.id = $1 and m.status = 'settled'",
    )
    .bind(ballot.match_id)
    .fetch_optional(pool)
    .await?;
    let Some(head) = head else { return Ok(None) };
    let text = |m: uuid::Uuid, slot: i16| {
        sqlx::query_scalar::<_, String>("select text from outputs where match_id = $1 and slot = $2")
            .bind(m)
            .bind(slot)
            .fetch_optional(pool)
    };
    let a = text(ballot.match_id, ballot.a).await?;
    let b = match ballot.decoy {
        Some((m, slot)) => text(m, slot).await?,
        None => text(ballot.match_id, ballot.b).await?,
    };
    let (Some(mut a), Some(mut b)) = (a, b) else { return Ok(None) };
    // A gold ballot shows the known-better answer (the match's `a` slot)
    // second when it says so.
    if ballot.decoy.is_some() && ballot.gold_second {
        std::mem::swap(&mut a, &mut b);
    }
    let mut matches = vec![MatchId(ballot.match_id)];
    if let Some((m, _)) = ballot.decoy {
        matches.push(MatchId(m));
    }
    let owners: Vec<UserId> = sqlx::query_scalar("select distinct owner_id from match_agents where match_id = any($1)")
        .bind(&matches)
        .fetch_all(pool)
        .await?;
    Ok(Some(Shown {
        space_id: head.get("space_id"),
        space_version: head.get("space_version"),
        designer_id: head.get("owner_id"),
        designer_votes: head.get("designer_votes"),
        votes_open: head.get("votes_open"),
        prompt: head.get("prompt"),
        a,
        b,
        owners,
        names: names_of(pool, &matches).await?,
    }))
}

/// A vote to store, its reason decided by the caller's rules except the
/// caps, which are counted here under the voter's lock.
pub struct NewVote<'a> {
    pub ballot: &'a Ballot,
    pub space_id: SpaceId,
    pub choice: Choice,
    pub reason: Option<Reason>,
    pub elapsed_ms: i64,
    pub address: &'a str,
    pub daily_cap: i64,
    pub address_cap: i64,
    /// The Space's licence, for the human pair.
    pub license: Option<&'a str>,
}

/// Why a vote was refused (nothing stored).
#[derive(Debug, thiserror::Error)]
pub enum CastError {
    #[error("this voter already voted on this match")]
    AlreadyVoted,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What storing a vote did.
#[derive(Debug, Clone)]
pub struct Cast {
    pub reason: Option<Reason>,
    /// Whether the vote counts now (no reason, a voter in good standing).
    pub counted: bool,
    /// The human pair it made or changed, when it made one.
    pub pair: Option<HumanLabel>,
}

/// Stores a vote in one transaction under the voter's row lock: the daily
/// caps counted, a gold answer scored, and a counted vote aggregated into
/// the match's human pair. A second vote on the match is refused.
pub async fn cast(pool: &PgPool, v: NewVote<'_>) -> Result<Cast, CastError> {
    let mut tx = pool.begin().await?;
    sqlx::query("insert into voters (user_id) values ($1) on conflict (user_id) do nothing")
        .bind(v.ballot.voter)
        .execute(&mut *tx)
        .await?;
    let standing_row = sqlx::query("select gold_total, gold_right, flagged from voters where user_id = $1 for update")
        .bind(v.ballot.voter)
        .fetch_one(&mut *tx)
        .await?;
    let standing = Standing {
        gold_total: standing_row.get("gold_total"),
        gold_right: standing_row.get("gold_right"),
        flagged: standing_row.get("flagged"),
    };
    let mut reason = v.reason;
    if reason.is_none() {
        let (mine, here): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where voter_id = $1), count(*) filter (where address = $2)
             from votes where (voter_id = $1 or address = $2) and cast_at > now() - interval '1 day'
               and reason is null",
        )
        .bind(v.ballot.voter)
        .bind(v.address)
        .fetch_one(&mut *tx)
        .await?;
        if mine >= v.daily_cap || here >= v.address_cap {
            reason = Some(Reason::OverCap);
        }
    }
    let (decoy_match, decoy_slot) = v.ballot.decoy.map_or((None, None), |(m, s)| (Some(m), Some(s)));
    let inserted = sqlx::query(
        "insert into votes (id, voter_id, match_id, space_id, slot_a, slot_b, decoy_match_id, decoy_slot, choice,
                            reason, issued_at, elapsed_ms, address, audit_share, gold_second)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, to_timestamp($11::float8 / 1000), $12, $13, $14, $15)
         on conflict do nothing",
    )
    .bind(v.ballot.id)
    .bind(v.ballot.voter)
    .bind(v.ballot.match_id)
    .bind(v.space_id)
    .bind(v.ballot.a)
    .bind(v.ballot.b)
    .bind(decoy_match)
    .bind(decoy_slot)
    .bind(v.choice.as_str())
    .bind(reason.map(Reason::as_str))
    .bind(v.ballot.issued_ms as f64)
    .bind(v.elapsed_ms)
    .bind(v.address)
    .bind(votes::in_audit_share(v.ballot.match_id, votes::AUDIT_SHARE_PCT))
    .bind(v.ballot.decoy.is_some() && v.ballot.gold_second)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(CastError::AlreadyVoted);
    }
    if v.ballot.decoy.is_some() && v.choice != Choice::Skip && reason != Some(Reason::TooFast) {
        sqlx::query(
            "update voters set gold_total = gold_total + 1, gold_right = gold_right + $2::int, updated_at = now()
             where user_id = $1",
        )
        .bind(v.ballot.voter)
        .bind(i32::from(votes::gold_right(v.ballot, v.choice)))
        .execute(&mut *tx)
        .await?;
    }
    let counted = reason.is_none() && standing.counts();
    let pair = if counted {
        let (x, y) = (v.ballot.a.min(v.ballot.b), v.ballot.a.max(v.ballot.b));
        aggregate(&mut tx, MatchId(v.ballot.match_id), x, y, v.license).await?
    } else {
        None
    };
    tx.commit().await?;
    Ok(Cast { reason, counted, pair })
}

/// The judge's call on slots (x, y) of a match from its verdict's ranks
/// (a lower rank is better; equal ranks or none: a tie).
pub fn judge_call(verdict: Option<&serde_json::Value>, x: i16, y: i16) -> Call {
    let rank = |s: i16| verdict.and_then(|v| v["ranks"][s.to_string()].as_i64());
    call_of_ranks(rank(x), rank(y))
}

/// The judge's call from the two slots' ranks.
pub fn call_of_ranks(x: Option<i64>, y: Option<i64>) -> Call {
    match (x, y) {
        (Some(a), Some(b)) if a < b => Call::First,
        (Some(a), Some(b)) if a > b => Call::Second,
        _ => Call::Tie,
    }
}

/// The SQL of the judge's ranks of a vote's two slots (lower slot first),
/// read from the verdict in place (not the whole verdict per row).
macro_rules! vote_ranks {
    () => {
        "(vd.verdict->'ranks'->>(least(v.slot_a, v.slot_b)::text))::int8 as rank_x,
         (vd.verdict->'ranks'->>(greatest(v.slot_a, v.slot_b)::text))::int8 as rank_y"
    };
}

/// Re-reads the counted votes on slots (x, y) of a match and makes its
/// human pair agree with them: inserted or updated, the reverse withdrawn,
/// everything withdrawn when people split evenly; a judge pair people
/// overrule (a verified human pair the other way) is marked.
pub async fn aggregate(
    conn: &mut PgConnection,
    match_id: MatchId,
    x: i16,
    y: i16,
    license: Option<&str>,
) -> Result<Option<HumanLabel>, sqlx::Error> {
    // Serialise aggregations of one match (two voters at once).
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 31))")
        .bind(match_id.to_string())
        .execute(&mut *conn)
        .await?;
    let rows = sqlx::query(
        "select v.slot_a, v.slot_b, v.choice, coalesce(s.gold_total, 0) as gold_total,
                coalesce(s.gold_right, 0) as gold_right, coalesce(s.flagged, false) as flagged
         from votes v left join voters s on s.user_id = v.voter_id
         where v.match_id = $1 and v.reason is null and v.decoy_match_id is null
           and least(v.slot_a, v.slot_b) = $2 and greatest(v.slot_a, v.slot_b) = $3",
    )
    .bind(match_id)
    .bind(x)
    .bind(y)
    .fetch_all(&mut *conn)
    .await?;
    let mut calls = Vec::new();
    for r in &rows {
        let standing =
            Standing { gold_total: r.get("gold_total"), gold_right: r.get("gold_right"), flagged: r.get("flagged") };
        if !standing.counts() {
            continue;
        }
        let Ok(choice) = Choice::parse(r.get::<&str, _>("choice")) else { continue };
        let (a, b): (i16, i16) = (r.get("slot_a"), r.get("slot_b"));
        let ballot_order = if a < b { choice.call() } else { choice.call().map(Call::flipped) };
        if let Some(call) = ballot_order {
            calls.push((call, standing.reliability()));
        }
    }
    let label = votes::human_label(x, y, &calls);
    let verdict: Option<serde_json::Value> = sqlx::query_scalar("select verdict from verdicts where match_id = $1")
        .bind(match_id)
        .fetch_optional(&mut *conn)
        .await?;
    let judge = judge_call(verdict.as_ref(), x, y);
    let space_id: SpaceId =
        sqlx::query_scalar("select space_id from matches where id = $1").bind(match_id).fetch_one(&mut *conn).await?;
    // Withdraw what no longer holds.
    let keep = label.as_ref().map(|l| (l.chosen, l.rejected));
    sqlx::query(
        "update pairs set withdrawn = true
         where match_id = $1 and label_source = 'human' and not withdrawn
           and least(chosen_slot, rejected_slot) = $2 and greatest(chosen_slot, rejected_slot) = $3
           and ($4::smallint is null or chosen_slot <> $4)",
    )
    .bind(match_id)
    .bind(x)
    .bind(y)
    .bind(keep.map(|k| k.0))
    .execute(&mut *conn)
    .await?;
    let overruled_by = label.as_ref().filter(|l| l.tier == votes::Tier::HumanVerified).map(|l| l.chosen);
    sqlx::query(
        "update pairs set overruled = ($4::smallint is not null and rejected_slot = $4)
         where match_id = $1 and label_source <> 'human' and kind = 'whole'
           and least(chosen_slot, rejected_slot) = $2 and greatest(chosen_slot, rejected_slot) = $3",
    )
    .bind(match_id)
    .bind(x)
    .bind(y)
    .bind(overruled_by)
    .execute(&mut *conn)
    .await?;
    if let Some(l) = &label {
        let judge_agrees = match judge {
            Call::Tie => None,
            Call::First => Some(l.chosen == x),
            Call::Second => Some(l.chosen == y),
        };
        let detail = serde_json::json!({"posterior": l.posterior, "tier": l.tier.as_str()});
        sqlx::query(
            "insert into pairs (id, match_id, space_id, chosen_slot, rejected_slot, margin, consistent, license, detail,
                                kind, decision_key, label_source, tier, votes_chosen, votes_rejected, votes_tied,
                                voter_reliability, judge_agrees)
             values (gen_random_uuid(), $1, $2, $3, $4, $5, $6, $7, $8, 'whole', '', 'human', $9, $10, $11, $12, $13, $14)
             on conflict (match_id, chosen_slot, rejected_slot, decision_key, label_source) do update
             set margin = excluded.margin, consistent = excluded.consistent, detail = excluded.detail,
                 tier = excluded.tier, votes_chosen = excluded.votes_chosen, votes_rejected = excluded.votes_rejected,
                 votes_tied = excluded.votes_tied, voter_reliability = excluded.voter_reliability,
                 judge_agrees = excluded.judge_agrees, withdrawn = false",
        )
        .bind(match_id)
        .bind(space_id)
        .bind(l.chosen)
        .bind(l.rejected)
        .bind(2.0 * l.posterior - 1.0)
        .bind(l.votes_rejected == 0)
        .bind(license)
        .bind(detail)
        .bind(l.tier.as_str())
        .bind(l.votes_chosen as i32)
        .bind(l.votes_rejected as i32)
        .bind(l.votes_tied as i32)
        .bind(l.reliability)
        .bind(judge_agrees)
        .execute(&mut *conn)
        .await?;
    }
    Ok(label)
}

/// A seat as the reveal names it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RevealSeat {
    pub slot: i16,
    pub agent: String,
    pub owner: String,
    pub rating: f64,
}

/// What a voter sees after voting.
#[derive(Debug, Clone)]
pub struct Reveal {
    pub vote_id: uuid::Uuid,
    pub match_id: MatchId,
    pub choice: Choice,
    pub reason: Option<Reason>,
    pub counted: bool,
    /// The seats shown as A and B (a gold ballot's decoy: B or A from the
    /// other match).
    pub a: Option<RevealSeat>,
    pub b: Option<RevealSeat>,
    pub gold: Option<bool>,
    /// The judge's call in the order shown, and its confidence.
    pub judge: Call,
    pub confidence: f64,
    /// Counted votes so far in the order shown: A, B, tie.
    pub crowd: [i64; 3],
}

/// The reveal of the caller's vote `vote`, None when it is not theirs.
pub async fn reveal(pool: &PgPool, vote: uuid::Uuid, voter: UserId) -> Result<Option<Reveal>, sqlx::Error> {
    let row = sqlx::query(
        "select v.match_id, v.slot_a, v.slot_b, v.decoy_match_id, v.decoy_slot, v.gold_second, v.choice, v.reason,
                coalesce(s.gold_total, 0) as gold_total, coalesce(s.gold_right, 0) as gold_right,
                coalesce(s.flagged, false) as flagged, vd.verdict
         from votes v left join voters s on s.user_id = v.voter_id left join verdicts vd on vd.match_id = v.match_id
         where v.id = $1 and v.voter_id = $2",
    )
    .bind(vote)
    .bind(voter)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let match_id: MatchId = row.get("match_id");
    let (slot_a, slot_b): (i16, i16) = (row.get("slot_a"), row.get("slot_b"));
    let decoy: Option<(MatchId, i16)> = row.get::<Option<MatchId>, _>("decoy_match_id").zip(row.get("decoy_slot"));
    let reason = row.get::<Option<&str>, _>("reason").and_then(Reason::parse);
    let standing =
        Standing { gold_total: row.get("gold_total"), gold_right: row.get("gold_right"), flagged: row.get("flagged") };
    let verdict: Option<serde_json::Value> = row.get("verdict");
    let seat = |m: MatchId, slot: i16| {
        sqlx::query_as::<_, RevealSeat>(
            "select ma.slot, a.name as agent, u.username as owner, coalesce(ma.mu_after, ma.mu_before) * 40 as rating
             from match_agents ma join agents a on a.id = ma.agent_id join users u on u.id = ma.owner_id
             where ma.match_id = $1 and ma.slot = $2",
        )
        .bind(m)
        .bind(slot)
        .fetch_optional(pool)
    };
    let choice = Choice::parse(row.get::<&str, _>("choice")).unwrap_or(Choice::Skip);
    let gold_second: bool = row.get("gold_second");
    let (a, b, gold) = match decoy {
        None => (seat(match_id, slot_a).await?, seat(match_id, slot_b).await?, None),
        Some((dm, ds)) => {
            // slot_a is the known-better answer; gold_second showed it as B.
            let (known, other) = (seat(match_id, slot_a).await?, seat(dm, ds).await?);
            if gold_second { (other, known, Some(true)) } else { (known, other, Some(false)) }
        }
    };
    let judge = if decoy.is_some() { Call::Tie } else { judge_call(verdict.as_ref(), slot_a, slot_b) };
    let confidence = verdict.as_ref().and_then(|v| v["confidence"].as_f64()).unwrap_or(0.0);
    let crowd_rows: Vec<(i16, i16, String)> = sqlx::query_as(
        "select v.slot_a, v.slot_b, v.choice from votes v left join voters s on s.user_id = v.voter_id
         where v.match_id = $1 and v.reason is null and v.decoy_match_id is null and not coalesce(s.flagged, false)",
    )
    .bind(match_id)
    .fetch_all(pool)
    .await?;
    let mut crowd = [0i64; 3];
    for (a2, _, c) in crowd_rows {
        let Some(call) = Choice::parse(&c).ok().and_then(Choice::call) else { continue };
        let call = if a2 == slot_a { call } else { call.flipped() };
        crowd[match call {
            Call::First => 0,
            Call::Second => 1,
            Call::Tie => 2,
        }] += 1;
    }
    Ok(Some(Reveal {
        vote_id: vote,
        match_id,
        choice,
        reason,
        counted: reason.is_none() && standing.counts(),
        a,
        b,
        gold,
        judge,
        confidence,
        crowd,
    }))
}

/// Files a report on the caller's own vote's battle; false when the vote
/// is not theirs. A second report on one vote changes nothing.
pub async fn report(
    pool: &PgPool,
    vote: uuid::Uuid,
    reporter: UserId,
    reason: ReportReason,
) -> Result<bool, sqlx::Error> {
    let mine: Option<uuid::Uuid> = sqlx::query_scalar("select id from votes where id = $1 and voter_id = $2")
        .bind(vote)
        .bind(reporter)
        .fetch_optional(pool)
        .await?;
    if mine.is_none() {
        return Ok(false);
    }
    sqlx::query("insert into vote_reports (vote_id, reporter, reason) values ($1, $2, $3) on conflict do nothing")
        .bind(vote)
        .bind(reporter)
        .bind(reason.as_str())
        .execute(pool)
        .await?;
    Ok(true)
}

/// The most recent audit-share votes an audit reads (a page view's work
/// stays bounded).
pub const AUDIT_WINDOW: i64 = 20_000;

/// The counted votes of a Space's audit share (`$1` the Space, the latest
/// `$2`, voters with fewer than `$3` gold checks or a reliability of at
/// least `$4`), grouped `g(match_id, x, y, human, n)`: the pair of slots in
/// order and the people's call on it (0 the first, 1 the second, 2 a tie
/// or both bad). Both the audit and the Space page's card read these, so
/// they count the same votes.
const COUNTED_GROUPS: &str = "with v as (
             select v.match_id, least(v.slot_a, v.slot_b) as x, greatest(v.slot_a, v.slot_b) as y,
                    case when v.choice in ('tie', 'bad') then 2
                         when (v.choice = 'a') = (v.slot_a < v.slot_b) then 0 else 1 end as human
             from votes v
             left join voters s on s.user_id = v.voter_id
             where v.space_id = $1 and v.reason is null and v.decoy_match_id is null and v.audit_share
               and v.choice <> 'skip' and not coalesce(s.flagged, false)
               and (coalesce(s.gold_total, 0) < $3
                    or (coalesce(s.gold_right, 0) + 1)::float8 / (coalesce(s.gold_total, 0) + 2) >= $4)
             order by v.cast_at desc limit $2
         ), g as (
             select match_id, x, y, human, count(*) as n from v group by 1, 2, 3, 4
         )";

/// One group of the audit's count: match, agents' names, the slots' ranks
/// in the verdict, the people's call and how many made it.
type AuditRow = (uuid::Uuid, String, String, Option<i64>, Option<i64>, i32, i64);

/// The counted votes of a Space's audit share (the latest
/// [`AUDIT_WINDOW`]), as the audit reads them.
pub async fn audit_votes(pool: &PgPool, space: SpaceId) -> Result<Vec<AuditVote>, sqlx::Error> {
    // Counted per match, pair of slots and call in SQL; the verdict (a
    // document of kilobytes) and the agents' names are read once per group.
    let rows: Vec<AuditRow> = sqlx::query_as(&format!(
        "{COUNTED_GROUPS}
         select g.match_id, ax.name, ay.name,
                (vd.verdict->'ranks'->>(g.x::text))::int8, (vd.verdict->'ranks'->>(g.y::text))::int8,
                g.human::int4, g.n
         from g
         left join verdicts vd on vd.match_id = g.match_id
         join match_agents mx on mx.match_id = g.match_id and mx.slot = g.x
         join match_agents my on my.match_id = g.match_id and my.slot = g.y
         join agents ax on ax.id = mx.agent_id
         join agents ay on ay.id = my.agent_id
         order by g.match_id, g.x, g.y, g.human"
    ))
    .bind(space)
    .bind(AUDIT_WINDOW)
    .bind(votes::GOLD_MIN)
    .bind(votes::MIN_RELIABILITY)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for (match_id, agent_x, agent_y, rank_x, rank_y, human, n) in rows {
        let human = match human {
            0 => Call::First,
            1 => Call::Second,
            _ => Call::Tie,
        };
        let vote = AuditVote { match_id, agents: (agent_x, agent_y), human, judge: call_of_ranks(rank_x, rank_y) };
        out.extend(std::iter::repeat_n(vote, n.max(0) as usize));
    }
    Ok(out)
}

/// The Space page's card from counts in SQL (the audit share's counted
/// votes, the latest [`AUDIT_WINDOW`], as `audit_votes` selects them and
/// `Standing::counts` keeps them): the 3×3 confusion and the human–human
/// pairs. A test holds it to `domain::votes::audit` over `audit_votes`.
pub async fn audit_summary(pool: &PgPool, space: SpaceId) -> Result<votes::Summary, sqlx::Error> {
    // Counted per match, pair of slots and call first; the verdict is read
    // once per group.
    let rows: Vec<(uuid::Uuid, i32, i32, i64)> = sqlx::query_as(&format!(
        "{COUNTED_GROUPS}
         select g.match_id, g.human,
                case when (vd.verdict->'ranks'->>(g.x::text))::int8 < (vd.verdict->'ranks'->>(g.y::text))::int8 then 0
                     when (vd.verdict->'ranks'->>(g.x::text))::int8 > (vd.verdict->'ranks'->>(g.y::text))::int8 then 1
                     else 2 end::int4 as judge,
                g.n
         from g left join verdicts vd on vd.match_id = g.match_id"
    ))
    .bind(space)
    .bind(AUDIT_WINDOW)
    .bind(votes::GOLD_MIN)
    .bind(votes::MIN_RELIABILITY)
    .fetch_all(pool)
    .await?;
    let mut confusion = [[0u64; 3]; 3];
    let mut per_match: std::collections::HashMap<uuid::Uuid, [u64; 3]> = std::collections::HashMap::new();
    for (m, human, judge, n) in rows {
        let (h, j, n) = (human.clamp(0, 2) as usize, judge.clamp(0, 2) as usize, n.max(0) as u64);
        confusion[h][j] += n;
        per_match.entry(m).or_default()[h] += n;
    }
    let pairs = |n: u64| n * n.saturating_sub(1) / 2;
    let hh_agree: u64 = per_match.values().map(|c| c.iter().map(|n| pairs(*n)).sum::<u64>()).sum();
    let hh_total: u64 = per_match.values().map(|c| pairs(c.iter().sum())).sum();
    Ok(votes::summary(&confusion, hh_agree, hh_total))
}

/// The votes of the last `days` days the outlier test reads (skips, gold
/// and reasoned votes left out), at most `limit`, newest first.
pub async fn vote_facts(pool: &PgPool, days: i32, limit: i64) -> Result<Vec<VoteFact>, sqlx::Error> {
    let rows = sqlx::query(concat!(
        "select v.voter_id, v.match_id, v.slot_a, v.slot_b, v.choice, ",
        vote_ranks!(),
        ", mx.agent_id as ax, my.agent_id as ay
         from votes v
         left join verdicts vd on vd.match_id = v.match_id
         join match_agents mx on mx.match_id = v.match_id and mx.slot = least(v.slot_a, v.slot_b)
         join match_agents my on my.match_id = v.match_id and my.slot = greatest(v.slot_a, v.slot_b)
         where v.cast_at > now() - make_interval(days => $1) and v.reason is null and v.decoy_match_id is null
         order by v.cast_at desc limit $2"
    ))
    .bind(days)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let (a, b): (i16, i16) = (r.get("slot_a"), r.get("slot_b"));
            let call = Choice::parse(r.get::<&str, _>("choice")).ok()?.call()?;
            Some(VoteFact {
                voter: r.get("voter_id"),
                match_id: r.get("match_id"),
                agents: (r.get("ax"), r.get("ay")),
                human: if a < b { call } else { call.flipped() },
                judge: call_of_ranks(r.get("rank_x"), r.get("rank_y")),
            })
        })
        .collect())
}

/// Sets the outlier flags to exactly `flags` (voters no longer flagged
/// are cleared) and re-aggregates every match a changed voter voted on.
/// Returns how many voters changed.
pub async fn set_flags(
    pool: &PgPool,
    flags: &[VoterFlag],
    license_of: &std::collections::HashMap<SpaceId, Option<String>>,
) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ids: Vec<uuid::Uuid> = flags.iter().map(|f| f.voter).collect();
    let reasons: Vec<String> = flags
        .iter()
        .map(|f| {
            format!("favours one agent: {} of {} battles with it ({:.1} log-likelihood)", f.for_agent, f.battles, f.llr)
        })
        .collect();
    let changed: Vec<uuid::Uuid> = sqlx::query_scalar(
        "with wanted as (select * from unnest($1::uuid[], $2::text[]) as w(id, why)),
              ins as (insert into voters (user_id) select id from wanted on conflict do nothing returning user_id),
              up as (
                  update voters s set flagged = (w.id is not null), flag_reason = w.why,
                         flagged_at = case when w.id is not null then coalesce(s.flagged_at, now()) end, updated_at = now()
                  from voters s2 left join wanted w on w.id = s2.user_id
                  where s.user_id = s2.user_id and s.flagged <> (w.id is not null)
                  returning s.user_id)
         select user_id from up",
    )
    .bind(&ids)
    .bind(&reasons)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    if changed.is_empty() {
        return Ok(0);
    }
    let touched: Vec<(MatchId, SpaceId, i16, i16)> = sqlx::query_as(
        "select distinct v.match_id, v.space_id, least(v.slot_a, v.slot_b), greatest(v.slot_a, v.slot_b)
         from votes v where v.voter_id = any($1) and v.reason is null and v.decoy_match_id is null",
    )
    .bind(&changed)
    .fetch_all(pool)
    .await?;
    for (m, space, x, y) in touched {
        let mut tx = pool.begin().await?;
        let license = license_of.get(&space).cloned().flatten();
        aggregate(&mut tx, m, x, y, license.as_deref()).await?;
        tx.commit().await?;
    }
    Ok(changed.len())
}

/// Votes per day and reason over the last `days` days (null: counted).
pub async fn reasons_by_day(
    pool: &PgPool,
    days: i32,
) -> Result<Vec<(chrono::NaiveDate, Option<String>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select (cast_at at time zone 'UTC')::date as day, reason, count(*) from votes
         where cast_at > now() - make_interval(days => $1)
         group by 1, 2 order by 1, 2",
    )
    .bind(days)
    .fetch_all(pool)
    .await
}

/// A voter the integrity view lists.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VoterLine {
    pub username: String,
    pub votes: i64,
    pub gold_total: i32,
    pub gold_right: i32,
    pub flagged: bool,
    pub flag_reason: Option<String>,
}

/// Flagged voters and those with the worst gold record, at most `limit`.
pub async fn voter_lines(pool: &PgPool, limit: i64) -> Result<Vec<VoterLine>, sqlx::Error> {
    sqlx::query_as(
        "select u.username, (select count(*) from votes v where v.voter_id = s.user_id) as votes, s.gold_total,
                s.gold_right, s.flagged, s.flag_reason
         from voters s join users u on u.id = s.user_id
         where s.flagged or s.gold_total > 0
         order by s.flagged desc, (s.gold_right + 1)::float8 / (s.gold_total + 2), u.username
         limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Gold ballots answered and right, over every voter.
pub async fn gold_accuracy(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("select coalesce(sum(gold_total), 0)::int8, coalesce(sum(gold_right), 0)::int8 from voters")
        .fetch_one(pool)
        .await
}

/// A report the integrity view lists.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportLine {
    pub match_id: MatchId,
    pub reporter: String,
    pub reason: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn reports(pool: &PgPool, limit: i64) -> Result<Vec<ReportLine>, sqlx::Error> {
    sqlx::query_as(
        "select v.match_id, u.username as reporter, r.reason, r.created_at
         from vote_reports r join votes v on v.id = r.vote_id join users u on u.id = r.reporter
         order by r.created_at desc limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A verified human pair as the judge's training reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TrainingPair {
    pub id: uuid::Uuid,
    pub match_id: MatchId,
    pub space: String,
    pub prompt: String,
    pub reference: Option<String>,
    pub better: String,
    pub worse: String,
}

/// Verified human pairs of whole answers (withdrawn ones left out), the
/// newest `limit`, for `arena judge train --votes` (which leaves out the
/// audit share).
pub async fn training_pairs(pool: &PgPool, limit: i64) -> Result<Vec<TrainingPair>, sqlx::Error> {
    sqlx::query_as(
        "select p.id, p.match_id, s.slug as space, m.prompt, m.reference, oc.text as better, orj.text as worse
         from pairs p join matches m on m.id = p.match_id join spaces s on s.id = p.space_id
         join outputs oc on oc.match_id = p.match_id and oc.slot = p.chosen_slot
         join outputs orj on orj.match_id = p.match_id and orj.slot = p.rejected_slot
         where p.label_source = 'human' and p.tier = 'human_verified' and not p.withdrawn and p.kind = 'whole'
         order by p.created_at desc limit $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Counted votes of a Space (any share) and the voters who cast them.
pub async fn space_counts(pool: &PgPool, space: SpaceId) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "select count(*), count(distinct voter_id) from votes where space_id = $1 and reason is null
           and decoy_match_id is null",
    )
    .bind(space)
    .fetch_one(pool)
    .await
}
