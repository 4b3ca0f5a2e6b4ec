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
    arena_server::store::pairs::enrich(&arena.db).await.unwrap();
    let facts = arena_server::store::pairs::all_facts(&arena.db).await.unwrap();
    // The stub's answers repeat, so some pairs are near duplicates; every
    // pair's language was detected.
    assert!(facts.iter().any(|p| p.duplicate) && facts.iter().any(|p| !p.duplicate), "{facts:?}");
    assert!(facts.iter().all(|p| !p.language.is_empty()), "{facts:?}");
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
        if rng.random_bool(0.3) {
            f.languages = vec![a.language.clone()];
        }
        f.dedupe = rng.random_bool(0.4);
        if rng.random_bool(0.3) {
            f.chosen_passed = Some(a.chosen_passed);
        }
        if rng.random_bool(0.3) {
            f.rejected_passed = Some(b.rejected_passed);
        }
        if rng.random_bool(0.3) {
            f.kind = Some(a.kind);
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
    assert!(card.contains(&format!("| mailing | {n} | 0 | 1 |")), "{card}");
    assert!(card.contains(&format!("| {seq} | `{head}` |")), "{card}");
    assert!(card.contains("\"agreed_only\": true"), "the filters are written down: {card}");
}

/// Polls one export until it is done (or failed), returning it.
async fn finished(user: &crate::arena::User, id: &str) -> Value {
    for _ in 0..300 {
        let (status, export) = user.get(&format!("/data/exports/{id}")).await;
        assert_eq!(status, 200, "{export}");
        if export["status"] == "done" || export["status"] == "failed" {
            return export;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("export {id} did not finish");
}

async fn bytes(user: &crate::arena::User, arena: &Arena, path: &str) -> (u16, Vec<u8>) {
    let r = user.client.get(arena.url(path)).send().await.unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

/// Credits the ledger moved for data sales, per account kind and user.
async fn data_sales(arena: &Arena) -> Vec<(Option<String>, i64)> {
    sqlx::query_as(
        "select u.username, sum(e.amount)::bigint from ledger_entries e
         join ledger_transactions t on t.id = e.transaction_id and t.kind = 'data_sale'
         join accounts a on a.id = e.account_id left join users u on u.id = a.user_id
         group by u.username order by u.username nulls first",
    )
    .fetch_all(&arena.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn priced_exports_pay_everyone_exactly_once_and_only_the_buyer_downloads() {
    use sha2::Digest;
    let arena = Arena::new().await;
    let dana = arena.user("dana", "designer").await;
    let priced = format!(
        "{}\n[data]\nprice_per_pair = 50\ndesigner_share = 0.25\nplayers_share = 0.5\n",
        quick_space("priced", 2, 4)
    );
    arena.publish(&dana, &priced, json!({})).await;
    arena.publish(&dana, &quick_space("free", 2, 4), json!({})).await;
    for i in 0..4 {
        let player = arena.user(&format!("player{i}"), "player").await;
        let agent = player.agent(&format!("a{i}"), "priced").await;
        let (status, body) = player.post(&format!("/agents/{agent}/entries"), json!({"space": "free"})).await;
        assert_eq!(status, 201, "{body}");
    }
    arena.start(arena_server::app::Roles::ALL, None);
    let made = crate::helpers::eventually(60, || async {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from pairs p join spaces s on s.id = p.space_id group by s.slug order by 1 limit 1",
        )
        .fetch_optional(&arena.db)
        .await
        .unwrap()
        .unwrap_or(0);
        n >= 30
    })
    .await;
    assert!(made, "{:?}", arena.status_counts().await);
    arena.pause_all().await;
    arena.wait_settled(1, 30).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let bea = arena.user("bea", "buyer").await;
    let carl = arena.user("carl", "buyer").await;
    let start = bea.balance().await;
    assert_eq!(start, 1000);

    // A priced Space's pairs are not streamed free anywhere.
    assert_eq!(bea.get("/data/pairs?spaces=priced").await.0, 402);
    assert_eq!(bea.get("/spaces/priced/pairs").await.0, 402);
    let free_stream = bea.client.get(arena.url("/data/pairs")).send().await.unwrap().text().await.unwrap();
    assert!(free_stream.lines().count() > 0 && !free_stream.contains("\"space\":\"priced\""));

    // The quote: 50 credits a pair.
    let (_, count) = bea.get("/data/count?spaces=priced").await;
    assert_eq!(count["price"].as_i64(), count["pairs"].as_i64().map(|n| n * 50), "{count}");
    assert_eq!(count["licenses"], json!(["CC-BY-4.0"]));

    let order = |key: &str, limit: i64| {
        json!({"idempotency_key": key, "filter": {"spaces": ["priced"]}, "limit": limit,
               "accept_licenses": ["CC-BY-4.0"], "max_price": 50 * limit})
    };
    // Bad input names its field and changes nothing.
    let before = arena.fingerprint().await;
    for (body, field) in [
        (json!({"idempotency_key": "k", "filter": {"spaces": ["priced"]}}), "accept_licenses"),
        (json!({"idempotency_key": "", "accept_licenses": ["CC-BY-4.0"]}), "idempotency_key"),
        (json!({"idempotency_key": "k", "format": "csv"}), "format"),
        (json!({"idempotency_key": "k", "format": "parquet", "gzip": true}), "gzip"),
        (json!({"idempotency_key": "k", "filter": {"languages": ["klingon"]}}), "languages"),
        (json!({"idempotency_key": "k", "filter": {"spaces": ["nowhere"]}}), "filter"),
        (
            json!({"idempotency_key": "k", "filter": {"spaces": ["priced"]}, "limit": 4, "max_price": 100,
                "accept_licenses": ["CC-BY-4.0"]}),
            "max_price",
        ),
    ] {
        let (status, err) = bea.post("/data/exports", body.clone()).await;
        assert!(status == 422 || status == 409, "{body}: {status} {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    // Carl cannot pay for 25 pairs (1,250 credits): refused, nothing moved.
    let (status, err) = carl.post("/data/exports", order("carl-1", 25)).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("insufficient_funds")), "{err}");
    assert_eq!(arena.fingerprint().await, before, "a refused export changes nothing");
    assert_eq!(carl.balance().await, 1000);

    // A request retried (twice at once, then again): one export, paid once.
    let ((s1, e1), (s2, e2)) =
        tokio::join!(bea.post("/data/exports", order("bea-1", 10)), bea.post("/data/exports", order("bea-1", 10)));
    let mut statuses = [s1, s2];
    statuses.sort();
    assert_eq!(statuses, [200, 201], "{e1} {e2}");
    assert_eq!(e1["id"], e2["id"]);
    let (s3, e3) = bea.post("/data/exports", order("bea-1", 10)).await;
    assert_eq!((s3, &e3["id"]), (200, &e1["id"]));
    assert_eq!(bea.balance().await, start - 500);
    // Two different exports at once: both paid, and then the money is gone.
    let ((s4, e4), (s5, e5)) =
        tokio::join!(carl.post("/data/exports", order("carl-2", 10)), carl.post("/data/exports", order("carl-3", 10)));
    assert_eq!((s4, s5), (201, 201), "{e4} {e5}");
    assert_ne!(e4["id"], e5["id"]);
    assert_eq!(carl.balance().await, 0);

    // Who was paid: per export of 10 pairs (500 credits) the designer 125,
    // the agents' owners 250 by their answers, the house the rest.
    let sales = data_sales(&arena).await;
    let total: i64 = sales.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 0, "every sale balances: {sales:?}");
    let of = |name: &str| sales.iter().find(|(u, _)| u.as_deref() == Some(name)).map_or(0, |s| s.1);
    assert_eq!((of("bea"), of("carl")), (-500, -1000));
    assert_eq!(of("dana"), 3 * 125);
    let players: i64 = (0..4).map(|i| of(&format!("player{i}"))).sum();
    // Each owner's amount is rounded down, per export.
    assert!((3 * 250 - 3 * 4..=3 * 250).contains(&players), "players got {players}: {sales:?}");
    let house = sales.iter().find(|(u, _)| u.is_none()).map_or(0, |s| s.1);
    assert_eq!(of("dana") + players + house, 1500);
    arena.ledger_ok().await;
    let income = arena_server::store::exports::data_income(&arena.db, dana.id.parse().unwrap()).await.unwrap();
    assert_eq!(income, (375, 3), "the designer's data income");

    // The files: the count paid for, hashes as recorded, the card beside.
    let export = finished(&bea, e1["id"].as_str().unwrap()).await;
    assert_eq!(export["status"], "done", "{export}");
    assert_eq!(export["rows_written"], 10);
    let files = export["files"].as_array().unwrap();
    assert_eq!(files.iter().map(|f| f["name"].as_str().unwrap()).collect::<Vec<_>>(), ["pairs.jsonl", "README.md"]);
    let id = export["id"].as_str().unwrap();
    let (status, jsonl) = bytes(&bea, &arena, &format!("/data/exports/{id}/files/pairs.jsonl")).await;
    assert_eq!(status, 200);
    assert_eq!(hex::encode(sha2::Sha256::digest(&jsonl)), files[0]["sha256"].as_str().unwrap());
    let lines: Vec<Value> =
        std::str::from_utf8(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 10);
    assert!(lines.iter().all(|l| l["space"] == "priced" && l["license"] == "CC-BY-4.0"));
    let (_, card) = bytes(&bea, &arena, &format!("/data/exports/{id}/files/README.md")).await;
    let card = String::from_utf8(card).unwrap();
    let header = card.strip_prefix("---\n").and_then(|r| r.split_once("\n---\n")).map(|(h, _)| h).unwrap();
    let yaml = yaml_rust2::YamlLoader::load_from_str(header).expect("the card's header is YAML");
    assert_eq!(yaml[0]["license"].as_str(), Some("cc-by-4.0"));
    assert_eq!(yaml[0]["configs"][0]["data_files"][0]["path"].as_str(), Some("pairs.jsonl"));
    assert!(card.contains("Price paid: 500 credits") && card.contains(files[0]["sha256"].as_str().unwrap()), "{card}");

    // Nobody else sees or downloads it; names outside the export are not files.
    assert_eq!(carl.get(&format!("/data/exports/{id}")).await.0, 404);
    assert_eq!(bytes(&carl, &arena, &format!("/data/exports/{id}/files/pairs.jsonl")).await.0, 404);
    assert_eq!(bytes(&arena.user_anonymous(), &arena, &format!("/data/exports/{id}/files/pairs.jsonl")).await.0, 401);
    for name in ["pairs.parquet", "..%2F..%2Fsecrets", "%2Fetc%2Fpasswd"] {
        assert_eq!(bytes(&bea, &arena, &format!("/data/exports/{id}/files/{name}")).await.0, 404, "{name}");
    }
    let (_, mine) = bea.get("/data/exports").await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(carl.get("/data/exports").await.1.as_array().unwrap().len(), 2);

    // A free export as Parquet and as gzip'd JSON Lines: the same rows.
    let free = |key: &str, format: &str, gzip: bool| {
        json!({"idempotency_key": key, "filter": {"spaces": ["free"], "dedupe": false}, "format": format,
               "gzip": gzip, "shape": "conversational", "accept_licenses": ["CC-BY-4.0"]})
    };
    let (s, p) = bea.post("/data/exports", free("free-parquet", "parquet", false)).await;
    assert_eq!((s, p["price"].as_i64()), (201, Some(0)), "{p}");
    let (s, j) = bea.post("/data/exports", free("free-jsonl", "jsonl", true)).await;
    assert_eq!(s, 201, "{j}");
    let p = finished(&bea, p["id"].as_str().unwrap()).await;
    let j = finished(&bea, j["id"].as_str().unwrap()).await;
    assert_eq!((p["status"].as_str(), j["status"].as_str()), (Some("done"), Some("done")), "{p} {j}");
    assert_eq!(bea.balance().await, start - 500, "free exports cost nothing");
    let (_, parquet) =
        bytes(&bea, &arena, &format!("/data/exports/{}/files/pairs.parquet", p["id"].as_str().unwrap())).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.parquet"), &parquet).unwrap();
    let rows = dataset_files::read_parquet(&dir.path().join("p.parquet")).unwrap();
    let (_, gz) =
        bytes(&bea, &arena, &format!("/data/exports/{}/files/pairs.jsonl.gz", j["id"].as_str().unwrap())).await;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), lines.len());
    assert_eq!(rows.len() as i64, p["pairs"].as_i64().unwrap());
    for (row, line) in rows.iter().zip(&lines) {
        assert_eq!(line["id"], row.id.as_str());
        assert_eq!(line["prompt"].as_array().unwrap().last().unwrap()["content"], row.prompt.as_str());
        assert_eq!(line["chosen"][0]["content"], row.chosen.as_str());
        assert_eq!(line["rejected"][0]["content"], row.rejected.as_str());
        assert_eq!(line["margin"], row.margin);
        assert_eq!(line["record_hash"], json!(row.record_hash));
        let verifiers: Value = serde_json::from_str(row.chosen_verifiers.as_deref().unwrap_or("null")).unwrap();
        assert_eq!(line["chosen_verifiers"], verifiers);
    }
}

/// What a buyer costs the platform is bounded: counts per minute, free
/// exports per day, files kept for the retention period only; and the
/// licences are checked on the very pairs the paying transaction selects.
#[tokio::test]
async fn buyers_costs_are_bounded_and_licences_are_checked_where_the_pairs_are_paid_for() {
    use arena_server::store::exports as export_store;
    let arena = Arena::new().await;
    arena.league(2, 2, 2).await;
    arena.start(arena_server::app::Roles::ALL, None);
    let made = crate::helpers::eventually(60, || async {
        sqlx::query_scalar::<_, i64>("select count(*) from pairs").fetch_one(&arena.db).await.unwrap() >= 2
    })
    .await;
    assert!(made, "{:?}", arena.status_counts().await);
    arena.pause_all().await;
    let bea = arena.user("bea", "buyer").await;

    // The licence, checked inside the paying transaction.
    let buyer: uuid::Uuid = bea.id.parse().unwrap();
    let request = |key: &str, licences: Vec<String>| export_store::ExportRequest {
        buyer: arena_server::domain::UserId(buyer),
        idempotency_key: key.to_owned(),
        filter: Default::default(),
        format: "jsonl",
        shape: "standard",
        gzip: false,
        scrub_pii: false,
        limit: 100,
        max_price: None,
        accept_licenses: licences,
    };
    let exports = || async {
        sqlx::query_scalar::<_, i64>("select count(*) from data_exports").fetch_one(&arena.db).await.unwrap()
    };
    let refused = export_store::create(&arena.db, &request("no-licence", Vec::new())).await.expect_err("refused");
    assert!(refused.to_string().contains("CC-BY-4.0"), "{refused}");
    assert_eq!(exports().await, 0, "a refused export changes nothing");

    // A free export, then its files past retention.
    let body = json!({"idempotency_key": "free-1", "accept_licenses": ["CC-BY-4.0"], "format": "jsonl"});
    let (status, export) = bea.post("/data/exports", body).await;
    assert_eq!(status, 201, "{export}");
    let id = export["id"].as_str().unwrap().to_owned();
    let done = finished(&bea, &id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(bytes(&bea, &arena, &format!("/data/exports/{id}/files/pairs.jsonl")).await.0, 200);
    let dir = arena.settings.data_dir.join("exports").join(&id);
    assert!(dir.exists());
    // Retention 30 days: nothing is that old. Retention 0: this one is.
    let kept = arena_server::work::exports::expire_past_retention(&arena.db, &arena.settings.data_dir, 30).await;
    assert_eq!(kept.unwrap(), 0);
    let gone = arena_server::work::exports::expire_past_retention(&arena.db, &arena.settings.data_dir, 0).await;
    assert_eq!(gone.unwrap(), 1);
    assert!(!dir.exists(), "its files are deleted");
    let (status, body) = bytes(&bea, &arena, &format!("/data/exports/{id}/files/pairs.jsonl")).await;
    assert_eq!(status, 410, "{}", String::from_utf8_lossy(&body));
    let (_, row) = bea.get(&format!("/data/exports/{id}")).await;
    assert!(row["expired_at"].is_string() && row["pairs"].as_i64() > Some(0), "the row is kept: {row}");

    // Free exports per day: the quota's worth already made today.
    sqlx::query(
        "insert into data_exports (id, buyer_id, idempotency_key, filter, format, shape, gzip, scrub_pii, licenses,
                                   pairs, price, status)
         select gen_random_uuid(), $1, 'earlier-' || i, '{}', 'jsonl', 'standard', false, false, '{}', 1, 0, 'done'
         from generate_series(2, $2) i",
    )
    .bind(buyer)
    .bind(export_store::FREE_EXPORTS_PER_DAY)
    .execute(&arena.db)
    .await
    .unwrap();
    let before = exports().await;
    let body = json!({"idempotency_key": "free-too-many", "accept_licenses": ["CC-BY-4.0"]});
    let (status, err) = bea.post("/data/exports", body).await;
    assert_eq!(status, 429, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("free exports"), "{err}");
    assert_eq!(exports().await, before);

    // Counts per minute (the API's and the page's together).
    crate::arena::start_of_a_minute().await;
    let limit = arena_server::http::handlers::data::COUNTS_PER_MINUTE as usize;
    let mut statuses = Vec::new();
    for i in 0..limit + 1 {
        let status = if i % 2 == 0 {
            bea.get("/data/count").await.0
        } else {
            let page = bea.client.get(format!("{}/data/live-count", arena.address)).send().await.unwrap();
            let status = page.status().as_u16();
            let html = page.text().await.unwrap();
            if html.contains("per minute") { 429 } else { status }
        };
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429));
}
