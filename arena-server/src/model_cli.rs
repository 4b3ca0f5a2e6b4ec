//! `arena model info | tokenize | generate`: the runtime from the command
//! line.

use crate::cli::{GenerateArgs, ModelArgs};
use crate::config::Settings;
use agent_runtime::chat::Message;
use agent_runtime::gguf::Gguf;
use agent_runtime::model::default_threads;
use agent_runtime::sampling::SamplingParams;
use agent_runtime::{Prompt, Request, Runtime};
use anyhow::{Context, bail};
use std::path::PathBuf;

fn model_path(args: &ModelArgs, settings: &Settings) -> anyhow::Result<PathBuf> {
    match args.device.as_str() {
        "cpu" => {}
        "cuda" => {
            bail!("--device cuda needs a build with `--features cuda` (and the CUDA toolkit); this build is CPU-only")
        }
        other => bail!("unknown --device {other:?}: expected cpu or cuda"),
    }
    Ok(args.model.clone().unwrap_or_else(|| settings.model.path.clone()))
}

pub fn info(args: &ModelArgs, settings: &Settings) -> anyhow::Result<()> {
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

pub fn tokenize(args: &ModelArgs, text: &str, settings: &Settings) -> anyhow::Result<()> {
    let path = model_path(args, settings)?;
    let gguf = Gguf::open(&path)?;
    let tokenizer = agent_runtime::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let ids = tokenizer.encode(text, true, true)?;
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}

pub fn generate(args: GenerateArgs, settings: &Settings) -> anyhow::Result<()> {
    let path = model_path(&args.model, settings)?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
        max_new_tokens: args.max_tokens,
        stop: args.stop,
        seed: args.seed,
        ..SamplingParams::default()
    };
    params.validate().map_err(anyhow::Error::msg)?;
    let prompt = if args.raw {
        if args.system.is_some() {
            bail!("--system needs the chat template; drop --raw or put the system text into --prompt");
        }
        Prompt::Raw(args.prompt)
    } else {
        let mut messages = Vec::new();
        if let Some(system) = args.system {
            messages.push(Message::system(system));
        }
        messages.push(Message::user(args.prompt));
        Prompt::Chat(messages)
    };
    let runtime = Runtime::load(&path, args.model.threads.unwrap_or_else(default_threads))
        .with_context(|| format!("loading {}", path.display()))?;
    let completion = runtime.generate(Request { prompt, adapter: args.adapter, params, logprobs: false })?;
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
