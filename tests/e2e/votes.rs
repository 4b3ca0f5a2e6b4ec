//! Battles and votes through the API: nameless battles, signed single-use
//! ballots, what is refused and what is stored without counting, human
//! pairs with their tiers, the judge overruled, the export filter, the
//! designer's audit. Matches run on the stub generator (a test double):
//! even slots answer right, odd slots wrong, and the Space's hard check
//! (the judge here) prefers the right answer.

use crate::arena::{Arena, User, quick_settings, quick_space};
use crate::helpers::TestEnv;
use arena_server::app::Roles;
use serde_json::{Value, json};
use std::time::Duration;

/// A quick Space that takes votes.
pub fn voting_space(name: &str) -> String {
    format!("{}\n[votes]\ncriterion = \"Which answer is right?\"\nprice_per_pair = 3\n", quick_space(name, 2, 2))
}

/// A league of two players (ada, bob) with `settled` settled matches in a
/// voting Space, on settings whose reading floor is `floor_ms` flat.
pub async fn voting_league(settled: i64, floor_ms: u64, gold_pct: u32) -> (Arena, User, Vec<User>) {
    voting_league_with(settled, floor_ms, gold_pct, None).await
}

/// Test double: answers by agent — "calc" (ada's) right, every other agent
/// wrong, whatever the slot.
struct ByAgent;

impl arena_server::work::generator::Generator for ByAgent {
    fn generate(
        &self,
        jobs: Vec<arena_server::work::generator::GenJob>,
    ) -> futures_util::future::BoxFuture<'static, Vec<anyhow::Result<arena_server::work::generator::GenOutput>>> {
        let out = jobs
            .into_iter()
            .map(|job| {
                let text = if job.system.contains("You are calc.") {
                    format!("The answer is {}.", job.reference.unwrap_or_default())
                } else {
                    "I am not sure, maybe 7 or 12.".to_owned()
                };
                Ok(arena_server::work::generator::GenOutput { tokens: 6, text, finish: "end_of_turn".into() })
            })
            .collect();
        Box::pin(std::future::ready(out))
    }
}

pub async fn voting_league_with(
    settled: i64,
    floor_ms: u64,
    gold_pct: u32,
    generator: Option<std::sync::Arc<dyn arena_server::work::generator::Generator>>,
) -> (Arena, User, Vec<User>) {
    let env = TestEnv::new().await;
    let mut settings = quick_settings(&env);
    settings.arena.vote_gold_pct = gold_pct;
    settings.arena.vote_read_base_ms = floor_ms;
    settings.arena.vote_read_ms_per_word = 0;
    let arena = Arena::with_settings(env, settings).await;
    let dana = arena.user("dana", "designer").await;
    arena.publish(&dana, &voting_space("quick"), json!({})).await;
    let ada = arena.user("ada", "player").await;
    let bob = arena.user("bob", "player").await;
    ada.agent("calc", "quick").await;
    bob.agent("guess", "quick").await;
    arena.start(Roles::ALL, generator);
    arena.wait_settled(settled, 60).await;
    arena.pause_all().await;
    arena.wait_settled(settled, 60).await;
    (arena, dana, vec![ada, bob])
}

/// A battle's ballot opened with the server's key (what the server reads
/// when the vote comes back; the voter cannot).
pub async fn claims(arena: &Arena, voter: &User, battle: &Value) -> arena_server::domain::votes::Ballot {
    let key: Vec<u8> = sqlx::query_scalar("select key from ballot_keys").fetch_one(&arena.db).await.unwrap();
    arena_server::domain::votes::Ballot::open(
        battle["ballot"].as_str().unwrap(),
        &key.try_into().unwrap(),
        uuid::Uuid::parse_str(&voter.id).unwrap(),
        chrono::Utc::now().timestamp_millis(),
    )
    .unwrap()
}

/// Takes battles until one that is not a gold check (the test skips the
/// checks, which is what a voter may do); None when nothing is left.
async fn real_battle(arena: &Arena, voter: &User) -> Option<Value> {
    for _ in 0..50 {
        let (status, battle) = voter.get("/battles").await;
        if status == 204 {
            return None;
        }
        assert_eq!(status, 200, "{battle}");
        if claims(arena, voter, &battle).await.decoy.is_none() {
            return Some(battle);
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (status, body) = voter.post("/votes", json!({"ballot": battle["ballot"], "choice": "skip"})).await;
        assert_eq!(status, 201, "{body}");
    }
    None
}

/// The side (a or b) whose answer is right.
fn right_side(battle: &Value) -> &'static str {
    if battle["a"].as_str().unwrap().starts_with("The answer is") { "a" } else { "b" }
}

/// The Space page's card (counts in SQL) says what the full audit says.
/// Every vote is put in the audit share first, so the comparison covers
/// them all (with a handful of matches the hash may pick none).
async fn card_equals_audit(arena: &Arena) {
    sqlx::query("update votes set audit_share = true").execute(&arena.db).await.unwrap();
    let space: uuid::Uuid =
        sqlx::query_scalar("select id from spaces where slug = 'quick'").fetch_one(&arena.db).await.unwrap();
    let space = arena_server::domain::SpaceId(space);
    let card = arena_server::store::votes::audit_summary(&arena.db, space).await.unwrap();
    let full =
        arena_server::domain::votes::audit(&arena_server::store::votes::audit_votes(&arena.db, space).await.unwrap());
    assert!(full.votes > 0 && full.human_human.n > 0, "{full:?}");
    assert_eq!(card.votes, full.votes);
    assert_eq!(card.agreement, full.agreement);
    assert_eq!(card.human_human, full.human_human);
    assert_eq!(card.kappa, full.kappa);
}

async fn count(arena: &Arena, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&arena.db).await.unwrap()
}

#[tokio::test]
async fn battles_hide_who_answered_and_each_ballot_counts_once() {
    let (arena, dana, players) = voting_league(4, 300, 10).await;
    let [ada, _bob] = [&players[0], &players[1]];
    let vic = arena.user("vic", "player").await;

    // Nothing in a battle names an agent, an owner, a rating or a verdict.
    let (status, battle) = vic.get("/battles").await;
    assert_eq!(status, 200, "{battle}");
    let mut without_ballot = battle.clone();
    without_ballot.as_object_mut().unwrap().remove("ballot");
    let shown = without_ballot.to_string().to_lowercase();
    for secret in ["ada", "bob", "calc", "guess", "rating", "verdict", "judge", "dana"] {
        assert!(!shown.contains(secret), "{secret} in {battle}");
    }
    assert_eq!(battle["criterion"], "Which answer is right?");

    // Owners get no battle of their own matches (every match has ada's agent).
    assert_eq!(ada.get("/battles").await.0, 204);

    // A vote cast at once is stored, not counted: too fast.
    let (status, reveal) = vic.post("/votes", json!({"ballot": battle["ballot"], "choice": "a"})).await;
    assert_eq!(status, 201, "{reveal}");
    assert_eq!(reveal["counted"], false);
    assert_eq!(reveal["reason"], "too_fast");
    // The reveal names the agents now.
    let named = [reveal["a"]["agent"].as_str().unwrap_or("?"), reveal["b"]["agent"].as_str().unwrap_or("?")];
    assert!(named.contains(&"calc") || named.contains(&"guess"), "{reveal}");

    // The same ballot again: refused, nothing stored.
    let before = count(&arena, "select count(*) from votes").await;
    let (status, body) = vic.post("/votes", json!({"ballot": battle["ballot"], "choice": "b"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["field"], "ballot", "{body}");
    // A forged ballot (a byte of its sealed claims changed, the tag kept),
    // a ballot of another voter, a bad choice: refused, nothing stored.
    let token = battle["ballot"].as_str().unwrap();
    let (sealed_claims, tag) = token.split_once('.').unwrap();
    let mut bytes = hex::decode(sealed_claims).unwrap();
    bytes[24] ^= 0x01;
    let forged = format!("{}.{tag}", hex::encode(bytes));
    let (status, body) = vic.post("/votes", json!({"ballot": forged, "choice": "a"})).await;
    assert_eq!(status, 422, "{body}");
    let (_, other) = vic.get("/battles").await;
    let (status, body) = dana.post("/votes", json!({"ballot": other["ballot"], "choice": "a"})).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = vic.post("/votes", json!({"ballot": other["ballot"], "choice": "maybe"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "choice");
    // An owner's vote on her own match, even with a ballot the server
    // signed for her (made here with the server's key): refused.
    let key: Vec<u8> = sqlx::query_scalar("select key from ballot_keys").fetch_one(&arena.db).await.unwrap();
    let own_match: uuid::Uuid = sqlx::query_scalar("select id from matches where status = 'settled' limit 1")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    let sealed = arena_server::domain::votes::Ballot {
        id: uuid::Uuid::new_v4(),
        voter: uuid::Uuid::parse_str(&ada.id).unwrap(),
        match_id: own_match,
        a: 0,
        b: 1,
        decoy: None,
        gold_second: false,
        issued_ms: chrono::Utc::now().timestamp_millis() - 5_000,
    }
    .seal(&key.clone().try_into().unwrap());
    let (status, body) = ada.post("/votes", json!({"ballot": sealed, "choice": "a"})).await;
    assert_eq!(status, 403, "{body}");
    // An expired ballot, and a second ballot (the server's key, a fresh
    // id) for the match vic already voted on: refused.
    let first = claims(&arena, &vic, &battle).await;
    let expired = arena_server::domain::votes::Ballot {
        id: uuid::Uuid::new_v4(),
        issued_ms: chrono::Utc::now().timestamp_millis() - 31 * 60 * 1000,
        ..first.clone()
    }
    .seal(&key.clone().try_into().unwrap());
    let (status, body) = vic.post("/votes", json!({"ballot": expired, "choice": "a"})).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("ballot")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"), "{body}");
    let again = arena_server::domain::votes::Ballot {
        id: uuid::Uuid::new_v4(),
        issued_ms: chrono::Utc::now().timestamp_millis() - 5_000,
        ..first
    }
    .seal(&key.clone().try_into().unwrap());
    let (status, body) = vic.post("/votes", json!({"ballot": again, "choice": "b"})).await;
    assert_eq!(status, 409, "a second vote on one match: {body}");
    assert_eq!(before, count(&arena, "select count(*) from votes").await, "refused votes stored nothing");

    // Three voters who read before voting and pick the right answer: every
    // real battle they vote on counts; matches with three decisive votes
    // make verified human pairs the judge agrees with.
    let mut voted = 0;
    let (wes, xia) = (arena.user("wes", "player").await, arena.user("xia", "player").await);
    for voter in [&vic, &wes, &xia] {
        while let Some(battle) = real_battle(&arena, voter).await {
            tokio::time::sleep(Duration::from_millis(350)).await;
            let (status, reveal) =
                voter.post("/votes", json!({"ballot": battle["ballot"], "choice": right_side(&battle)})).await;
            assert_eq!(status, 201, "{reveal}");
            assert_eq!(reveal["counted"], true, "{reveal}");
            assert_eq!(reveal["agrees_with_judge"], true, "{reveal}");
            voted += 1;
        }
    }
    assert!(voted >= 6, "{voted} counted votes");
    let verified =
        count(&arena, "select count(*) from pairs where label_source = 'human' and tier = 'human_verified'").await;
    let agree = count(&arena, "select count(*) from pairs where label_source = 'human' and judge_agrees").await;
    let human = count(&arena, "select count(*) from pairs where label_source = 'human' and not withdrawn").await;
    assert!(human >= 1 && agree == human, "{human} human pairs, {agree} agree");
    let full: i64 = count(
        &arena,
        "select count(*) from (select match_id from votes where reason is null and decoy_match_id is null
                                group by match_id having count(*) >= 3) x",
    )
    .await;
    assert_eq!(verified, full, "a verified pair per match with three decisive votes");
    // Every human pair's chosen answer is the right one (an even slot).
    assert_eq!(
        count(&arena, "select count(*) from pairs where label_source = 'human' and chosen_slot % 2 = 1").await,
        0
    );

    // Buyers filter by label source: the human pairs are exportable now.
    let nell = arena.user("nell", "buyer").await;
    let (status, n) = nell.get("/data/count?label_source=human").await;
    assert_eq!(status, 200, "{n}");
    assert_eq!(n["pairs"], human, "{n}");
    // Human pairs are priced apart (3 credits each; the Space's other
    // pairs are free) and never read free.
    assert_eq!(n["price"], 3 * human, "{n}");
    let (_, verifier_n) = nell.get("/data/count?label_source=verifier").await;
    assert_eq!(verifier_n["price"], 0, "{verifier_n}");
    let free = nell.client.get(arena.url("/data/pairs?label_source=human")).send().await.unwrap();
    assert_eq!(free.status(), 200);
    assert_eq!(free.text().await.unwrap().lines().count(), 0, "priced human pairs are not streamed free");
    let space_pairs = nell.client.get(arena.url("/spaces/quick/pairs?limit=1000")).send().await.unwrap();
    let lines = space_pairs.text().await.unwrap().lines().count() as i64;
    let judged = count(&arena, "select count(*) from pairs where label_source <> 'human' and not overruled").await;
    assert_eq!(lines, judged, "the Space's free pairs hold no human pair");
    let (_, verified_n) = nell.get("/data/count?label_source=human&human_verified=true").await;
    assert_eq!(verified_n["pairs"], verified);
    let (status, body) = nell.get("/data/count?label_source=crowd").await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("label_source")), "{body}");

    // The designer's audit counts the audit share's votes; strangers get 404.
    let (status, audit) = dana.get("/spaces/quick/audit").await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["counted_votes"], voted, "{audit}");
    assert_eq!(
        audit["audit"]["agreement"]["k"], audit["audit"]["agreement"]["n"],
        "people agreed with the judge: {audit}"
    );
    assert_eq!(vic.get("/spaces/quick/audit").await.0, 403, "a player lacks the design scope");
    let rita = arena.user("rita", "designer").await;
    assert_eq!(rita.get("/spaces/quick/audit").await.0, 404);
    card_equals_audit(&arena).await;
    arena.ledger_ok().await;
}

#[tokio::test]
async fn people_who_disagree_overrule_the_judges_pair_and_flips_withdraw_theirs() {
    // No gold checks: a check on the match the test aims at would use up
    // a voter's one vote on it.
    let (arena, _dana, _players) = voting_league(3, 200, 0).await;
    // Three voters pick the wrong answer of one match.
    let mut target: Option<String> = None;
    for name in ["pia", "quinn", "ravi"] {
        let voter = arena.user(name, "player").await;
        loop {
            let battle = real_battle(&arena, &voter).await.expect("a battle");
            tokio::time::sleep(Duration::from_millis(250)).await;
            let this = claims(&arena, &voter, &battle).await.match_id.to_string();
            let wrong = if right_side(&battle) == "a" { "b" } else { "a" };
            if target.as_deref().is_some_and(|t| t != this) {
                let (status, _) = voter.post("/votes", json!({"ballot": battle["ballot"], "choice": "skip"})).await;
                assert_eq!(status, 201);
                continue;
            }
            target = Some(this);
            let (status, reveal) = voter.post("/votes", json!({"ballot": battle["ballot"], "choice": wrong})).await;
            assert_eq!(status, 201, "{reveal}");
            assert_eq!(reveal["agrees_with_judge"], false, "{reveal}");
            break;
        }
    }
    let target = uuid::Uuid::parse_str(&target.unwrap()).unwrap();
    let (overruled, human_chosen): (bool, i16) = sqlx::query_as(
        "select j.overruled, h.chosen_slot from pairs j join pairs h on h.match_id = j.match_id and h.label_source = 'human'
         where j.match_id = $1 and j.label_source <> 'human'",
    )
    .bind(target)
    .fetch_one(&arena.db)
    .await
    .unwrap();
    assert!(overruled, "three votes against the judge overrule its pair");
    assert_eq!(human_chosen % 2, 1, "people chose the wrong (odd) answer");
    // The default export leaves the overruled pair out; asking keeps it.
    let nell = arena.user("nell", "buyer").await;
    let (_, judged) = nell.get("/data/count?label_source=verifier").await;
    let (_, all_judged) = nell.get("/data/count?label_source=verifier&include_overruled=true").await;
    assert_eq!(all_judged["pairs"].as_i64().unwrap(), judged["pairs"].as_i64().unwrap() + 1);
    let (_, disagreed) = nell.get("/data/count?judge_agrees=false").await;
    assert_eq!(disagreed["pairs"], 1);

    // Four voters the other way flip the majority: the human pair is
    // withdrawn and a new one made; the judge's pair is no longer overruled.
    for name in ["sam", "tess", "uma", "val"] {
        let voter = arena.user(name, "player").await;
        loop {
            let battle = real_battle(&arena, &voter).await.expect("a battle");
            let this = claims(&arena, &voter, &battle).await.match_id;
            tokio::time::sleep(Duration::from_millis(250)).await;
            if this != target {
                voter.post("/votes", json!({"ballot": battle["ballot"], "choice": "skip"})).await;
                continue;
            }
            let (status, _) =
                voter.post("/votes", json!({"ballot": battle["ballot"], "choice": right_side(&battle)})).await;
            assert_eq!(status, 201);
            break;
        }
    }
    let rows: Vec<(i16, bool, Option<String>)> = sqlx::query_as(
        "select chosen_slot, withdrawn, tier from pairs where match_id = $1 and label_source = 'human' order by chosen_slot",
    )
    .bind(target)
    .fetch_all(&arena.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let live: Vec<_> = rows.iter().filter(|r| !r.1).collect();
    assert_eq!(live.len(), 1, "{rows:?}");
    assert_eq!(live[0].0 % 2, 0, "the right answer now: {rows:?}");
    let overruled: bool =
        sqlx::query_scalar("select overruled from pairs where match_id = $1 and label_source <> 'human'")
            .bind(target)
            .fetch_one(&arena.db)
            .await
            .unwrap();
    assert!(!overruled);
    arena.ledger_ok().await;
}

#[tokio::test]
async fn a_voter_who_always_favours_one_agent_is_flagged_and_stops_counting() {
    // ada's agent always answers right, bob's always wrong.
    let (arena, _dana, _players) = voting_league_with(6, 100, 0, Some(std::sync::Arc::new(ByAgent))).await;
    // Three honest voters pick the right answers; one rigger always picks
    // bob's agent.
    let mut voters = Vec::new();
    for name in ["hal", "ida", "jon", "rig"] {
        voters.push(arena.user(name, "player").await);
    }
    let bob_agent: uuid::Uuid =
        sqlx::query_scalar("select a.id from agents a join users u on u.id = a.owner_id where u.username = 'bob'")
            .fetch_one(&arena.db)
            .await
            .unwrap();
    for voter in &voters {
        while let Some(battle) = real_battle(&arena, voter).await {
            tokio::time::sleep(Duration::from_millis(120)).await;
            let right = right_side(&battle);
            let choice = if voter.name == "rig" { if right == "a" { "b" } else { "a" } } else { right };
            let (status, reveal) = voter.post("/votes", json!({"ballot": battle["ballot"], "choice": choice})).await;
            assert_eq!(status, 201, "{reveal}");
            assert_eq!(reveal["counted"], true);
        }
    }
    let flagged = arena_server::work::votes::check(&arena.ctx).await.unwrap();
    assert_eq!(flagged, 1, "one voter's flag changed");
    let who: Vec<(String, String)> = sqlx::query_as(
        "select u.username, s.flag_reason from voters s join users u on u.id = s.user_id where s.flagged",
    )
    .fetch_all(&arena.db)
    .await
    .unwrap();
    assert_eq!(who.len(), 1, "{who:?}");
    assert_eq!(who[0].0, "rig", "{who:?}");
    // The rigger's votes no longer count: every human pair holds the three
    // honest votes alone, for the right answer.
    let pairs: Vec<(uuid::Uuid, i32, i32)> = sqlx::query_as(
        "select ma.agent_id, p.votes_chosen, p.votes_rejected from pairs p
         join match_agents ma on ma.match_id = p.match_id and ma.slot = p.chosen_slot
         where p.label_source = 'human' and not p.withdrawn",
    )
    .fetch_all(&arena.db)
    .await
    .unwrap();
    assert!(!pairs.is_empty());
    assert!(pairs.iter().all(|p| p.0 != bob_agent && p.1 == 3 && p.2 == 0), "{pairs:?}");
    // The admin's integrity page names the flagged voter; a player's: not found.
    let root = arena.user("root", "admin").await;
    let (status, integrity) = root.get("/votes/integrity").await;
    assert_eq!(status, 200, "{integrity}");
    assert!(integrity["voters"].as_array().unwrap().iter().any(|v| v["username"] == "rig" && v["flagged"] == true));
    // A second pass changes nothing.
    assert_eq!(arena_server::work::votes::check(&arena.ctx).await.unwrap(), 0);
    card_equals_audit(&arena).await;
    arena.ledger_ok().await;
}
