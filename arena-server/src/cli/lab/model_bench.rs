//! `arena model bench`: the runtime's prefill and decode speed, and
//! llama.cpp's (llama-cpp-python) beside it on the same file, tokens and
//! thread count.

use crate::app::config::Settings;
use crate::cli::args::ModelBenchArgs;
use crate::cli::model::model_path;
use agent_runtime::Runtime;
use anyhow::Context;

const LLAMA_CPP_BENCH: &str = include_str!("../../../../agent-runtime/bench/llama_cpp_bench.py");
const MAKE_REFERENCE: &str = include_str!("../../../../agent-runtime/tests/reference/make_reference.py");

pub fn run(bench_args: &ModelBenchArgs, settings: &Settings) -> anyhow::Result<()> {
    let ModelBenchArgs { model: args, reps, decode_tokens, llama_cpp, reference_ppl } = bench_args;
    let (reps, decode_tokens, llama_cpp, reference_ppl) = (*reps, *decode_tokens, *llama_cpp, *reference_ppl);
    use agent_runtime::bench;
    let path = model_path(args, settings)?;
    let threads = args.threads.unwrap_or(2);
    let runtime = Runtime::load(&path, threads).with_context(|| format!("loading {}", path.display()))?;
    let inputs = bench::inputs(&runtime)?;
    let kernels = agent_runtime::quant::kernels();
    eprintln!("arena: {} on {threads} threads", path.display());
    println!(
        "kernels: {} (recipe {}; ARENA_KERNELS=scalar|avx2|avx512 forces a path)",
        kernels.name(),
        kernels.recipe()
    );
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
