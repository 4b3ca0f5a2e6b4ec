//! Forming matches: the SQL of the matchmaker (`work::matchmaker`). A
//! Space's round runs under a session advisory lock; a match is formed in
//! one transaction: the match rows, pots and seats, the entry fees (and
//! sponsor pool) moved into the pots, and the hand-over to `generate`.

use super::ledger::{self, LedgerError, Leg};
use super::outbox;
use crate::domain::pairing::Contender;
use crate::domain::space::Space;
use crate::domain::{AgentId, MatchId, MatchStatus, SpaceId, Stage, Topic, UserId};
use sqlx::PgConnection;
use uuid::Uuid;

/// Takes the Space's matchmaking lock on this session; false when another
/// matchmaker holds it.
pub async fn try_lock(conn: &mut PgConnection, space: SpaceId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select pg_try_advisory_lock(hashtextextended($1::text, 7))").bind(space).fetch_one(conn).await
}

pub async fn unlock(conn: &mut PgConnection, space: SpaceId) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_unlock(hashtextextended($1::text, 7))").bind(space).execute(conn).await?;
    Ok(())
}

pub async fn is_active(conn: &mut PgConnection, space: SpaceId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select active from spaces where id = $1").bind(space).fetch_one(conn).await
}

/// The Space's matches still in the pipeline.
pub async fn open_matches(conn: &mut PgConnection, space: SpaceId) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from matches where space_id = $1 and status = any($2)")
        .bind(space)
        .bind(&MatchStatus::OPEN[..])
        .fetch_one(conn)
        .await
}

#[derive(sqlx::FromRow)]
struct ContenderRow {
    agent_id: AgentId,
    owner_id: UserId,
    version: i32,
    mu: f64,
    sigma: f64,
    account: Uuid,
    balance: i64,
}

/// The agents that could play now: entered and active under the Space's
/// current terms, in no open match, their owner able to pay `fee`.
pub async fn contenders(conn: &mut PgConnection, space: SpaceId, fee: i64) -> Result<Vec<Contender>, sqlx::Error> {
    let rows: Vec<ContenderRow> = sqlx::query_as(
        "select e.agent_id, e.owner_id, a.current_version as version, e.mu, e.sigma, acc.id as account, acc.balance
         from entries e
         join agents a on a.id = e.agent_id
         join accounts acc on acc.kind = 'user' and acc.user_id = e.owner_id
         join spaces s on s.id = e.space_id
         where e.space_id = $1 and e.active and e.open_match is null and acc.balance >= $2
           and e.accepted_version >= s.terms_version",
    )
    .bind(space)
    .bind(fee)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Contender {
            agent_id: r.agent_id,
            owner_id: r.owner_id,
            version: r.version,
            mu: r.mu,
            sigma: r.sigma,
            account: r.account,
            balance: r.balance,
        })
        .collect())
}

/// Why a group was not formed.
pub enum FormationError {
    /// This group cannot play now (someone cannot pay, or joined another match).
    Skip(String),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for FormationError {
    fn from(err: sqlx::Error) -> FormationError {
        FormationError::Db(err)
    }
}

/// Forms every group as a match in the caller's transaction, set-wise: the
/// agents' entries are locked, the matches, pots and seats inserted, all
/// fees moved by one ledger batch (accounts locked in id order), and the
/// matches handed to the generate stage.
pub async fn form_many(
    tx: &mut sqlx::PgConnection,
    space_id: SpaceId,
    version: i32,
    space_owner: UserId,
    space: &Space,
    groups: &[Vec<&Contender>],
    prompts: &[usize],
) -> Result<Vec<MatchId>, FormationError> {
    let agents: Vec<AgentId> = groups.iter().flatten().map(|m| m.agent_id).collect();
    let free: i64 = sqlx::query_scalar(
        "with locked as (select agent_id from entries where space_id = $1 and agent_id = any($2)
                         and active and open_match is null order by agent_id for update)
         select count(*) from locked",
    )
    .bind(space_id)
    .bind(&agents)
    .fetch_one(&mut *tx)
    .await?;
    if free as usize != agents.len() {
        return Err(FormationError::Skip("an agent left or joined another match".into()));
    }
    let fee = space.entry_fee;
    let sponsor = space.payout.sponsor_pool;
    let designer_account = if sponsor > 0 {
        Some(
            sqlx::query_scalar::<_, Uuid>("select id from accounts where kind = 'user' and user_id = $1")
                .bind(space_owner)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| FormationError::Skip("the designer has no account".into()))?,
        )
    } else {
        None
    };
    let ids: Vec<MatchId> = groups.iter().map(|_| MatchId::new()).collect();
    let pot_accounts: Vec<Uuid> = groups.iter().map(|_| Uuid::new_v4()).collect();
    let pots: Vec<i64> = groups.iter().map(|g| fee * g.len() as i64 + sponsor).collect();
    let prompt_text: Vec<&str> = prompts.iter().map(|&i| space.prompts[i].prompt.as_str()).collect();
    let references: Vec<Option<&str>> = prompts.iter().map(|&i| space.prompts[i].reference.as_deref()).collect();
    let indexes: Vec<i32> = prompts.iter().map(|&i| i as i32).collect();
    sqlx::query(
        "insert into matches (id, space_id, space_version, status, prompt_index, prompt, reference, pot, created_at)
         select m.id, $2, $3, $8, m.idx, m.prompt, m.reference, m.pot, clock_timestamp()
         from unnest($1::uuid[], $4::int[], $5::text[], $6::text[], $7::bigint[]) as m(id, idx, prompt, reference, pot)",
    )
    .bind(&ids)
    .bind(space_id)
    .bind(version)
    .bind(&indexes)
    .bind(&prompt_text)
    .bind(&references)
    .bind(&pots)
    .bind(MatchStatus::Formed)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into accounts (id, kind, match_id) select a, 'pot', m from unnest($1::uuid[], $2::uuid[]) as x(a, m)",
    )
    .bind(&pot_accounts)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    let postings: Vec<ledger::Posting> = groups
        .iter()
        .zip(&ids)
        .zip(&pot_accounts)
        .zip(&pots)
        .filter(|(_, pot)| **pot > 0)
        .map(|(((members, id), pot_account), pot)| {
            let mut legs: Vec<Leg> = members.iter().filter(|_| fee > 0).map(|m| Leg::new(m.account, -fee)).collect();
            if let Some(designer) = designer_account {
                legs.push(Leg::new(designer, -sponsor));
            }
            legs.push(Leg::new(*pot_account, *pot));
            ledger::Posting {
                idempotency_key: format!("entry:{id}"),
                kind: "entry_fees",
                match_id: Some(*id),
                memo: "entry fees".to_owned(),
                legs,
            }
        })
        .collect();
    match ledger::post_many(&mut *tx, &postings).await {
        Ok(_) => {}
        Err(LedgerError::Db(err)) => return Err(FormationError::Db(err)),
        Err(other) => return Err(FormationError::Skip(other.to_string())),
    }
    let (mut s_match, mut s_slot, mut s_agent, mut s_version, mut s_owner, mut s_mu, mut s_sigma) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (members, id) in groups.iter().zip(&ids) {
        for (slot, m) in members.iter().enumerate() {
            s_match.push(*id);
            s_slot.push(slot as i16);
            s_agent.push(m.agent_id);
            s_version.push(m.version);
            s_owner.push(m.owner_id);
            s_mu.push(m.mu);
            s_sigma.push(m.sigma);
        }
    }
    sqlx::query(
        "insert into match_agents (match_id, slot, agent_id, agent_version, owner_id, entry_fee, mu_before, sigma_before)
         select m.match_id, m.slot, m.agent, m.version, m.owner, $8, m.mu, m.sigma
         from unnest($1::uuid[], $2::smallint[], $3::uuid[], $4::int[], $5::uuid[], $6::float8[], $7::float8[])
              as m(match_id, slot, agent, version, owner, mu, sigma)",
    )
    .bind(&s_match)
    .bind(&s_slot)
    .bind(&s_agent)
    .bind(&s_version)
    .bind(&s_owner)
    .bind(&s_mu)
    .bind(&s_sigma)
    .bind(fee)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "update entries e set open_match = u.match_id from unnest($2::uuid[], $3::uuid[]) as u(agent, match_id)
         where e.space_id = $1 and e.agent_id = u.agent",
    )
    .bind(space_id)
    .bind(&s_agent)
    .bind(&s_match)
    .execute(&mut *tx)
    .await?;
    let subjects: Vec<Uuid> = ids.iter().map(|m| m.0).collect();
    outbox::enqueue_many(&mut *tx, Topic::Stage(Stage::Generate), &subjects).await?;
    Ok(ids)
}
