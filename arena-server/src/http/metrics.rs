//! `/metrics` and the middleware that counts and times every request.

use crate::context::Context;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{HttpResponse, web};
use std::future::Future;
use std::time::Instant;

/// Middleware body for `App::wrap_fn`: counts and times every request by its
/// route pattern (not its raw path, which would explode the label set).
pub fn track<S>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse, actix_web::Error>> + use<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
{
    let start = Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| "<unmatched>".to_owned());
    let method = req.method().as_str().to_owned();
    let metrics = req.app_data::<web::Data<Context>>().map(|c| c.metrics.clone());
    let fut = srv.call(req);
    async move {
        let res = fut.await?;
        if let Some(metrics) = metrics {
            metrics.observe(&method, &route, res.status().as_u16(), start.elapsed().as_secs_f64());
        }
        Ok(res)
    }
}

#[tracing::instrument(skip_all)]
pub async fn get(ctx: web::Data<Context>) -> HttpResponse {
    match ctx.metrics.render() {
        Ok(body) => HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body),
        Err(err) => {
            tracing::error!(error = %err, "rendering metrics failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}
