//! `/healthz` with each dependency up and down.

use crate::arena::Arena;
use crate::helpers::{Proxy, TestEnv, eventually, host_port, via_proxy};
use secrecy::SecretString;

#[tokio::test]
async fn healthz_reports_every_dependency_up() {
    let app = Arena::serving_defaults().await;
    let (status, body) = app.health().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    for dep in ["postgres", "redis", "model"] {
        assert_eq!(body["checks"][dep]["status"], "up", "{dep}: {body}");
    }
    assert_eq!(body["checks"]["model"]["detail"]["sha256"], agent_runtime::model_file::DEFAULT_MODEL.sha256);
}

#[tokio::test]
async fn healthz_reports_postgres_down_and_recovers() {
    let env = TestEnv::new().await;
    let proxy = Proxy::start(host_port(&env.db_url)).await;
    let mut settings = env.settings();
    settings.database.url = SecretString::from(via_proxy(&env.db_url, &proxy));
    let app = Arena::serving(env, settings).await;
    assert_eq!(app.health().await.0, 200);

    proxy.set_up(false);
    let (status, body) = app.health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["postgres"]["status"], "down");
    assert!(body["checks"]["postgres"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    assert_eq!(body["checks"]["redis"]["status"], "up", "only PostgreSQL is down: {body}");

    proxy.set_up(true);
    assert!(eventually(10, || async { app.health().await.0 == 200 }).await, "health did not recover");
}

#[tokio::test]
async fn healthz_reports_redis_down_and_recovers() {
    let env = TestEnv::new().await;
    let proxy = Proxy::start(host_port(&env.redis_url)).await;
    let mut settings = env.settings();
    settings.redis.url = SecretString::from(via_proxy(&env.redis_url, &proxy));
    let app = Arena::serving(env, settings).await;
    assert_eq!(app.health().await.0, 200);

    proxy.set_up(false);
    let (status, body) = app.health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert_eq!(body["checks"]["postgres"]["status"], "up", "only Redis is down: {body}");

    proxy.set_up(true);
    let recovered = eventually(15, || async { app.health().await.0 == 200 }).await;
    assert!(recovered, "health did not recover: {:?}", app.health().await);
}

#[tokio::test]
async fn healthz_reports_a_model_file_that_disappeared() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(agent_runtime::model_file::DEFAULT_MODEL.file_name);
    std::fs::copy(crate::helpers::model_path(), &copy).unwrap();
    let mut settings = env.settings();
    settings.model.path = copy.clone();
    let app = Arena::serving(env, settings).await;
    assert_eq!(app.health().await.0, 200);

    std::fs::remove_file(&copy).unwrap();
    let (status, body) = app.health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["checks"]["model"]["status"], "down");
    assert!(body["checks"]["model"]["error"].as_str().unwrap().contains(copy.to_str().unwrap()), "{body}");
}
