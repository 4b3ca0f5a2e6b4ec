//! Prometheus metrics an operator watches (served at `/metrics` by
//! `http::metrics`). One registry per application (not a global), so
//! parallel test apps do not mix figures.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    pub dependency_up: IntGaugeVec,
    stage_duration: HistogramVec,
    stage_matches: IntCounterVec,
    /// Matches by unsettled status (formed, generated, judged).
    pub open_matches: IntGaugeVec,
    /// Messages delivered but not acknowledged, per stage stream.
    pub stream_pending: IntGaugeVec,
    /// Leaderboard fits computed (cache misses that did the work).
    pub leaderboard_fits: prometheus::IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("arena".to_owned()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by method, route and status"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["route"],
        )?;
        let dependency_up = IntGaugeVec::new(
            Opts::new("dependency_up", "1 when the last health check reached the dependency"),
            &["dependency"],
        )?;
        let build_info = IntGaugeVec::new(Opts::new("build_info", "The running build; always 1"), &["version"])?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(dependency_up.clone()))?;
        let stage_duration = HistogramVec::new(
            HistogramOpts::new("stage_batch_duration_seconds", "Time one pipeline stage spent on one batch")
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]),
            &["stage"],
        )?;
        let stage_matches =
            IntCounterVec::new(Opts::new("stage_matches_total", "Matches each pipeline stage finished"), &["stage"])?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(stage_duration.clone()))?;
        registry.register(Box::new(stage_matches.clone()))?;
        let open_matches =
            IntGaugeVec::new(Opts::new("open_matches", "Matches waiting in each unsettled status"), &["status"])?;
        let stream_pending = IntGaugeVec::new(
            Opts::new("stream_pending", "Stage messages delivered and not yet acknowledged"),
            &["stage"],
        )?;
        registry.register(Box::new(open_matches.clone()))?;
        let leaderboard_fits =
            prometheus::IntCounter::new("leaderboard_fits_total", "Leaderboard fits computed (cache misses)")?;
        registry.register(Box::new(leaderboard_fits.clone()))?;
        registry.register(Box::new(stream_pending.clone()))?;
        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            dependency_up,
            stage_duration,
            stage_matches,
            open_matches,
            stream_pending,
            leaderboard_fits,
        })
    }

    /// The registry's contents in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// One batch of a pipeline stage.
    pub fn observe_stage(&self, stage: &str, took: std::time::Duration, matches: usize) {
        self.stage_duration.with_label_values(&[stage]).observe(took.as_secs_f64());
        self.stage_matches.with_label_values(&[stage]).inc_by(matches as u64);
    }

    /// One HTTP request.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_requests.with_label_values(&[method, route, &status.to_string()]).inc();
        self.http_duration.with_label_values(&[route]).observe(seconds);
    }
}
