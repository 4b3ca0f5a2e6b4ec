#!/usr/bin/env python3
"""llama.cpp's figures on a GGUF file, for `arena model bench` to print
beside ours. Prints one JSON object on stdout.

    pip install llama-cpp-python==0.3.36 numpy
    python3 llama_cpp_bench.py MODEL.gguf --threads 2 --prompt-ids IDS.json

IDS.json: {"prefill": [...256 ids], "decode_prompts": [[...], ... 8 lists], "ppl": [...ids]}
so both sides run on exactly the same tokens. Decode figures greedy-decode
(argmax, end-of-turn ignored) as ours do.
"""
import argparse
import ctypes
import json
import math
import statistics
import time

import numpy as np
import llama_cpp as L


def clear(ctx):
    if hasattr(L, "llama_memory_clear"):
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
    else:
        L.llama_kv_self_clear(ctx)


def fill(batch, items):
    """items: (token, pos, seq, want_logits)"""
    for i, (tok, pos, seq, want) in enumerate(items):
        batch.token[i] = tok
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = want
    batch.n_tokens = len(items)


def logits_row(ctx, i, vocab):
    ptr = L.llama_get_logits_ith(ctx, i)
    return np.ctypeslib.as_array(ptr, shape=(vocab,))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--reference-ppl", action="store_true", help="also the fp64 dequantized forward's perplexity")
    args = ap.parse_args()
    ids = json.load(open(args.prompt_ids))

    L.llama_backend_init()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(args.model.encode(), mp)
    vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    cp = L.llama_context_default_params()
    cp.n_ctx = 4096
    cp.n_batch = 1024
    cp.n_ubatch = 512
    cp.n_seq_max = 8
    cp.n_threads = args.threads
    cp.n_threads_batch = args.threads
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(1024, 0, 8)
    out = {"threads": args.threads}

    # Prefill: the 256-token prompt in one batch.
    times = []
    for _ in range(args.reps):
        clear(ctx)
        p = ids["prefill"]
        fill(batch, [(t, i, 0, i == len(p) - 1) for i, t in enumerate(p)])
        t0 = time.perf_counter()
        assert L.llama_decode(ctx, batch) == 0
        times.append(time.perf_counter() - t0)
    out["prefill_tok_s"] = len(ids["prefill"]) / statistics.median(times)

    # Decode, one sequence.
    times = []
    for _ in range(args.reps):
        clear(ctx)
        p = ids["decode_prompts"][0]
        fill(batch, [(t, i, 0, i == len(p) - 1) for i, t in enumerate(p)])
        assert L.llama_decode(ctx, batch) == 0
        tok, pos = int(np.argmax(logits_row(ctx, len(p) - 1, vocab))), len(p)
        t0 = time.perf_counter()
        for _ in range(args.decode_tokens):
            fill(batch, [(tok, pos, 0, True)])
            assert L.llama_decode(ctx, batch) == 0
            tok, pos = int(np.argmax(logits_row(ctx, 0, vocab))), pos + 1
        times.append(time.perf_counter() - t0)
    out["decode_tok_s"] = args.decode_tokens / statistics.median(times)

    # Decode, 8 sequences batched (no adapters: llama.cpp has no per-sequence LoRA).
    prompts = ids["decode_prompts"][:8]
    times = []
    for _ in range(args.reps):
        clear(ctx)
        toks, poss = [], []
        for s, p in enumerate(prompts):
            fill(batch, [(t, i, s, i == len(p) - 1) for i, t in enumerate(p)])
            assert L.llama_decode(ctx, batch) == 0
            toks.append(int(np.argmax(logits_row(ctx, len(p) - 1, vocab))))
            poss.append(len(p))
        t0 = time.perf_counter()
        for _ in range(args.decode_tokens):
            fill(batch, [(toks[s], poss[s], s, True) for s in range(len(prompts))])
            assert L.llama_decode(ctx, batch) == 0
            for s in range(len(prompts)):
                toks[s] = int(np.argmax(logits_row(ctx, s, vocab)))
                poss[s] += 1
        times.append(time.perf_counter() - t0)
    out["batch8_decode_tok_s"] = len(prompts) * args.decode_tokens / statistics.median(times)

    # Perplexity of the fixed text.
    clear(ctx)
    p = ids["ppl"]
    fill(batch, [(t, i, 0, True) for i, t in enumerate(p)])
    assert L.llama_decode(ctx, batch) == 0
    nll = 0.0
    for i in range(len(p) - 1):
        row = logits_row(ctx, i, vocab).astype(np.float64)
        m = row.max()
        nll -= row[p[i + 1]] - m - math.log(np.exp(row - m).sum())
    out["ppl"] = math.exp(nll / (len(p) - 1))

    if args.reference_ppl:
        # The same text through a float64 forward of the dequantized weights.
        import os, sys
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from make_reference import Reference
        logits = Reference(args.model).logits(p)
        nll = 0.0
        for i in range(len(p) - 1):
            row = logits[i]
            m = row.max()
            nll -= row[p[i + 1]] - m - math.log(np.exp(row - m).sum())
        out["reference_ppl"] = math.exp(nll / (len(p) - 1))
    json.dump(out, __import__("sys").stdout)


if __name__ == "__main__":
    main()
