//! Adapter uploads: a PEFT adapter (`adapter_config.json` and
//! `adapter_model.safetensors`) as multipart form fields `config` and
//! `weights`, validated by the runtime's validator against the base model
//! before anything is stored.

use crate::context::Context;
use crate::domain::user::Scope;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::store::adapters::{self, MAX_CONFIG_BYTES, MAX_WEIGHTS_BYTES};
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
    state: web::Data<Context>,
    caller: Caller,
    form: MultipartForm<Upload>,
) -> Result<HttpResponse, ApiError> {
    let Upload { config, weights } = form.into_inner();
    let summary = store_adapter(&state, &caller, config.data.to_vec(), weights.data.to_vec()).await?;
    Ok(HttpResponse::Created().json(summary))
}

/// Validates and stores an adapter as the API and the agent builder do;
/// its summary (`sha256`, rank, targets, bytes).
pub async fn store_adapter(
    state: &Context,
    caller: &Caller,
    config: Vec<u8>,
    weights: Vec<u8>,
) -> Result<serde_json::Value, ApiError> {
    caller.write(state, Scope::Play).await?;
    let model = state.model_config.clone();
    let (config2, weights2) = (config.clone(), weights.clone());
    let checked = tokio::task::spawn_blocking(move || adapters::validate(&config2, &weights2, &model))
        .await
        .map_err(ApiError::internal)?;
    let (sha256, summary, config) =
        checked.map_err(|why| ApiError::invalid("weights", format!("adapter refused: {why}")))?;
    let config_text =
        String::from_utf8(config).map_err(|_| ApiError::invalid("config", "adapter_config.json is not UTF-8"))?;
    // 201 whether or not someone uploaded these bytes before: the answer
    // does not tell whether an adapter exists.
    adapters::insert(
        &state.db,
        &sha256,
        &config_text,
        &weights,
        caller.user_id,
        Some(state.settings.storage_quota_bytes),
    )
    .await?;
    Ok(summary)
}
