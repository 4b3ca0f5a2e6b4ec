#!/usr/bin/env python3
"""TRL's DPOTrainer with PEFT LoRA on the same model and pairs, for
`arena train bench` to print beside ours. Prints one JSON object on stdout.

    pip install torch trl peft transformers gguf
    python3 trl_dpo_bench.py MODEL.gguf PAIRS.jsonl --threads 2 --steps 4

The model is the GGUF file dequantized to fp32 by transformers
(`gguf_file=`); fp32 throughout (TRL defaults to bf16 and gradient
checkpointing; both are turned off for a like-for-like CPU comparison);
LoRA r=8, alpha 16 on q/k/v/o; the reference pass is TRL's default (the
same model with the adapter disabled, every step). The first step is a
warm-up and is not timed.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("pairs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer
    import transformers, trl, peft

    folder, name = os.path.split(os.path.abspath(args.model))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are dequantized fp32 tensors; transformers still tags the
    # model as GGUF-quantized and refuses to train it. Drop the tag.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    rows = [json.loads(line) for line in open(args.pairs, encoding="utf-8") if line.strip()]
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    )
    out = tempfile.mkdtemp(prefix="trl-bench-")
    cfg = DPOConfig(
        output_dir=out,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=args.steps + 1,
        learning_rate=5e-5,
        beta=0.1,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        max_length=args.max_length,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    trainer = DPOTrainer(
        model=model,
        args=cfg,
        train_dataset=data,
        processing_class=tok,
        peft_config=LoraConfig(
            r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM",
        ),
        callbacks=[Timer()],
    )
    ds = trainer.train_dataset
    cols = ds.column_names
    lens = []
    for row in ds:
        lens.append(sum(len(row[c]) for c in cols if c.endswith("_ids")))
    trainer.train()
    timed = times[1:] or times
    per_step = statistics.median(timed)
    pair_tokens = statistics.mean(lens) * args.batch
    print(
        json.dumps(
            {
                "engine": f"TRL {trl.__version__} + PEFT {peft.__version__} + torch {torch.__version__} (transformers {transformers.__version__})",
                "seconds_per_step": per_step,
                "pair_tokens_per_step": pair_tokens,
                "pair_tokens_per_second": pair_tokens / per_step,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "steps_timed": len(timed),
                "columns": cols,
                "sequence_tokens_per_pair": statistics.mean(lens),
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
