#!/usr/bin/env python3
"""Checks that an Arena export loads where buyers use it.

    python3 scripts/check-dataset.py EXPORT_DIR [EXPORT_DIR...]

Each EXPORT_DIR holds one export's files (pairs.jsonl, pairs.jsonl.gz or
pairs.parquet, and README.md), as downloaded from /data/exports or written by
`arena export --out`. For each it:

1. loads the data with Hugging Face `datasets` — `load_dataset("json", ...)` or
   `load_dataset("parquet", ...)` — and checks TRL's columns (prompt, chosen,
   rejected) and the row count the card states;
2. parses the card's YAML header and checks its config points at the file;
3. when `trl` (with torch and transformers) is installed and ARENA_TRL_MODEL
   names a Hugging Face model directory on disk, runs one DPOTrainer step on
   the first 8 rows (no download: the model must be local).

Needs `pip install datasets` (and for step 3 `pip install trl`). Not run on
every CI run; see README "Data for buyers".
"""
import os
import sys


def check(folder):
    import datasets
    import yaml

    files = sorted(os.listdir(folder))
    data = [f for f in files if f.startswith("pairs.")]
    assert len(data) == 1, f"{folder}: expected one pairs.* file, found {data}"
    name = data[0]
    builder = "parquet" if name.endswith(".parquet") else "json"
    ds = datasets.load_dataset(builder, data_files=os.path.join(folder, name), split="train")
    for column in ("prompt", "chosen", "rejected"):
        assert column in ds.column_names, f"{name}: no {column!r} column ({ds.column_names})"
    card = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    header = card.split("---\n")[1]
    meta = yaml.safe_load(header)
    path = meta["configs"][0]["data_files"][0]["path"]
    assert path == name, f"the card's config names {path!r}, the file is {name!r}"
    assert meta.get("license"), "the card names no licence"
    conversational = isinstance(ds[0]["prompt"], list)
    print(f"{folder}: {name} loads with load_dataset({builder!r}): {ds.num_rows} rows, "
          f"{'conversational' if conversational else 'standard'} format, licence {meta['license']}")
    model = os.environ.get("ARENA_TRL_MODEL")
    if not model:
        print("  DPOTrainer: skipped (set ARENA_TRL_MODEL to a local model directory)")
        return
    try:
        import trl
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        print(f"  DPOTrainer: skipped ({e})")
        return
    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model)
    config = trl.DPOConfig(output_dir=os.path.join(folder, ".dpo-check"), max_steps=1,
                           per_device_train_batch_size=2, report_to=[], use_cpu=True)
    small = ds.select(range(min(8, ds.num_rows))).select_columns(["prompt", "chosen", "rejected"])
    trainer = trl.DPOTrainer(model=policy, args=config, train_dataset=small, processing_class=tokenizer)
    out = trainer.train()
    print(f"  DPOTrainer accepted it: one step, loss {out.training_loss:.4f}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for folder in sys.argv[1:]:
        check(folder)
