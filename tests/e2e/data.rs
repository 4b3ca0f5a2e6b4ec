//! Preference data for buyers: the SQL filter selects exactly what
//! `PairFilter::keeps` says (random filters against the rows of a real
//! pipeline run), and the export writes TRL's formats with provenance.

use crate::arena::{Arena, quick_space};
use arena_server::domain::dataset::PairFilter;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

#[tokio::test]
async fn filters_select_exactly_what_they_say_and_exports_are_trls_formats() {
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    arena.publish(&dana, &quick_space("quick", 2, 4), json!({})).await;
    let mailing = quick_space("mailing", 2, 4)
        .replace("What is 2 + 3?", "Mail ada@example.com: what is 2 + 3?")
        .replace("license = \"CC-BY-4.0\"", "license = \"CC0-1.0\"");
    arena.publish(&dana, &mailing, json!({})).await;
    for i in 0..4 {
        let player = arena.user(&format!("player{i}"), "player").await;
        let agent = player.agent(&format!("a{i}"), "quick").await;
        let (status, body) = player.post(&format!("/agents/{agent}/entries"), json!({"space": "mailing"})).await;
        assert_eq!(status, 201, "{body}");
    }
    arena.start(arena_server::app::Roles::ALL, None);
    let made = crate::helpers::eventually(60, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from pairs").fetch_one(&arena.db).await.unwrap() >= 40
    })
    .await;
    assert!(made, "{:?}", arena.status_counts().await);
    arena.pause_all().await;
    arena.wait_settled(1, 30).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // Random filters around the rows' own values: SQL and the definition agree.
    let facts = arena_server::store::pairs::all_facts(&arena.db).await.unwrap();
    assert!(facts.len() >= 40);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let pick = |rng: &mut rand::rngs::StdRng| facts[rng.random_range(0..facts.len())].clone();
    for round in 0..150 {
        let (a, b) = (pick(&mut rng), pick(&mut rng));
        let mut f = PairFilter::default();
        if rng.random_bool(0.3) {
            f.spaces = vec![a.space.clone()];
        }
        if rng.random_bool(0.3) {
            f.from = Some(a.created_at.min(b.created_at));
        }
        if rng.random_bool(0.3) {
            f.to = Some(a.created_at.max(b.created_at));
        }
        if rng.random_bool(0.3) {
            f.min_margin = Some(a.margin);
        }
        f.agreed_only = rng.random_bool(0.3);
        if rng.random_bool(0.4) {
            f.min_rating = Some(a.chosen_rating.min(b.rejected_rating));
        }
        if rng.random_bool(0.4) {
            f.max_rating = Some(a.chosen_rating.max(b.rejected_rating));
        }
        if rng.random_bool(0.3) {
            f.min_chars = Some(a.chosen_chars.min(b.rejected_chars));
        }
        if rng.random_bool(0.3) {
            f.max_chars = Some(a.chosen_chars.max(b.rejected_chars));
        }
        if f.check().is_err() {
            continue;
        }
        let want = facts.iter().filter(|p| f.keeps(p)).count() as i64;
        let got = arena_server::store::pairs::count_filtered(&arena.db, &f).await.unwrap();
        assert_eq!(got, want, "round {round}: {f:?}");
    }

    // The export: only buyers; bad input names its field.
    let bea = arena.user("bea", "buyer").await;
    let ada = arena.user("ada", "player").await;
    assert_eq!(ada.get("/data/count").await.0, 403);
    let (status, body) = bea.get("/data/count?min_rating=1200&max_rating=900").await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("min_rating")), "{body}");
    let (status, body) = bea.get("/data/pairs?format=parquet").await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("format")), "{body}");

    let (_, count) = bea.get("/data/count?spaces=mailing&agreed_only=true").await;
    let n = count["pairs"].as_i64().unwrap();
    assert!(n > 0, "{count}");
    let text = bea
        .client
        .get(arena.url("/data/pairs?spaces=mailing&agreed_only=true&format=conversational&scrub_pii=true"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as i64, n, "the export has what the count said");
    for line in &lines {
        assert_eq!(line["space"], "mailing");
        assert_eq!(line["license"], "CC0-1.0");
        assert!(line["consistent"].as_bool().unwrap());
        let messages = line["prompt"].as_array().unwrap();
        assert_eq!(messages.last().unwrap()["role"], "user");
        assert_eq!(line["chosen"][0]["role"], "assistant");
        assert!(line["record_hash"].is_string() && line["chosen_verifiers"].is_array(), "{line}");
        assert!(!line.to_string().contains("ada@example.com"), "scrubbed: {line}");
    }
    assert!(text.contains("[email]"), "the prompt's address was replaced");
    let standard =
        bea.client.get(arena.url("/data/pairs?spaces=quick&limit=5")).send().await.unwrap().text().await.unwrap();
    let first: Value = serde_json::from_str(standard.lines().next().unwrap()).unwrap();
    assert!(first["prompt"].is_string() && first["chosen"].is_string() && first["rejected"].is_string(), "{first}");
    assert_eq!(standard.lines().count(), 5);

    // The dataset card: a YAML header a Hub reader parses, the counts, the chains' heads.
    let card = bea.client.get(arena.url("/data/card?spaces=mailing&agreed_only=true")).send().await.unwrap();
    assert_eq!(card.status(), 200);
    let card = card.text().await.unwrap();
    let header = card.strip_prefix("---\n").and_then(|rest| rest.split_once("\n---\n")).map(|(h, _)| h).unwrap();
    assert!(header.lines().any(|l| l == "license: \"cc0-1.0\""), "{header}");
    assert!(header.contains("size_categories:\n- \"n<1K\"") && header.contains("path: \"pairs.jsonl\""), "{header}");
    let (seq, head): (i64, String) = sqlx::query_as("select chain_seq, chain_head from spaces where slug = 'mailing'")
        .fetch_one(&arena.db)
        .await
        .unwrap();
    assert!(card.contains(&format!("| mailing | {n} | 1 |")), "{card}");
    assert!(card.contains(&format!("| {seq} | `{head}` |")), "{card}");
    assert!(card.contains("\"agreed_only\": true"), "the filters are written down: {card}");
}
