#!/usr/bin/env python3
"""TRL's GRPOTrainer with PEFT LoRA on the same model, prompts and reward,
for `arena train bench-grpo` to print beside ours. Prints one JSON object
on stdout.

    pip install torch trl peft transformers gguf
    python3 trl_grpo_bench.py MODEL.gguf PROMPTS.jsonl --threads 2 --steps 3

Made like-for-like with ours: fp32 (TRL defaults to bf16), no gradient
checkpointing, the model's own `generate` on the CPU (no vLLM), sampling at
temperature 1 with no top-k/top-p (TRL's defaults), the same group size,
prompts per step, completion length, KL β, clip ε, iterations per rollout
(μ) and LoRA rank on the same modules. The reward: 1 when the last
number of the answer is the reference (the arithmetic Space's hard check)
plus 0.2 / (1 + characters / 10), so rewards differ within every group and
both sides train on every group (ours skips all-equal groups, which would
make its step cheaper by luck).
One rollout step is `num_generations × prompts` completions, then μ
optimizer steps over them (TRL: `steps_per_generation` = 1, so each
optimizer step regenerates unless μ > 1 reuses the batch). The first
rollout step is a warm-up and is not timed.
"""
import argparse
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("prompts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--epsilon", type=float, default=0.2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    import transformers, trl, peft

    folder, name = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    rows = [json.loads(line) for line in open(args.prompts, encoding="utf-8") if line.strip()]
    data = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": r["prompt"]}], "reference": r["reference"]} for r in rows]
    )
    completion_tokens = []

    def correct(completions, reference, completion_ids=None, **_):
        if completion_ids is not None:
            completion_tokens.extend(len(c) for c in completion_ids)
        out = []
        for c, ref in zip(completions, reference):
            text = c[0]["content"] if isinstance(c, list) else c
            numbers = re.findall(r"-?\d+", text.replace(",", ""))
            right = 1.0 if numbers and numbers[-1] == ref else 0.0
            out.append(right + 0.2 / (1.0 + len(text) / 10.0))
        return out

    out = tempfile.mkdtemp(prefix="trl-grpo-bench-")
    batch = args.group * args.prompts_per_step
    rollouts = args.steps + 1
    cfg = GRPOConfig(
        output_dir=out,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=args.group,
        num_iterations=args.iterations,
        max_steps=rollouts * args.iterations,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=args.beta,
        epsilon=args.epsilon,
        learning_rate=2e-5,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        use_vllm=False,
    )
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer = GRPOTrainer(
        model=model,
        args=cfg,
        reward_funcs=[correct],
        train_dataset=data,
        processing_class=tok,
        peft_config=LoraConfig(
            r=args.rank,
            lora_alpha=2 * args.rank,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            task_type="CAUSAL_LM",
        ),
        callbacks=[Timer()],
    )
    trainer.train()
    # Group the optimizer steps into rollout steps (μ each); drop the first.
    per_rollout = [sum(times[i : i + args.iterations]) for i in range(0, len(times), args.iterations)]
    timed = per_rollout[1:] or per_rollout
    tokens = completion_tokens[batch:] or completion_tokens
    per_step_tokens = sum(tokens) / max(1, len(tokens)) * batch
    per_step = statistics.median(timed)
    print(
        json.dumps(
            {
                "engine": f"TRL {trl.__version__} + PEFT {peft.__version__} + torch {torch.__version__} (transformers {transformers.__version__})",
                "seconds_per_step": per_step,
                "completion_tokens_per_step": per_step_tokens,
                "completion_tokens_per_second": per_step_tokens / per_step,
                "mean_completion_tokens": sum(tokens) / max(1, len(tokens)),
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "steps_timed": len(timed),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
