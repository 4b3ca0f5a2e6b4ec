//! The runtime benchmark behind `arena model bench`: prefill and decode
//! speed, batched decode with per-sequence adapters, peak memory and
//! perplexity, on fixed inputs that the llama.cpp side runs too.

use crate::engine::Runtime;
use crate::lora::Adapter;
use crate::model::{KvCache, Logits, SeqStep, Target};
use crate::sampling::{argmax, log_prob};
use crate::train::{Base, Seq, Storage, sequence_logprobs};
use std::time::Instant;

/// A fixed English text the prompts and the perplexity come from.
pub const TEXT: &str = "The history of the lighthouse is a history of people trying to make the sea a little less \
dangerous. Long before electric lamps, sailors watched for fires burning on hilltops near harbours. The Pharos of \
Alexandria, built in the third century before the common era, stood well over a hundred metres tall and was counted \
among the wonders of the ancient world. Its keepers fed a fire at the top, and a polished bronze mirror may have \
thrown the light far out over the water. In the centuries that followed, towers rose along the coasts of the Roman \
empire, and many of them were rebuilt again and again as storms and wars knocked them down. The modern lighthouse \
began with better optics. In 1822 the French physicist Augustin Fresnel designed a lens made of concentric rings of \
glass prisms. A Fresnel lens bends the light of a single lamp into a narrow, powerful beam, and it weighs far less \
than a solid lens of the same size would. Within a few decades lighthouses around the world used his design, and a \
light that once reached a few kilometres could now be seen from forty. Each lighthouse was given its own pattern of \
flashes, called its character, so that a navigator could tell one tower from another at night: two short flashes \
every ten seconds, say, or a long steady beam followed by darkness. Keeping a lighthouse was hard and lonely work. \
Keepers trimmed wicks, polished lenses, wound the clockwork that turned the lamp, and wrote the weather into a log \
every few hours. On rock stations far from shore, supply boats could be delayed for weeks by bad weather, and \
families learned to store food and water against long storms. Today almost every light is automatic. Solar panels \
charge batteries, sensors switch the lamp on at dusk, and satellite navigation tells ships where they are to within \
a few metres. Yet the towers remain, because electronics fail and because a light on the horizon is a signal that \
anyone can read without any equipment at all. Many old stations have become museums, guest houses or homes for \
seabirds, and people still climb their spiral stairs to look out over the same water the keepers once watched.";

pub const PREFILL_TOKENS: usize = 256;
pub const PPL_TOKENS: usize = 512;

/// The exact token ids both sides run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inputs {
    pub prefill: Vec<u32>,
    pub decode_prompts: Vec<Vec<u32>>,
    pub ppl: Vec<u32>,
}

pub fn inputs(rt: &Runtime) -> crate::Result<Inputs> {
    let ids = rt.tokenizer.encode(TEXT, false, false)?;
    let cycled = |n: usize| ids.iter().copied().cycle().take(n).collect::<Vec<u32>>();
    let decode_prompts = (0..8).map(|i| ids[i * 20..i * 20 + 12 + i].to_vec()).collect();
    Ok(Inputs { prefill: cycled(PREFILL_TOKENS), decode_prompts, ppl: cycled(PPL_TOKENS.min(ids.len())) })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub batch8_distinct_adapters_tok_s: f64,
    pub batch8_shared_adapter_tok_s: f64,
    pub batch8_no_adapter_tok_s: f64,
    /// Speed of the distinct-adapter batch over the shared-adapter one:
    /// the median of the repetitions' ratios.
    pub distinct_vs_shared: f64,
    pub ppl: f64,
    /// The same text through the f32 forward of the dequantized weights.
    pub f32_ppl: f64,
    /// With the first benchmark adapter (rank 16, all linear layers),
    /// applied unmerged by the runtime.
    pub adapter_ppl: f64,
    /// With that adapter merged into the dequantized weights in f32.
    pub f32_adapter_ppl: f64,
    pub peak_rss_bytes: Option<u64>,
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) { (v[n / 2 - 1] + v[n / 2]) / 2.0 } else { v[n / 2] }
}

/// Greedy decode of `steps` tokens for every prompt at once, end-of-turn
/// ignored; returns the seconds the decode steps took.
pub fn batched_decode(
    rt: &Runtime,
    prompts: &[Vec<u32>],
    adapters: &[Option<&Adapter>],
    steps: usize,
) -> crate::Result<f64> {
    let mut caches: Vec<KvCache> = prompts.iter().map(|_| rt.model.new_cache()).collect();
    let mut next: Vec<u32> = Vec::with_capacity(prompts.len());
    for ((p, cache), adapter) in prompts.iter().zip(caches.iter_mut()).zip(adapters) {
        let logits = rt.model.forward(&mut [SeqStep { tokens: p, cache, adapter: *adapter, logits: Logits::Last }])?;
        next.push(argmax(&logits[0]));
    }
    let start = Instant::now();
    for _ in 0..steps {
        let tokens: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let mut batch: Vec<SeqStep<'_>> = caches
            .iter_mut()
            .zip(&tokens)
            .zip(adapters)
            .map(|((cache, t), adapter)| SeqStep { tokens: t, cache, adapter: *adapter, logits: Logits::Last })
            .collect();
        let logits = rt.model.forward(&mut batch)?;
        next = logits.iter().map(|l| argmax(l)).collect();
    }
    Ok(start.elapsed().as_secs_f64())
}

pub fn run(
    rt: &Runtime,
    inputs: &Inputs,
    reps: usize,
    decode_tokens: usize,
    mut log: impl FnMut(&str),
) -> crate::Result<Figures> {
    let reps = reps.max(1);
    log("prefill");
    let mut times = Vec::new();
    for _ in 0..reps {
        let mut cache = rt.model.new_cache();
        let start = Instant::now();
        rt.model.forward(&mut [SeqStep {
            tokens: &inputs.prefill,
            cache: &mut cache,
            adapter: None,
            logits: Logits::Last,
        }])?;
        times.push(start.elapsed().as_secs_f64());
    }
    let prefill_tok_s = inputs.prefill.len() as f64 / median(times);

    log("decode, 1 sequence");
    let one = &inputs.decode_prompts[..1];
    let times =
        (0..reps).map(|_| batched_decode(rt, one, &[None], decode_tokens)).collect::<crate::Result<Vec<_>>>()?;
    let decode_tok_s = decode_tokens as f64 / median(times);

    let c = rt.config();
    let adapters: Vec<Adapter> = (0..8).map(|i| Adapter::random(c, &Target::ALL, 16, 1000 + i, 0.02, 0.02)).collect();
    let prompts = &inputs.decode_prompts[..8];
    // The three batches take turns within each repetition, so a change in
    // the machine's speed (a neighbour on a shared host) hits all three
    // alike; the distinct-vs-shared figure is the median of each turn's
    // ratio. Each repetition starts one batch further on, so no batch
    // always runs first (the batch run right after the adapter-free one
    // measured a few percent slower in three orderings, whichever it was).
    log("decode, 8 sequences: 8 distinct adapters, 1 shared adapter, none (in turns)");
    let distinct: Vec<Option<&Adapter>> = adapters.iter().map(Some).collect();
    let shared = vec![Some(&adapters[0]); 8];
    let none = vec![None; 8];
    let mut turns: [Vec<f64>; 3] = Default::default();
    let batches = [&distinct, &shared, &none];
    // Twice the repetitions: the ratio of two figures a few percent apart
    // needs more turns than one figure does on a noisy host.
    for rep in 0..2 * reps {
        for k in 0..batches.len() {
            let b = (rep + k) % batches.len();
            turns[b].push(batched_decode(rt, prompts, batches[b], decode_tokens)?);
        }
    }
    let tok_s = |times: &[f64]| 8.0 * decode_tokens as f64 / median(times.to_vec());
    let batch8_distinct_adapters_tok_s = tok_s(&turns[0]);
    let batch8_shared_adapter_tok_s = tok_s(&turns[1]);
    let batch8_no_adapter_tok_s = tok_s(&turns[2]);
    let distinct_vs_shared = median(turns[1].iter().zip(&turns[0]).map(|(s, d)| s / d).collect());

    log("perplexity");
    let ppl_with = |adapter: Option<&Adapter>| -> crate::Result<f64> {
        let mut cache = rt.model.new_cache();
        let logits = rt.model.forward(&mut [SeqStep {
            tokens: &inputs.ppl,
            cache: &mut cache,
            adapter,
            logits: Logits::All,
        }])?;
        let vocab = c.vocab;
        let nll: f64 = (0..inputs.ppl.len() - 1)
            .map(|i| -f64::from(log_prob(&logits[0][i * vocab..(i + 1) * vocab], inputs.ppl[i + 1])))
            .sum();
        Ok((nll / (inputs.ppl.len() - 1) as f64).exp())
    };
    let ppl = ppl_with(None)?;
    // The adapter layouts' cost in accuracy: the first benchmark adapter
    // applied unmerged by the runtime, against the f32 forward of the
    // dequantized weights with the adapter merged in f32, and that forward
    // without it.
    log("perplexity with an adapter, and the f32 references");
    let adapter_ppl = ppl_with(Some(&adapters[0]))?;
    // The runtime's peak, before the f32 references allocate theirs.
    let peak_rss_bytes = peak_rss();
    let threads = rayon::current_num_threads();
    let f32_ppl = |adapter: Option<&Adapter>| -> crate::Result<f64> {
        let mut base = Base::new(&rt.model, Storage::Dense, threads);
        if let Some(adapter) = adapter {
            base.merge(adapter).map_err(|e| crate::RuntimeError::Request(e.to_string()))?;
        }
        let seq = Seq { tokens: inputs.ppl.clone(), scored_from: 1 };
        let lp = sequence_logprobs(&base, None, &[seq])[0];
        Ok((-lp / (inputs.ppl.len() - 1) as f64).exp())
    };
    let f32_ppl_plain = f32_ppl(None)?;
    let f32_adapter_ppl = f32_ppl(Some(&adapters[0]))?;

    Ok(Figures {
        prefill_tok_s,
        decode_tok_s,
        batch8_distinct_adapters_tok_s,
        batch8_shared_adapter_tok_s,
        batch8_no_adapter_tok_s,
        distinct_vs_shared,
        ppl,
        f32_ppl: f32_ppl_plain,
        adapter_ppl,
        f32_adapter_ppl,
        peak_rss_bytes,
    })
}

/// The process's peak resident set (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_takes_the_middle_and_averages_an_even_pair() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
