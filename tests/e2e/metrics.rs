//! `/metrics` in the Prometheus text format.

use crate::arena::Arena;

fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_dependency_state() {
    let app = Arena::serving_defaults().await;
    for _ in 0..3 {
        assert_eq!(app.health().await.0, 200);
    }
    let _ = app.get("/no/such/page").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let body = response.text().await.unwrap();
    assert_eq!(
        sample(&body, r#"arena_http_requests_total{method="GET",route="/healthz",status="200"}"#),
        Some(3.0),
        "{body}"
    );
    assert_eq!(sample(&body, r#"arena_http_requests_total{method="GET",route="<unmatched>",status="404"}"#), Some(1.0));
    assert_eq!(sample(&body, r#"arena_dependency_up{dependency="postgres"}"#), Some(1.0));
    assert!(body.contains("# TYPE arena_http_request_duration_seconds histogram"));
}
