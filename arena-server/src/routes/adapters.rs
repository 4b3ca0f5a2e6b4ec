//! Adapter uploads: a PEFT adapter (`adapter_config.json` and
//! `adapter_model.safetensors`) as multipart form fields `config` and
//! `weights`, validated by the runtime's validator against the base model
//! before anything is stored.

use crate::adapters::{self, MAX_CONFIG_BYTES, MAX_WEIGHTS_BYTES};
use crate::auth::Caller;
use crate::domain::Scope;
use crate::error::ApiError;
use crate::state::AppState;
use actix_multipart::form::{MultipartForm, bytes::Bytes};
use actix_web::{HttpResponse, web};

#[derive(MultipartForm)]
pub struct Upload {
    #[multipart(limit = "64KiB")]
    config: Bytes,
    #[multipart(limit = "64MiB")]
    weights: Bytes,
}

/// The multipart extractor's limits and error shape.
pub fn form_config() -> actix_multipart::form::MultipartFormConfig {
    actix_multipart::form::MultipartFormConfig::default()
        .total_limit(MAX_WEIGHTS_BYTES + MAX_CONFIG_BYTES + 64 * 1024)
        .memory_limit(MAX_WEIGHTS_BYTES + MAX_CONFIG_BYTES + 64 * 1024)
        .error_handler(|err, _| {
            ApiError::Payload(format!("{err}; send multipart fields `config` (adapter_config.json, ≤ 64 KiB) and `weights` (adapter_model.safetensors, ≤ 64 MiB)")).into()
        })
}

/// POST /api/v1/adapters
#[tracing::instrument(skip(state, form, caller), fields(user = %caller.username))]
pub async fn upload(
    state: web::Data<AppState>,
    caller: Caller,
    form: MultipartForm<Upload>,
) -> Result<HttpResponse, ApiError> {
    caller.write(&state, Scope::Play).await?;
    let model = state.model_config.clone().ok_or_else(|| {
        ApiError::OverCapacity("this server has no base model configuration to check adapters against".into())
    })?;
    let Upload { config, weights } = form.into_inner();
    let (config, weights) = (config.data.to_vec(), weights.data.to_vec());
    let (config2, weights2) = (config.clone(), weights.clone());
    let checked = tokio::task::spawn_blocking(move || adapters::validate(&config2, &weights2, &model))
        .await
        .map_err(ApiError::internal)?;
    let (sha256, summary) = checked.map_err(|why| ApiError::invalid("weights", format!("adapter refused: {why}")))?;
    let config_text =
        String::from_utf8(config).map_err(|_| ApiError::invalid("config", "adapter_config.json is not UTF-8"))?;
    let inserted = sqlx::query(
        "insert into adapters (sha256, config, weights, bytes, uploaded_by) values ($1, $2, $3, $4, $5)
         on conflict (sha256) do nothing",
    )
    .bind(&sha256)
    .bind(&config_text)
    .bind(&weights)
    .bind(weights.len() as i64)
    .bind(caller.user_id)
    .execute(&state.db)
    .await?;
    let status = if inserted.rows_affected() == 1 {
        actix_web::http::StatusCode::CREATED
    } else {
        actix_web::http::StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(summary))
}
