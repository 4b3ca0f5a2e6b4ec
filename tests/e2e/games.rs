//! Multi-turn Spaces end to end on the real pipeline: each referee kind
//! played turn by turn (the `GameStub` test generator — named as one —
//! where the model is too slow; one game on the real model), every stored
//! step replayed through the referee, outcomes settled as ranks, payouts
//! and pairs; a runaway referee script failing its match with a refund;
//! a worker killed mid-game resumed at the right step and settled once.

use crate::arena::{Arena, User};
use arena_server::app::Roles;
use arena_server::domain::space::Space;
use arena_server::work::generate::{GenJob, GenOutput, Generator};
use arena_server::work::test_double::GameStub;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn game_space(name: &str, turns: &str, referee: &str, judge: &str) -> String {
    format!(
        r#"name = "{name}"
agents_per_match = 2
max_new_tokens = 24
entry_fee = 10

[prompts]
inline = ["Play a fair game.", "A friendly game.", "Your best game."]

[payout]
shares = [1.0]

[matchmaking]
rating_window = 10000
max_concurrent_matches = 1

[turns]
{turns}

[referee]
{referee}

{judge}

[pairs]
min_margin = 0.05
"#
    )
}

const NO_JUDGE: &str = "[judge]\nmode = \"none\"";

/// A designer, the Space, and two players with one agent each in it.
async fn league(arena: &Arena, source: &str, files: Value) -> (User, Vec<User>) {
    let designer = arena.user("dana", "designer").await;
    arena.publish(&designer, source, files).await;
    let slug = source.lines().next().unwrap().split('"').nth(1).unwrap().to_owned();
    let mut players = Vec::new();
    for name in ["ada", "bob"] {
        let player = arena.user(name, "player").await;
        player.agent(&format!("{name}-agent"), &slug).await;
        players.push(player);
    }
    (designer, players)
}

#[derive(sqlx::FromRow)]
struct Step {
    step: i32,
    moves: sqlx::types::Json<Vec<arena_server::store::turns::StoredMove>>,
    state: sqlx::types::Json<referee::State>,
}

/// Replays every stored step of `match_id` through the Space's referee:
/// the steps are numbered without a gap, each stored state is what the
/// referee makes of the stored answers, and the last one is over.
async fn replay(arena: &Arena, source: &str, files: &judge::files::SpaceFiles, match_id: uuid::Uuid) -> referee::State {
    let space = Space::parse(source, files, std::path::Path::new(".")).expect("the Space parses");
    let referee = space.game.expect("a multi-turn Space");
    let prompt: String = sqlx::query_scalar("select prompt from matches where id = $1")
        .bind(match_id)
        .fetch_one(&arena.db)
        .await
        .unwrap();
    let steps: Vec<Step> =
        sqlx::query_as("select step, moves, state from match_turns where match_id = $1 order by step")
            .bind(match_id)
            .fetch_all(&arena.db)
            .await
            .unwrap();
    assert!(!steps.is_empty(), "no stored steps");
    let mut state = referee.start(&prompt).unwrap();
    for (k, step) in steps.iter().enumerate() {
        assert_eq!(step.step, k as i32, "steps are numbered without a gap");
        let seats = referee.to_move(&state).unwrap();
        let answers: Vec<(usize, String)> = step.moves.0.iter().map(|m| (m.seat, m.text.clone())).collect();
        assert_eq!(answers.iter().map(|a| a.0).collect::<Vec<_>>(), seats, "step {k}: the seats that were to move");
        for m in &step.moves.0 {
            assert_eq!(m.view, referee.view(&state, &prompt, m.seat).unwrap(), "step {k}: the view shown");
        }
        state = referee.play(&state, &answers).unwrap();
        let stored = referee::State { transcript: state.transcript.clone(), ..step.state.0.clone() };
        assert_eq!(stored, state, "step {k}: the stored state is the referee's");
    }
    assert!(state.outcome.is_some(), "the last step ends the game");
    state
}

async fn first_settled(arena: &Arena) -> uuid::Uuid {
    sqlx::query_scalar("select id from matches where status = 'settled' order by created_at limit 1")
        .fetch_one(&arena.db)
        .await
        .unwrap()
}

/// (slot, rank, payout) of a match.
async fn results(arena: &Arena, id: uuid::Uuid) -> Vec<(i16, i32, i64)> {
    sqlx::query_as("select slot, rank, payout from match_agents where match_id = $1 order by slot")
        .bind(id)
        .fetch_all(&arena.db)
        .await
        .unwrap()
}

async fn verdict(arena: &Arena, id: uuid::Uuid) -> Value {
    sqlx::query_scalar("select verdict from verdicts where match_id = $1").bind(id).fetch_one(&arena.db).await.unwrap()
}

#[tokio::test]
async fn each_built_in_game_is_played_turn_by_turn_and_settled_by_its_outcome() {
    let cases = [
        // Tic-tac-toe with retries: the odd seat's first answer of every
        // turn is no move, its retry is; X takes the diagonal 3-5-7.
        ("ttt", "max_turns = 9", "kind = \"tic-tac-toe\"\nillegal = \"retry\"\nretries = 1", true),
        // Connect-four with penalties and legal play throughout.
        ("c4", "", "kind = \"connect-four\"\nillegal = \"penalty\"\npenalty = 0.25\nmax_illegal = 3", false),
        // A negotiation: 60 offered, accepted.
        ("deal", "max_turns = 6", "kind = \"negotiation\"\npot = 100", false),
    ];
    for (name, turns, referee_table, illegal_first) in cases {
        let arena = Arena::new().await;
        let source = game_space(name, turns, referee_table, NO_JUDGE);
        let (_, players) = league(&arena, &source, json!({})).await;
        arena.start(Roles::ALL, Some(Arc::new(GameStub { illegal_first })));
        arena.wait_settled(2, 60).await;
        arena.pause_all().await;
        arena.wait_settled(2, 30).await;
        arena.settled_exactly_once().await;
        arena.ledger_ok().await;
        let id = first_settled(&arena).await;
        let state = replay(&arena, &source, &Default::default(), id).await;
        let outcome = state.outcome.clone().unwrap();
        let v = verdict(&arena, id).await;
        assert_eq!(v["judge"]["mode"], "referee", "{name}: {v}");
        let ranks = referee::ranks(&outcome.scores);
        let got = results(&arena, id).await;
        for (slot, rank, _) in &got {
            assert_eq!(*rank as usize, ranks[*slot as usize], "{name}: rank of slot {slot} ({})", outcome.reason);
        }
        // The winner takes the pot; the verdict says so with a whole-game
        // pair, which is not kept as data (the seats answered different
        // views): it is counted as dropped.
        let pot: i64 = got.iter().map(|g| g.2).sum();
        assert_eq!(pot, 20, "{name}: the whole pot is paid");
        let winner = ranks.iter().position(|r| *r == 1).unwrap() as i16;
        let proposed: Vec<(i16, i16)> = v["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == "game")
            .map(|p| (p["chosen"].as_str().unwrap().parse().unwrap(), p["rejected"].as_str().unwrap().parse().unwrap()))
            .collect();
        assert_eq!(proposed, vec![(winner, 1 - winner)], "{name}: {}", outcome.reason);
        let pairs: i64 = sqlx::query_scalar("select count(*) from pairs where match_id = $1 and kind = 'whole'")
            .bind(id)
            .fetch_one(&arena.db)
            .await
            .unwrap();
        assert_eq!(pairs, 0, "{name}: whole-game pairs are not sold");
        // Decision pairs: each retried move's legal answer over its
        // illegal attempt, at the view the attempt answered.
        let decisions: Vec<(i16, i16, String, String, String)> = sqlx::query_as(
            "select chosen_slot, rejected_slot, prompt, chosen_text, rejected_text from pairs
             where match_id = $1 and kind = 'decision' order by step",
        )
        .bind(id)
        .fetch_all(&arena.db)
        .await
        .unwrap();
        let retried = if name == "ttt" { 3 } else { 0 };
        assert_eq!(decisions.len(), retried, "{name}: {decisions:?}");
        for (chosen, rejected, view, good, bad) in &decisions {
            assert_eq!((*chosen, *rejected), (1, 1), "O's own answers");
            assert!(view.contains(" | ") && !view.contains("not a legal move"), "the board, first asked: {view}");
            assert!(good.starts_with("move: ") && bad.contains("think"), "{good} over {bad}");
        }
        match name {
            "ttt" => {
                assert!(outcome.reason.contains("Player 1 (X) wins"), "{}", outcome.reason);
                assert_eq!(state.illegal, vec![0, 3], "every O turn took a retry");
                assert_eq!(v["passed_hard"]["1"], false);
                let steps: i64 = sqlx::query_scalar("select count(*) from match_turns where match_id = $1")
                    .bind(id)
                    .fetch_one(&arena.db)
                    .await
                    .unwrap();
                assert_eq!(steps, 10, "7 moves and 3 retries");
            }
            "c4" => assert!(outcome.reason.contains("wins with 4 in a row"), "{}", outcome.reason),
            _ => {
                assert!(outcome.reason.contains("deal"), "{}", outcome.reason);
                assert_eq!(outcome.scores, vec![0.6, 0.4]);
            }
        }
        // The players see their game's turns through the API.
        let (status, body) = players[0].get(&format!("/matches/{id}/turns")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["turns"].as_array().map(Vec::len), Some(state.transcript.len()), "{body}");
        let steps = body["steps"].as_i64().unwrap();
        assert!(body["next_from"].is_null() && body["turns"][0]["view"].is_null(), "views only on request");
        // Pages of steps: together the whole game, each bounded.
        let k = steps / 2;
        assert!(k >= 1, "{body}");
        let (_, first) = players[0].get(&format!("/matches/{id}/turns?limit={k}&views=true")).await;
        assert_eq!(first["next_from"].as_i64(), Some(k), "{first}");
        assert!(first["turns"].as_array().unwrap().iter().all(|t| t["step"].as_i64().unwrap() < k));
        assert!(first["turns"][0]["view"].as_str().is_some_and(|v| !v.is_empty()), "{first}");
        let (_, rest) = players[0].get(&format!("/matches/{id}/turns?from={k}&limit=200")).await;
        assert!(rest["next_from"].is_null(), "{rest}");
        let paged = first["turns"].as_array().unwrap().len() + rest["turns"].as_array().unwrap().len();
        assert_eq!(paged, state.transcript.len(), "{name}");
        assert_eq!((rest["steps"].as_i64(), &rest["outcome"]), (Some(steps), &body["outcome"]));
        for bad in ["limit=0", "limit=201", "from=-1"] {
            let (status, err) = players[0].get(&format!("/matches/{id}/turns?{bad}")).await;
            let field = bad.split('=').next().unwrap();
            assert_eq!((status, err["error"]["field"].as_str()), (422, Some(field)), "{bad}: {err}");
        }
    }
}

/// Answers as `GameStub`, except the first answer ever asked at an empty
/// tic-tac-toe board, which is no move (a test double).
struct ResignsFirst {
    empty_boards: AtomicUsize,
}

impl Generator for ResignsFirst {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let outputs = jobs
            .into_iter()
            .map(|job| {
                let board: Vec<&str> = job.prompt.lines().filter(|l| l.contains(" | ")).collect();
                let empty = board.len() == 3 && !board.iter().any(|l| l.contains('X') || l.contains('O'));
                let text = if empty && self.empty_boards.fetch_add(1, Ordering::SeqCst) == 0 {
                    "I resign.".to_owned()
                } else {
                    GameStub { illegal_first: false }.answer(&job.prompt, job.slot)
                };
                Ok(GenOutput { tokens: 2, text, finish: "end_of_turn".into() })
            })
            .collect();
        Box::pin(std::future::ready(outputs))
    }
}

#[tokio::test]
async fn moves_at_the_same_view_in_two_games_are_sold_as_decision_pairs() {
    let arena = Arena::new().await;
    let source = game_space("same", "", "kind = \"tic-tac-toe\"\nillegal = \"forfeit\"", NO_JUDGE)
        .replace(r#"inline = ["Play a fair game.", "A friendly game.", "Your best game."]"#, r#"inline = ["Play."]"#);
    league(&arena, &source, json!({})).await;
    arena.start(Roles::ALL, Some(Arc::new(ResignsFirst { empty_boards: AtomicUsize::new(0) })));
    arena.wait_settled(2, 60).await;
    arena.pause_all().await;
    arena.wait_settled(2, 30).await;
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
    let out = crate::cli::arena(&arena.env, &["verify-log", "same"], &[]);
    assert_eq!(out.status.code(), Some(0), "the records commit to the decision pairs: {}", crate::cli::text(&out));

    // The first game: X gave no move at the empty board and forfeited.
    // The second: X played 1 there and won. One view, two moves, two ends.
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("select id from matches where status = 'settled' order by seq")
        .fetch_all(&arena.db)
        .await
        .unwrap();
    type Row = (uuid::Uuid, Option<uuid::Uuid>, Option<uuid::Uuid>, String, String, String, f64);
    let pairs: Vec<Row> = sqlx::query_as(
        "select match_id, chosen_match_id, rejected_match_id, prompt, chosen_text, rejected_text, margin
             from pairs where kind = 'decision'",
    )
    .fetch_all(&arena.db)
    .await
    .unwrap();
    // Every later game plays 1 there: each pairs its move with the first
    // game's (the later games' moves are one move, so never a pair).
    assert_eq!(pairs.len(), ids.len() - 1, "{pairs:?}");
    let mut makers: Vec<uuid::Uuid> = pairs.iter().map(|p| p.0).collect();
    makers.sort();
    let mut later = ids[1..].to_vec();
    later.sort();
    assert_eq!(makers, later, "each later game's settlement made one");
    let (made_by, chosen_in, rejected_in, view, chosen, rejected, margin) = pairs[0].clone();
    assert_eq!((chosen_in, rejected_in), (None, Some(ids[0])), "its own move over the first game's");
    assert_eq!((chosen.as_str(), rejected.as_str(), margin), ("move: 1", "I resign.", 1.0));
    let board: Vec<&str> = view.lines().filter(|l| l.contains(" | ")).collect();
    assert!(board.len() == 3 && board.iter().all(|l| !l.contains('X') && !l.contains('O')), "the empty board: {view}");

    // A buyer selects them by kind and gets their own texts and matches.
    let bea = arena.user("bea", "buyer").await;
    let (status, body) = bea.get("/data/count?spaces=same&kind=decision").await;
    assert_eq!((status, body["pairs"].as_i64()), (200, Some(pairs.len() as i64)), "{body}");
    let (_, whole) = bea.get("/data/count?spaces=same&kind=whole").await;
    let stored: i64 =
        sqlx::query_scalar("select count(*) from pairs where kind = 'whole'").fetch_one(&arena.db).await.unwrap();
    assert_eq!(whole["pairs"].as_i64(), Some(stored), "{whole}");
    let (status, body) = bea.get("/data/count?kind=moves").await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("kind")), "{body}");
    let text =
        bea.client.get(arena.url("/data/pairs?spaces=same&kind=decision")).send().await.unwrap().text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), pairs.len(), "{text}");
    let line = lines.iter().find(|l| l["match_id"].as_str() == Some(made_by.to_string().as_str())).unwrap();
    assert_eq!((line["kind"].as_str(), line["prompt"].as_str()), (Some("decision"), Some(view.as_str())), "{line}");
    assert_eq!((line["chosen"].as_str(), line["rejected"].as_str()), (Some("move: 1"), Some("I resign.")));
    assert_eq!(line["rejected_match_id"].as_str(), Some(ids[0].to_string().as_str()), "{line}");
    assert_eq!(line["chosen_match_id"].as_str(), Some(made_by.to_string().as_str()), "{line}");
    assert!(line["step"].is_i64(), "{line}");
    // The dataset card counts them.
    let card = bea.client.get(arena.url("/data/card?spaces=same&kind=decision")).send().await.unwrap();
    let card = card.text().await.unwrap();
    let n = pairs.len();
    assert!(card.contains(&format!("| same | {n} | {n} |")), "{card}");
}

/// Only real preferences are kept and sold: a referee game's whole-game
/// pairs (seats that answered different views; a seat that never moved
/// reads "(no move)") are dropped and counted, and no row a buyer gets
/// has an empty chosen answer or two identical texts.
#[tokio::test]
async fn a_game_keeps_only_real_preferences_and_reports_what_it_dropped() {
    let arena = Arena::new().await;
    let source = game_space("real", "", "kind = \"tic-tac-toe\"\nillegal = \"retry\"\nretries = 2", NO_JUDGE);
    let (dana, _) = league(&arena, &source, json!({})).await;
    arena.start(Roles::ALL, Some(Arc::new(GameStub { illegal_first: true })));
    arena.wait_settled(3, 60).await;
    arena.pause_all().await;
    arena.wait_settled(3, 30).await;
    arena.settled_exactly_once().await;
    let out = crate::cli::arena(&arena.env, &["verify-log", "real"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", crate::cli::text(&out));

    // The referee's outcomes proposed whole-game pairs; none was kept.
    let proposed: i64 = sqlx::query_scalar(
        "select count(*) from verdicts v, jsonb_array_elements(v.verdict->'pairs') p where p->>'kind' = 'game'",
    )
    .fetch_one(&arena.db)
    .await
    .unwrap();
    assert!(proposed > 0, "the games had winners");
    let kept: i64 =
        sqlx::query_scalar("select count(*) from pairs where kind = 'whole'").fetch_one(&arena.db).await.unwrap();
    assert_eq!(kept, 0);
    let decisions: i64 =
        sqlx::query_scalar("select count(*) from pairs where kind = 'decision'").fetch_one(&arena.db).await.unwrap();
    assert!(decisions > 0, "the retried moves' pairs are kept");
    let dropped: i64 = sqlx::query_scalar("select pairs from pair_drops where reason = 'different_views'")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    assert_eq!(dropped, proposed, "each dropped pair counted once");
    // Reported on the studio's analytics, as JSON and on the page.
    let (status, a) = dana.get("/spaces/real/analytics").await;
    assert_eq!((status, a["pairs_dropped"]["different_views"].as_i64()), (200, Some(dropped)), "{a}");
    let page = dana.client.get(format!("{}/studio/real/analytics", arena.address)).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("different_views <strong>"), "{page}");

    // What a buyer gets: no empty chosen answer, never two identical texts.
    let bea = arena.user("bea", "buyer").await;
    let text = bea.client.get(arena.url("/data/pairs?spaces=real")).send().await.unwrap().text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as i64, decisions, "{text}");
    for line in &lines {
        let (chosen, rejected) = (line["chosen"].as_str().unwrap(), line["rejected"].as_str().unwrap());
        assert!(!chosen.trim().is_empty() && chosen.trim() != rejected.trim(), "{line}");
    }
    let card = bea.client.get(arena.url("/data/card?spaces=real")).send().await.unwrap().text().await.unwrap();
    assert!(card.contains("## Data quality") && card.contains(&format!("different views | {dropped} |")), "{card}");
}

/// Two judge batches of one Space at once (two judge processes): the one
/// with the game that resigned at the empty board and the one with the
/// games that played there. Judged one after the other they make either
/// one pair per later game (resignation first) or one pair, made by the
/// resigned game (it last); judged blind to each other, none. The batches
/// start together, so without the Space's lock the second reads the
/// moves before the first has kept them.
#[tokio::test]
async fn concurrent_judge_batches_pair_moves_as_if_one_after_the_other() {
    use arena_server::work::runner::Work;
    let arena = Arena::new().await;
    let source = game_space("race", "", "kind = \"tic-tac-toe\"\nillegal = \"forfeit\"", NO_JUDGE)
        .replace(r#"inline = ["Play a fair game.", "A friendly game.", "Your best game."]"#, r#"inline = ["Play."]"#)
        .replace("max_concurrent_matches = 1", "max_concurrent_matches = 6");
    league(&arena, &source, json!({})).await;
    // An agent plays one match at a time: twelve make six at once.
    for i in 0..10 {
        arena.user(&format!("player{i}"), "player").await.agent(&format!("agent{i}"), "race").await;
    }
    // No judge role: games pile up generated.
    let roles = Roles { web: true, runtime: true, judge: false, trainer: false };
    arena.start(roles, Some(Arc::new(ResignsFirst { empty_boards: AtomicUsize::new(0) })));
    let generated = || async {
        sqlx::query_scalar::<_, uuid::Uuid>("select id from matches where status = 'generated' order by seq")
            .fetch_all(&arena.db)
            .await
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while generated().await.len() < 5 {
        assert!(std::time::Instant::now() < deadline, "games: {:?}", arena.status_counts().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    arena.pause_all().await;
    let ids = generated().await;
    let resigned: Vec<uuid::Uuid> = sqlx::query_scalar(
        "select distinct match_id from outputs where match_id = any($1) and text like '%I resign.%'",
    )
    .bind(&ids)
    .fetch_all(&arena.db)
    .await
    .unwrap();
    assert_eq!(resigned.len(), 1, "one game resigned at the empty board");
    let played: Vec<uuid::Uuid> = ids.iter().filter(|id| **id != resigned[0]).copied().collect();

    let worker = judge::worker::JudgeWorker::start(arena.settings.model.path.clone(), 1, 16).unwrap();
    let stage = arena_server::work::judge::JudgeStage::new(worker);
    let (a, b) = tokio::join!(stage.run(&arena.ctx, &resigned), stage.run(&arena.ctx, &played));
    assert_eq!(a.unwrap().len() + b.unwrap().len(), ids.len(), "every game judged");

    let made: Vec<(uuid::Uuid, String, String)> = sqlx::query_as(
        "select v.match_id, p->>'chosen_text', p->>'rejected_text'
         from verdicts v, jsonb_array_elements(v.verdict->'pairs') p
         where v.match_id = any($1) and p->>'kind' = 'decision'",
    )
    .bind(&ids)
    .fetch_all(&arena.db)
    .await
    .unwrap();
    assert!(
        made.iter().all(|(_, chosen, rejected)| chosen == "move: 1" && rejected == "I resign."),
        "every pair is a move over the resignation: {made:?}"
    );
    let resigned_last = made.len() == 1 && made[0].0 == resigned[0];
    let resigned_first = made.len() == played.len() && made.iter().all(|(m, _, _)| played.contains(m));
    assert!(resigned_first || resigned_last, "{} pairs of {} games: {made:?}", made.len(), ids.len());
}

#[tokio::test]
async fn a_simultaneous_game_asks_both_seats_each_turn_and_pairs_their_answers_to_one_view() {
    let arena = Arena::new().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../spaces");
    let read = judge::files::read_space(&root.join("rock-paper-scissors.toml")).unwrap();
    let source = read.source.replace("max_concurrent_matches = 4", "max_concurrent_matches = 1").replace(
        r#"inline = ["rounds: 3", "rounds: 5", "Play well. rounds: 3", "rounds: 1"]"#,
        r#"inline = ["rounds: 3"]"#,
    );
    // The league reads the slug from the first line.
    let source = format!("name = \"rock-paper-scissors\"\n{}", source.replace("name = \"rock-paper-scissors\"\n", ""));
    let files = read.files.clone();
    league(&arena, &source, json!(files)).await;
    arena.start(Roles::ALL, Some(Arc::new(GameStub { illegal_first: false })));
    arena.wait_settled(1, 60).await;
    arena.pause_all().await;
    arena.wait_settled(1, 30).await;
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
    let id = first_settled(&arena).await;
    let state = replay(&arena, &source, &files, id).await;
    // The stub's seat 0 plays rock, seat 1 scissors: 3-0, one step a round.
    assert_eq!(state.outcome.as_ref().unwrap().reason, "3-0 after 3 rounds");
    let steps: Vec<(i32, i64)> = sqlx::query_as(
        "select step, jsonb_array_length(moves)::int8 from match_turns where match_id = $1 order by step",
    )
    .bind(id)
    .fetch_all(&arena.db)
    .await
    .unwrap();
    assert_eq!(steps, vec![(0, 2), (1, 2), (2, 2)], "both seats answer every step");
    // Each round both seats answered one view: rock (won) over scissors.
    type Row = (String, String, String, Option<uuid::Uuid>, Option<uuid::Uuid>);
    let pairs: Vec<Row> = sqlx::query_as(
        "select prompt, chosen_text, rejected_text, chosen_match_id, rejected_match_id from pairs
         where match_id = $1 and kind = 'decision' and chosen_match_id is null and rejected_match_id is null
         order by step",
    )
    .bind(id)
    .fetch_all(&arena.db)
    .await
    .unwrap();
    assert_eq!(pairs.len(), 3, "{pairs:?}");
    for (k, (view, chosen, rejected, ..)) in pairs.iter().enumerate() {
        assert!(view.contains(&format!("round {} of 3", k + 1)), "{view}");
        assert_eq!((chosen.as_str(), rejected.as_str()), ("Rock.", "I choose scissors."));
    }
}

#[tokio::test]
async fn a_debate_is_judged_on_each_side_s_whole_part() {
    let arena = Arena::new().await;
    let judge = "[[verifiers]]\nname = \"gives reasons\"\nkind = \"regex\"\npattern = \"because\"\nhard = false\n\n[judge]\nmode = \"none\"";
    let source = game_space("debate", "rounds = 2", "kind = \"debate\"", judge);
    league(&arena, &source, json!({})).await;
    arena.start(Roles::ALL, Some(Arc::new(GameStub { illegal_first: false })));
    arena.wait_settled(1, 60).await;
    arena.pause_all().await;
    arena.wait_settled(1, 30).await;
    arena.settled_exactly_once().await;
    let id = first_settled(&arena).await;
    let state = replay(&arena, &source, &Default::default(), id).await;
    assert!(state.outcome.as_ref().unwrap().judged);
    assert_eq!(state.transcript.len(), 4, "two rounds of two speeches");
    let v = verdict(&arena, id).await;
    assert_ne!(v["judge"]["mode"], "referee");
    // Each output is its seat's whole part: both of its speeches.
    let text: String = sqlx::query_scalar("select text from outputs where match_id = $1 and slot = 0")
        .bind(id)
        .fetch_one(&arena.db)
        .await
        .unwrap();
    assert_eq!(text.matches("because").count(), 2, "{text}");
    assert_eq!(results(&arena, id).await.iter().map(|r| r.1).collect::<Vec<_>>(), vec![1, 2]);
    // And round by round: each round's two speeches ranked as a match.
    let rounds = v["rounds"].as_array().expect("per-round scores");
    assert_eq!(rounds.len(), 2, "{v}");
    for (i, r) in rounds.iter().enumerate() {
        assert_eq!(r["round"], i + 1);
        let (a, b) = (r["scores"]["0"].as_f64().unwrap(), r["scores"]["1"].as_f64().unwrap());
        assert!(a > b, "the side giving reasons wins round {}: {r}", i + 1);
    }
    let turns: Value = reqwest::get(arena.url(&format!("/matches/{id}/turns"))).await.unwrap().json().await.unwrap();
    assert_eq!(turns["rounds"], v["rounds"], "{turns}");
    let page = arena.get(&format!("/matches/{id}")).await.text().await.unwrap();
    assert_eq!(page.matches("round 1: ").count(), 2, "each side's first speech shows its round score");
    arena.ledger_ok().await;
}

const COUNT_TO_TEN: &str = r#"
fn init(seats, prompt) { #{ total: 0, seats: seats } }
fn to_move(state) { state.total % state.seats }
fn view(state, seat) { `The total is ${state.total}. Say something; its length moves the total.` }
fn play(state, seat, answer) {
    let n = answer.len() % 3 + 1;
    state.total += n;
    if state.total >= 10 {
        let scores = [];
        for s in 0..state.seats { scores.push(if s == seat { 1.0 } else { 0.0 }); }
        return #{ state: state, legal: true, note: `+${n}`, scores: scores, reason: "reached ten" };
    }
    #{ state: state, legal: true, note: `+${n}` }
}
"#;

#[tokio::test]
async fn a_script_referee_plays_and_a_runaway_script_fails_its_match_with_a_refund() {
    let arena = Arena::new().await;
    let source = game_space("count", "max_turns = 30", "kind = \"script\"\nscript = \"count.rhai\"", NO_JUDGE);
    let files: judge::files::SpaceFiles = [("count.rhai".to_owned(), COUNT_TO_TEN.to_owned())].into();
    league(&arena, &source, json!(files)).await;
    arena.start(Roles::ALL, Some(Arc::new(GameStub { illegal_first: false })));
    arena.wait_settled(1, 60).await;
    arena.pause_all().await;
    arena.wait_settled(1, 30).await;
    let id = first_settled(&arena).await;
    let state = replay(&arena, &source, &files, id).await;
    assert_eq!(state.outcome.as_ref().unwrap().reason, "reached ten");
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;

    // A script whose `play` never ends, and one that allocates without
    // end: each match fails with the limit as its reason, every fee goes
    // back, and the worker goes on.
    for (body, reason, max_ms) in [
        ("let n = 1; loop { n += 1; }", "operations|longer than", 200),
        (
            "let n = 1; let hoard = []; loop { hoard.push(\"xxxxxxxxxxxxxxxx\"); }",
            "too large|operations|longer than",
            200,
        ),
        // Memory no size limit sees (map keys), held at every level of a
        // recursion: stopped at the call's memory budget (given the time to
        // reach it on a busy machine). Before the budget this reached 1.1 GB.
        ("let n = grow(\"x\", 30);", "MiB of memory", 1000),
        // A state nested 900 maps deep: refused before it is converted or
        // stored (nine thousand arrays deep overflowed a worker's stack).
        ("let m = #{}; for i in 0..900 { m = #{ x: m }; } state.deep = m; let n = 1;", "nested deeper than", 1000),
    ] {
        runaway_fails_with_a_refund(body, reason, max_ms).await;
    }
}

/// A Space whose referee fails match after match is paused by the
/// platform, its designer told why; every match is refunded; resuming
/// clears the reason.
#[tokio::test]
async fn a_space_whose_referee_keeps_failing_is_paused_with_the_reason() {
    let arena = Arena::new().await;
    let broken = COUNT_TO_TEN.replace(
        "let n = answer.len() % 3 + 1;",
        "let m = #{}; for i in 0..900 { m = #{ x: m }; } state.deep = m; let n = 1;",
    );
    let source = game_space("broken", "max_turns = 30", "kind = \"script\"\nscript = \"count.rhai\"", NO_JUDGE);
    let files: judge::files::SpaceFiles = [("count.rhai".to_owned(), broken)].into();
    let (dana, players) = league(&arena, &source, json!(files)).await;
    let before = [players[0].balance().await, players[1].balance().await];
    arena.start(Roles::ALL, Some(Arc::new(GameStub { illegal_first: false })));
    let paused = crate::helpers::eventually(90, || async {
        !sqlx::query_scalar::<_, bool>("select active from spaces where slug = 'broken'")
            .fetch_one(&arena.db)
            .await
            .unwrap()
    })
    .await;
    assert!(paused, "{:?}", arena.status_counts().await);
    let failed: i64 =
        sqlx::query_scalar("select count(*) from matches where status = 'failed'").fetch_one(&arena.db).await.unwrap();
    assert!(failed >= arena_server::store::spaces::REFEREE_FAILURES_TO_PAUSE, "{failed}");
    let reason: String = sqlx::query_scalar("select paused_reason from spaces where slug = 'broken'")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    assert!(reason.contains("its referee failed") && reason.contains("nested deeper"), "{reason}");
    let studio = dana.client.get(format!("{}/studio", arena.address)).send().await.unwrap().text().await.unwrap();
    assert!(studio.contains("by the platform: its referee failed"), "{studio}");
    every_match_failed_and_refunded(&arena, &players, before).await;
    // Resumed by its designer: the reason goes.
    let (status, body) = dana.patch("/spaces/broken", json!({"active": true})).await;
    assert_eq!(status, 200, "{body}");
    arena.pause_all().await;
    let reason: Option<String> = sqlx::query_scalar("select paused_reason from spaces where slug = 'broken'")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    assert_eq!(reason, None);
}

/// A referee helper that holds ~30 MB of map keys at each of `n` levels.
const GROW: &str = r#"
fn grow(s, n) {
    while s.len() < 30000 { s += s; }
    let m = #{};
    for j in 0..900 { m[s + n + "-" + j] = j; }
    if n > 0 { grow(s, n - 1) + m.len() } else { m.len() }
}
"#;

/// The process's peak resident memory, in MiB (Linux).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

async fn runaway_fails_with_a_refund(body: &str, reason: &str, max_ms: u32) {
    let arena = Arena::new().await;
    let runaway = format!("{}{GROW}", COUNT_TO_TEN.replace("let n = answer.len() % 3 + 1;", body));
    let referee = format!("kind = \"script\"\nscript = \"count.rhai\"\nmax_ms = {max_ms}\nmax_operations = 2000000");
    let source = game_space("runaway", "max_turns = 30", &referee, NO_JUDGE);
    let files: judge::files::SpaceFiles = [("count.rhai".to_owned(), runaway)].into();
    let (_, players) = league(&arena, &source, json!(files)).await;
    let before = [players[0].balance().await, players[1].balance().await];
    arena.start(Roles::ALL, Some(Arc::new(GameStub { illegal_first: false })));
    let failed = crate::helpers::eventually(30, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from matches where status = 'failed'")
            .fetch_one(&arena.db)
            .await
            .unwrap()
            >= 2
    })
    .await;
    arena.pause_all().await;
    assert!(failed, "{:?}", arena.status_counts().await);
    let errors: Vec<String> =
        sqlx::query_scalar("select error from matches where status = 'failed'").fetch_all(&arena.db).await.unwrap();
    for error in &errors {
        assert!(error.contains("count.rhai: play") && reason.split('|').any(|r| error.contains(r)), "{error}");
    }
    // What formed before the pause fails the same way.
    every_match_failed_and_refunded(&arena, &players, before).await;
    // The server answers, its pages too, and its memory stayed bounded
    // (the script threads × the 64 MiB budget above what a test uses).
    assert_eq!(arena.health().await.0, 200);
    let id: uuid::Uuid = sqlx::query_scalar("select id from matches where status = 'failed' limit 1")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    assert_eq!(arena.get(&format!("/matches/{id}")).await.status(), 200);
    let turns = reqwest::get(arena.url(&format!("/matches/{id}/turns"))).await.unwrap();
    assert_eq!(turns.status(), 200);
    let peak = peak_rss_mib();
    assert!(peak < 700, "peak RSS {peak} MiB");
}

/// Test double: the game stub for the first `left` answers, then a worker
/// that hangs (as one that died mid-game).
struct StubThenHang {
    left: AtomicUsize,
}

impl Generator for StubThenHang {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let n = jobs.len();
        if self.left.load(Ordering::SeqCst) < n {
            return Box::pin(std::future::pending());
        }
        self.left.fetch_sub(n, Ordering::SeqCst);
        GameStub { illegal_first: false }.generate(jobs)
    }
}

#[tokio::test]
async fn a_worker_killed_mid_game_is_resumed_at_its_step_and_settled_once() {
    let mut arena = Arena::new().await;
    let source = game_space("resume", "", "kind = \"connect-four\"", NO_JUDGE);
    league(&arena, &source, json!({})).await;
    arena.start(Roles { web: true, judge: true, ..Roles::NONE }, None);
    arena.start(Roles { runtime: true, ..Roles::NONE }, Some(Arc::new(StubThenHang { left: AtomicUsize::new(5) })));
    let stepped = crate::helpers::eventually(20, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from match_turns").fetch_one(&arena.db).await.unwrap() >= 5
    })
    .await;
    assert!(stepped, "five steps before the worker hangs");
    tokio::time::sleep(Duration::from_millis(300)).await;
    arena.pause_all().await;
    let before: i64 = sqlx::query_scalar("select count(*) from match_turns").fetch_one(&arena.db).await.unwrap();
    assert_eq!(before, 5, "the hung worker stored nothing more");
    let formed: i64 =
        sqlx::query_scalar("select count(*) from matches where status = 'formed'").fetch_one(&arena.db).await.unwrap();
    assert_eq!(formed, 1);
    // Kill it; a new process takes the match over from its sixth step.
    arena.stop_workers();
    arena.start(Roles::ALL, Some(Arc::new(GameStub { illegal_first: false })));
    arena.wait_settled(1, 30).await;
    let id = first_settled(&arena).await;
    let state = replay(&arena, &source, &Default::default(), id).await;
    assert!(state.transcript.len() > 5);
    let sixth: (i32, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("select step, created_at from match_turns where match_id = $1 and step = 5")
            .bind(id)
            .fetch_one(&arena.db)
            .await
            .unwrap();
    assert_eq!(sixth.0, 5);
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}

#[tokio::test]
async fn a_game_on_the_real_model() {
    let arena = Arena::new().await;
    let source = game_space(
        "real",
        "max_tokens_per_turn = 12",
        "kind = \"tic-tac-toe\"\nillegal = \"penalty\"\npenalty = 0.1\nmax_illegal = 9",
        NO_JUDGE,
    );
    league(&arena, &source, json!({})).await;
    let runtime = agent_runtime::engine::Runtime::load(&crate::helpers::model_path(), 2).unwrap();
    let engine = agent_runtime::engine::Engine::start(Arc::new(runtime), Default::default());
    let generator = Arc::new(arena_server::work::generate::EngineGenerator { engine });
    arena.start(Roles { web: true, judge: true, ..Roles::NONE }, None);
    arena.start(Roles { runtime: true, ..Roles::NONE }, Some(generator));
    arena.wait_settled(1, 300).await;
    arena.pause_all().await;
    arena.wait_settled(1, 300).await;
    let id = first_settled(&arena).await;
    let state = replay(&arena, &source, &Default::default(), id).await;
    // The model's answers are what the referee read, move by move.
    assert!(!state.transcript.is_empty());
    eprintln!(
        "real-model game: {} answers, {} legal, outcome: {}",
        state.transcript.len(),
        state.transcript.iter().filter(|e| e.legal).count(),
        state.outcome.as_ref().unwrap().reason
    );
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}

/// Test double: the game stub, one call per permit of a semaphore the test
/// holds, so a game advances only when the test lets it.
struct HeldGame(Arc<tokio::sync::Semaphore>);

impl Generator for HeldGame {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let gate = self.0.clone();
        Box::pin(async move {
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            GameStub { illegal_first: false }.generate(jobs).await
        })
    }
}

/// Test double: the game stub, slowed down so a game stays in flight.
struct SlowGame(Duration);

impl Generator for SlowGame {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let delay = self.0;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            GameStub { illegal_first: false }.generate(jobs).await
        })
    }
}

#[tokio::test]
async fn a_game_is_followed_live_and_replayed_step_by_step_in_the_browser() {
    use crate::browser::Browser;
    let arena = Arena::new().await;
    let source = game_space("ttt", "", "kind = \"tic-tac-toe\"", NO_JUDGE);
    league(&arena, &source, json!({})).await;
    // One game in flight, held after its first step until the page is open.
    let gate = Arc::new(tokio::sync::Semaphore::new(1));
    arena.start(Roles::ALL, Some(Arc::new(HeldGame(gate.clone()))));
    let formed = crate::helpers::eventually(10, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from match_turns").fetch_one(&arena.db).await.unwrap() >= 1
    })
    .await;
    assert!(formed);
    let id: uuid::Uuid =
        sqlx::query_scalar("select id from matches order by created_at limit 1").fetch_one(&arena.db).await.unwrap();
    let b = Browser::start(&arena, 1280, 1600).await;
    b.open(&format!("/matches/{id}")).await;
    b.client.execute("window.__marker = 7", vec![]).await.unwrap();
    let before: Value =
        b.client.execute("return document.querySelectorAll('ol.turns li').length", vec![]).await.unwrap();
    assert_eq!(before, 1, "the page opened after the first step");
    gate.add_permits(64);
    // The page follows the game turn by turn, in place.
    assert!(b.wait_text("#game + ul", "wins", 30).await, "the game did not end live: {}", b.body().await);
    let after: Value =
        b.client.execute("return document.querySelectorAll('ol.turns li').length", vec![]).await.unwrap();
    assert!(after.as_u64() > before.as_u64(), "turns {before} → {after}");
    let marker: Value = b.client.execute("return window.__marker", vec![]).await.unwrap();
    assert_eq!(marker, 7, "updated in place, not reloaded");
    arena.pause_all().await;
    arena.wait_settled(1, 30).await;
    b.open(&format!("/matches/{id}")).await;
    let marks: Value = b
        .client
        .execute("return document.querySelectorAll('table.board td.x, table.board td.o').length", vec![])
        .await
        .unwrap();
    assert_eq!(marks, 7, "X takes 3-5-7 on the seventh move");
    assert!(b.body().await.contains("decided by the game's outcome"));
    b.shot("game-match-desktop").await;
    // Replay: the start, then one step at a time, by links.
    b.click("nav.replay a[href$='step=0#game']").await;
    assert!(b.wait_text("nav.replay span", "the start", 5).await);
    let marks: Value = b
        .client
        .execute("return document.querySelectorAll('table.board td.x, table.board td.o').length", vec![])
        .await
        .unwrap();
    assert_eq!(marks, 0);
    b.click("nav.replay a[rel=next]").await;
    assert!(b.wait_text("nav.replay span", "step 1 of 7", 5).await, "{}", b.body().await);
    let x: Value =
        b.client.execute("return document.querySelectorAll('table.board td.x').length", vec![]).await.unwrap();
    assert_eq!(x, 1);
    b.shot("game-replay-step1-desktop").await;
    // At phone width: nothing scrolls sideways.
    let p = Browser::start(&arena, 360, 1400).await;
    p.open(&format!("/matches/{id}?step=4")).await;
    let wide: Value =
        p.client.execute("return document.documentElement.scrollWidth > window.innerWidth + 1", vec![]).await.unwrap();
    assert_eq!(wide, false, "the game scrolls sideways at 360 px");
    p.shot("game-match-phone").await;
}

#[tokio::test]
async fn a_game_agent_trains_on_its_decisions_and_is_gated_by_playing_its_parent() {
    let arena = Arena::new().await;
    let source = game_space("ttt-train", "max_tokens_per_turn = 10", "kind = \"tic-tac-toe\"", NO_JUDGE)
        .replace(
            "inline = [\"Play a fair game.\", \"A friendly game.\", \"Your best game.\"]",
            "inline = [\"opening: 1\", \"opening: 2\", \"opening: 3\", \"opening: 4\", \"opening: 5\", \"opening: 6\"]",
        )
        .replace("[pairs]", "[training]\nholdout = 0.34\n\n[pairs]");
    let space = Space::parse(&source, &Default::default(), std::path::Path::new(".")).unwrap();
    assert_eq!(space.held_out.len(), 2);
    let (_, players) = league(&arena, &source, json!({})).await;
    // A few stub games first (the job's pairs are its own self-play's).
    arena.start(Roles::ALL, Some(Arc::new(GameStub { illegal_first: false })));
    arena.wait_settled(4, 60).await;
    arena.pause_all().await;
    arena.wait_settled(4, 30).await;
    let agent: String = sqlx::query_scalar::<_, uuid::Uuid>("select id from agents where name = 'ada-agent'")
        .fetch_one(&arena.db)
        .await
        .unwrap()
        .to_string();
    let settings = json!({"steps": 2, "batch_size": 2, "max_length": 160, "max_prompt_length": 128, "rank": 4,
                          "alpha": 8, "target_modules": ["q_proj", "v_proj"], "min_pairs": 1, "max_pairs": 8,
                          "gate_prompts": 4, "learning_rate": 0.001});
    let (status, job) = players[0]
        .post(&format!("/agents/{agent}/training-jobs"), json!({"space": "ttt-train", "settings": settings}))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    arena.start(Roles { trainer: true, ..Roles::NONE }, None);
    let job = crate::training::wait_finished(&players[0], &id, 300).await;
    assert_ne!(job["status"], "failed", "{job}");
    // DPO trained on decisions: each pair's prompt is a board the agent was shown.
    let pairs = job["manifest"]["pairs"]["items"].as_array().expect("the manifest lists its pairs");
    assert!(!pairs.is_empty());
    assert!(pairs.iter().all(|p| p["id"].as_str().unwrap().starts_with("decision-")), "{pairs:?}");
    // (The job's folder, with its pairs file, is cleared when the job ends.)
    // The gate played the parent from the held-out openings, seats swapped.
    let games = job["gate"]["games"].as_array().unwrap();
    assert_eq!(games.len(), 4, "{games:?}");
    assert!(games.iter().all(|g| space.held_out.contains(&(g["prompt_index"].as_u64().unwrap() as usize))));
    assert_eq!(games.iter().filter(|g| g["new_first"] == true).count(), 2);
    assert_eq!(job["new_version"], 2);

    // GRPO with per-turn rewards: answers sampled at positions of the
    // parent's self-play, each rewarded by how its line ended.
    let grpo = json!({"objective": "grpo", "steps": 2, "group": 3, "prompts_per_step": 2, "iterations": 1,
                      "max_length": 160, "max_prompt_length": 128, "rank": 4, "alpha": 8,
                      "target_modules": ["q_proj", "v_proj"], "gate_prompts": 4, "learning_rate": 0.001});
    let (status, job) = players[0]
        .post(&format!("/agents/{agent}/training-jobs"), json!({"space": "ttt-train", "settings": grpo}))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let job = crate::training::wait_finished(&players[0], &id, 300).await;
    assert_ne!(job["status"], "failed", "{job}");
    let manifest = &job["manifest"];
    assert_eq!(manifest["objective"], "grpo", "{manifest}");
    assert!(manifest["prompt_source"].as_str().unwrap().contains("self-play"), "{manifest}");
    let metrics = job["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 2, "{metrics:?}");
    for m in metrics {
        // Rewards are seats' scores: a loss 0, a draw ½, a win 1.
        let mean = m["reward_mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&mean), "{m}");
        assert_eq!(m["groups"], 2, "{m}");
    }
    let games = job["gate"]["games"].as_array().unwrap();
    assert_eq!(games.len(), 4, "the gate plays as for DPO: {games:?}");

    // A DPO job by epochs is priced for the decision pairs it may make
    // (max_pairs of them), not for the whole-game pairs it pinned.
    let mut by_epochs = settings.clone();
    by_epochs.as_object_mut().unwrap().remove("steps");
    by_epochs["epochs"] = json!(2);
    by_epochs["max_pairs"] = json!(40);
    let (status, job) = players[0]
        .post(&format!("/agents/{agent}/training-jobs"), json!({"space": "ttt-train", "settings": by_epochs}))
        .await;
    assert_eq!(status, 202, "{job}");
    let pinned = job["pairs"].as_i64().unwrap();
    assert!(pinned < 40, "fewer whole-game pairs than max_pairs: {job}");
    assert_eq!(job["token_budget"].as_i64(), Some(2 * 40 * 2 * 160), "{job}");
    arena.ledger_ok().await;
}

#[tokio::test]
async fn a_game_whose_turns_keep_failing_is_dead_lettered_and_refunded() {
    let arena = Arena::new().await;
    let source = game_space("poison", "", "kind = \"tic-tac-toe\"", NO_JUDGE);
    let (_, players) = league(&arena, &source, json!({})).await;
    let before = [players[0].balance().await, players[1].balance().await];
    arena.start(Roles::ALL, Some(Arc::new(crate::arena::FailingGenerator)));
    let error = arena.first_failure(30).await;
    assert!(error.contains("generate stage: failed"), "{error}");
    every_match_failed_and_refunded(&arena, &players, before).await;
}

#[tokio::test]
async fn a_game_survives_redis_losing_everything_mid_game() {
    let arena = Arena::new().await;
    let source = game_space("flushed", "", "kind = \"connect-four\"", NO_JUDGE);
    league(&arena, &source, json!({})).await;
    arena.start(Roles::ALL, Some(Arc::new(SlowGame(Duration::from_millis(150)))));
    let mid_game = crate::helpers::eventually(20, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from match_turns").fetch_one(&arena.db).await.unwrap() >= 3
    })
    .await;
    assert!(mid_game);
    // The next step's message is lost with everything else; the reconciler
    // finds the game stalled and hands it on from its stored step.
    arena.flush_redis().await;
    arena.pause_all().await;
    arena.wait_settled(1, 60).await;
    let id = first_settled(&arena).await;
    replay(&arena, &source, &Default::default(), id).await;
    arena.settled_exactly_once().await;
    arena.ledger_ok().await;
}

/// Waits until every match failed (those formed before a pause too), then
/// checks that both players hold what they held before and the books agree.
async fn every_match_failed_and_refunded(arena: &Arena, players: &[User], before: [i64; 2]) {
    let all_failed = crate::helpers::eventually(30, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from matches where status <> 'failed'")
            .fetch_one(&arena.db)
            .await
            .unwrap()
            == 0
    })
    .await;
    assert!(all_failed, "{:?}", arena.status_counts().await);
    assert_eq!([players[0].balance().await, players[1].balance().await], before, "every fee refunded");
    arena.ledger_ok().await;
}
