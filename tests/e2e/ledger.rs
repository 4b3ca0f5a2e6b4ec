//! The ledger on real PostgreSQL: concurrent spending, idempotency keys,
//! append-only entries, and the conservation check.

use crate::arena::Arena;
use arena_server::store::ledger::{self, HOUSE, LedgerError, Leg, Posted};

async fn account_of(arena: &Arena, user: &str) -> uuid::Uuid {
    sqlx::query_scalar("select a.id from accounts a join users u on u.id = a.user_id where u.username = $1")
        .bind(user)
        .fetch_one(&arena.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn concurrent_overspending_succeeds_exactly_as_often_as_the_balance_covers() {
    let arena = Arena::new().await;
    arena.user("ada", "player").await;
    let ada = account_of(&arena, "ada").await;
    let balance = ledger::balance(&arena.db, ada).await.unwrap();
    let price = 70;
    let attempts = 40;
    let tasks: Vec<_> = (0..attempts)
        .map(|i| {
            let db = arena.db.clone();
            tokio::spawn(async move {
                ledger::transfer(
                    &db,
                    &format!("spend:{i}"),
                    "test",
                    "",
                    &[Leg::new(ada, -price), Leg::new(HOUSE, price)],
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(Posted::New(_)) => ok += 1,
            Err(LedgerError::InsufficientFunds { .. }) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, balance / price, "exactly as many succeed as the balance covers");
    assert_eq!(ok + refused, attempts);
    assert_eq!(ledger::balance(&arena.db, ada).await.unwrap(), balance % price);
    arena.ledger_ok().await;
}

#[tokio::test]
async fn an_idempotency_key_posts_once_and_unbalanced_legs_are_refused() {
    let arena = Arena::new().await;
    arena.user("ada", "player").await;
    let ada = account_of(&arena, "ada").await;
    let legs = [Leg::new(ada, -5), Leg::new(HOUSE, 5)];
    let first = ledger::transfer(&arena.db, "same-key", "test", "", &legs).await.unwrap();
    assert!(matches!(first, Posted::New(_)));
    let again = ledger::transfer(&arena.db, "same-key", "test", "", &legs).await.unwrap();
    assert_eq!(again, Posted::Duplicate);
    assert_eq!(ledger::balance(&arena.db, ada).await.unwrap(), arena.settings.arena.starting_credits - 5);
    let before = arena.fingerprint().await;
    let err = ledger::transfer(&arena.db, "unbalanced", "test", "", &[Leg::new(ada, -5), Leg::new(HOUSE, 4)]).await;
    assert!(matches!(err, Err(LedgerError::Unbalanced(-1))));
    let err =
        ledger::transfer(&arena.db, "too-much", "test", "", &[Leg::new(ada, -1_000_000), Leg::new(HOUSE, 1_000_000)])
            .await;
    assert!(matches!(err, Err(LedgerError::InsufficientFunds { .. })));
    assert_eq!(before, arena.fingerprint().await, "refused postings changed nothing");
    arena.ledger_ok().await;
}

#[tokio::test]
async fn ledger_entries_are_append_only() {
    let arena = Arena::new().await;
    arena.user("ada", "player").await;
    for statement in [
        "update ledger_entries set amount = amount * 2",
        "delete from ledger_entries",
        "delete from ledger_transactions",
    ] {
        let err = sqlx::query(statement).execute(&arena.db).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{statement}: {err}");
    }
    let (status, statement) = arena.user("bob", "player").await.get("/me/ledger").await;
    assert_eq!(status, 200);
    assert_eq!(statement["entries"][0]["kind"], "starting_credits");
    assert_eq!(statement["balance"], arena.settings.arena.starting_credits);
}
