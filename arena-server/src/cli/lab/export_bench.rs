//! `arena bench export`: export throughput and memory on a throwaway
//! database of synthetic pairs, beside PostgreSQL's own `COPY … TO STDOUT`
//! of the same rows in the same run.

use super::common::{reset_peak, rss};
use super::scratch_db::ScratchDb;
use crate::app::config::Settings;
use crate::cli::args::ExportBenchArgs;
use crate::domain::dataset::PairFilter;
use crate::domain::user::{Password, Role, Username};
use crate::store::exports::{self as export_store, ExportRequest};
use crate::store::pairs as pair_store;
use crate::store::users;
use crate::work::exports as export_work;
use anyhow::Context as _;
use secrecy::SecretString;
use sqlx::PgPool;
use std::time::Instant;

pub async fn run(args: &ExportBenchArgs, settings: &Settings) -> anyhow::Result<()> {
    let db = ScratchDb::create(settings, "bench_export").await?;
    let result = measure(settings, &db.url()?, args).await;
    if !args.keep {
        db.drop().await?;
    } else {
        println!("kept database {}", db.name);
    }
    println!("{}", result?);
    Ok(())
}

async fn measure(settings: &Settings, url: &str, args: &ExportBenchArgs) -> anyhow::Result<String> {
    let mut db_settings = settings.database.clone();
    db_settings.url = SecretString::from(url.to_owned());
    db_settings.max_connections = 8;
    let pool = crate::store::connect(&db_settings, std::time::Duration::from_secs(10)).await?;
    crate::store::migrate(&pool, url).await?;
    let base_model = "bench-model";
    super::control_plane::seed(&pool, base_model, 1, 4, 8, None).await?;
    let t = Instant::now();
    seed_pairs(&pool, args.pairs).await?;
    let seeding = t.elapsed().as_secs_f64();
    let buyer = users::create_user(
        &pool,
        &Username::parse("buyer")?,
        Password::parse("benchmark-password").map_err(|e| anyhow::anyhow!("{e}"))?,
        Role::Buyer,
        0,
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let mut out =
        format!("export benchmark: {} pairs seeded in {seeding:.0} s (synthetic; one Space, 8 agents)\n", args.pairs);
    let mut rates = Vec::new();
    let mut copies = Vec::new();
    for (n, format) in ["jsonl", "parquet"].iter().enumerate() {
        // Paying: the pairs fixed in the export's own table (free here).
        let t = Instant::now();
        let req = ExportRequest {
            buyer: buyer.id,
            idempotency_key: format!("bench-{n}"),
            filter: PairFilter::default(),
            format,
            shape: "standard",
            gzip: false,
            scrub_pii: false,
            limit: args.pairs,
            max_price: None,
            // The bench seeds its own pairs: every licence they carry.
            accept_licenses: sqlx::query_scalar("select distinct license from pairs where license is not null")
                .fetch_all(&pool)
                .await?,
        };
        let (export, _) = export_store::create(&pool, &req).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let fixing = t.elapsed().as_secs_f64();
        // Both readers start from the same state: hint bits set, statistics fresh.
        sqlx::query("vacuum analyze data_export_pairs").execute(&pool).await?;
        // PostgreSQL's own fastest way out for the same rows, just before.
        let t = Instant::now();
        let (rows, bytes) = copy_out(&pool, export.id).await?;
        let copy = t.elapsed().as_secs_f64();
        anyhow::ensure!(rows == export.pairs as u64, "COPY sent {rows} rows of {}", export.pairs);
        copies.push(rows as f64 / copy);
        out += &format!(
            "COPY (the {format} export's SELECT) TO STDOUT: {rows} rows, {:.0} MB in {copy:.1} s = {:.0} rows/s\n",
            bytes as f64 / 1e6,
            rows as f64 / copy
        );
        let (_, before) = rss();
        reset_peak();
        let t = Instant::now();
        export_work::run(&pool, dir.path(), export.id).await?;
        let took = t.elapsed().as_secs_f64();
        let (peak, _) = rss();
        let done = export_store::get(&pool, export.id).await?.context("the export vanished")?;
        anyhow::ensure!(
            done.status == crate::domain::ExportStatus::Done,
            "export {}: {}",
            done.status,
            done.error.unwrap_or_default()
        );
        let bytes = done.files[0]["bytes"].as_u64().unwrap_or(0);
        if let Some(to) = &args.out {
            let to = to.join(format);
            std::fs::create_dir_all(&to)?;
            let from = export_work::export_dir(dir.path(), export.id);
            for entry in std::fs::read_dir(&from)? {
                let entry = entry?;
                std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
        }
        rates.push((if *format == "jsonl" { "JSONL" } else { "Parquet" }, done.rows_written as f64 / took));
        out += &format!(
            "{:<8} export: {} rows, {:.0} MB file in {took:.1} s = {:.0} rows/s; fixing the pairs (paying) {fixing:.1} s; \
             peak RSS growth {:.0} MB\n",
            format,
            done.rows_written,
            bytes as f64 / 1e6,
            done.rows_written as f64 / took,
            peak.saturating_sub(before) as f64 / 1e6
        );
    }
    for ((name, rate), copy) in rates.iter().zip(&copies) {
        out += &format!("{name} / COPY of the same rows: {:.2}×\n", rate / copy);
    }
    Ok(out)
}

/// `COPY (the export's own SELECT) TO STDOUT`: rows and bytes.
async fn copy_out(pool: &PgPool, export: uuid::Uuid) -> anyhow::Result<(u64, u64)> {
    use futures_util::StreamExt;
    let mut conn = pool.acquire().await?;
    let sql = format!("copy ({}) to stdout", pair_store::pinned_select_sql().replace("$1", &format!("'{export}'")));
    let mut stream = conn.copy_out_raw(&sql).await?;
    let (mut rows, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        rows += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    Ok((rows, bytes))
}

/// Synthetic settled matches, each with two answers and one pair, in
/// batches of 100,000 (answers of realistic length; enriched already).
async fn seed_pairs(pool: &PgPool, n: i64) -> anyhow::Result<()> {
    let batch = 100_000i64;
    let mut start = 1i64;
    while start <= n {
        let end = (start + batch - 1).min(n);
        let mut tx = pool.begin().await?;
        sqlx::query(
            "insert into matches (id, space_id, space_version, status, prompt_index, prompt, pot, seq, record_hash,
                                  created_at, settled_at)
             select md5('m' || g)::uuid, s.id, 1, 'settled', g % 4,
                    'What is ' || g || ' + ' || (g * 7 % 1000) || '? Answer with the number and one sentence of reasoning.',
                    40, g, md5('r' || g) || md5('h' || g), now() - interval '1 second' * ($3 - g), now()
             from generate_series($1::bigint, $2::bigint) g, spaces s where s.slug = 'bench-0'",
        )
        .bind(start)
        .bind(end)
        .bind(n)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "with a as (select array_agg(id order by id) as ids, array_agg(owner_id order by id) as owners from agents)
             insert into match_agents (match_id, slot, agent_id, agent_version, owner_id, entry_fee, mu_before, sigma_before)
             select md5('m' || g)::uuid, slot, a.ids[1 + (g + slot) % 8], 1, a.owners[1 + (g + slot) % 8], 10,
                    25 + (g % 10) * 0.1, 8.3
             from generate_series($1::bigint, $2::bigint) g, a, (values (0), (1)) v(slot)",
        )
        .bind(start)
        .bind(end)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into outputs (match_id, slot, text, finish, tokens)
             select md5('m' || g)::uuid, slot,
                    case slot when 0 then 'The answer is ' || (g + g * 7 % 1000) || '. Adding ' || g || ' and '
                                           || (g * 7 % 1000) || ' gives that sum, checked digit by digit.'
                              else 'I think it is about ' || (g + 3) || ', but I am not sure.' end,
                    'stop', 24
             from generate_series($1::bigint, $2::bigint) g, (values (0), (1)) v(slot)",
        )
        .bind(start)
        .bind(end)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into verdicts (match_id, verdict)
             select md5('m' || g)::uuid, jsonb_build_object(
                      'passed_hard', jsonb_build_object('0', true, '1', false),
                      'verifiers', jsonb_build_object(
                        '0', jsonb_build_array(jsonb_build_object('name', 'correct', 'passed', true, 'score', 1.0)),
                        '1', jsonb_build_array(jsonb_build_object('name', 'correct', 'passed', false, 'score', 0.0))))
             from generate_series($1::bigint, $2::bigint) g",
        )
        .bind(start)
        .bind(end)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "insert into pairs (id, match_id, space_id, chosen_slot, rejected_slot, margin, consistent, license, detail,
                                created_at, lang)
             select md5('p' || g)::uuid, md5('m' || g)::uuid, s.id, 0, 1, 1.0 + (g % 100) / 100.0, g % 5 <> 0,
                    'CC-BY-4.0', '{\"decided_by\": \"verifier\"}', now() - interval '1 second' * ($3 - g), 'en'
             from generate_series($1::bigint, $2::bigint) g, spaces s where s.slug = 'bench-0'",
        )
        .bind(start)
        .bind(end)
        .bind(n)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        start = end + 1;
    }
    sqlx::query("vacuum analyze").execute(pool).await?;
    Ok(())
}
