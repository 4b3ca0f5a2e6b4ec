#!/usr/bin/env python3
"""Make two tiny random GGUF models of other llama-family layouts than the
default model's, and the references the runtime's tests compare them to.

    pip install llama-cpp-python==0.3.36 gguf numpy
    python3 agent-runtime/tests/reference/make_tiny_models.py agent-runtime/tests/data

* `tiny-llama.gguf`: architecture llama, grouped-query attention (4 heads,
  2 KV heads), an output matrix of its own (untied), Q4_0 weights, a Q8_0
  output, rope base 500000 (Llama 3's);
* `tiny-qwen2.gguf`: architecture qwen2, biases on q/k/v, NeoX rope, tied
  embeddings, Q4_1 weights, rope base 1000000 (Qwen2's);
* `tiny-llama-spm.gguf`: architecture llama with a SentencePiece vocabulary
  (TinyLlama's and Llama 2's kind: byte fallback, scored pieces, BOS added),
  full multi-head attention, Q8_0 weights.

The first two carry a byte-level BPE vocabulary of 256 byte tokens, four
merges and three control tokens; llama.cpp's token ids for a few strings
are kept for each model. For a fixed run of token ids the script writes each
model's logits at every position from the float64 NumPy forward of
`make_reference.py` (the weights as stored, dequantized by `gguf`), and
checks that llama.cpp (llama-cpp-python) reads the file the same way: its
logits must agree with that forward within its own int8-activation error,
and its argmax wherever the forward's top two differ by more than that.
"""
import hashlib
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize

sys.path.insert(0, os.path.dirname(__file__))
from make_reference import Reference  # noqa: E402

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
IDS_LEN = 40
# Tokenized by llama.cpp too, special tokens parsed: the pre-tokenizers
# (default, qwen2) split digits, spaces and other scripts differently, and
# SentencePiece falls back to byte tokens for characters it lacks.
TEXTS = [
    "Hello the world in 2024!",
    "the world, hello world.",
    "  the\tthe\n\nthe  ",
    "数字 123456 and émoji 🤖 inthe",
    "<|im_start|>user\nhi there<|im_end|>\n",
]


def bytes_to_unicode():
    """GPT-2's byte ↔ printable character map (byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def vocab(kind):
    """(tokens, types, merges, scores, bos, eos) of a byte-level BPE
    (`gpt2`) or a SentencePiece (`llama`, with byte fallback) vocabulary."""
    if kind == "gpt2":
        tokens = bytes_to_unicode()
        merges = ["Ġ t", "h e", "Ġt he", "i n"]
        tokens += ["Ġt", "he", "Ġthe", "in"]
        types = [1] * len(tokens)
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tokens += specials
        types += [3] * len(specials)
        return tokens, types, merges, None, len(tokens) - 3, len(tokens) - 3
    # SentencePiece: unknown, BOS, EOS, the 256 byte tokens, then pieces
    # (single characters and merges; a higher score merges first).
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0] * len(tokens)
    chars = list("▁abcdefghijklmnopqrstuvwxyzHTW0123456789,.!?")
    merged = ["he", "▁t", "▁the", "in", "▁in", "▁w", "or", "▁wor", "ld", "▁world", "ll", "llo"]
    for i, piece in enumerate(chars):
        tokens.append(piece)
        types.append(1)
        scores.append(-100.0 - i)
    for i, piece in enumerate(merged):
        tokens.append(piece)
        types.append(1)
        scores.append(-1.0 - i)
    return tokens, types, None, scores, 1, 2


def write_model(path, arch, weight_type, head_type, tied, bias, rope_base, pre, seed, tokenizer="gpt2", kv_heads=KV_HEADS):
    rng = np.random.default_rng(seed)
    tokens, types, merges, scores, bos, eos = vocab(tokenizer)
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"tiny {arch} (random weights, for tests)")
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(rope_base)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_tokenizer_model(tokenizer)
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if merges is not None:
        w.add_token_merges(merges)
    if scores is not None:
        w.add_token_scores(scores)
        w.add_unk_token_id(0)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(tokenizer == "llama")

    def matrix(name, rows, cols, std, qtype):
        x = (rng.standard_normal((rows, cols)) * std).astype(np.float32)
        w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)

    def vector(name, n, mean, std):
        w.add_tensor(name, (mean + rng.standard_normal(n) * std).astype(np.float32))

    hd = HIDDEN // HEADS
    matrix("token_embd.weight", n_vocab, HIDDEN, 1.0, Q.Q8_0 if tied else weight_type)
    for i in range(LAYERS):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", HIDDEN, 1.0, 0.1)
        matrix(p + "attn_q.weight", HEADS * hd, HIDDEN, 0.25, weight_type)
        matrix(p + "attn_k.weight", kv_heads * hd, HIDDEN, 0.25, weight_type)
        matrix(p + "attn_v.weight", kv_heads * hd, HIDDEN, 0.15, weight_type)
        if bias:
            vector(p + "attn_q.bias", HEADS * hd, 0.0, 0.3)
            vector(p + "attn_k.bias", kv_heads * hd, 0.0, 0.3)
            vector(p + "attn_v.bias", kv_heads * hd, 0.0, 0.3)
        matrix(p + "attn_output.weight", HIDDEN, HEADS * hd, 0.15, weight_type)
        vector(p + "ffn_norm.weight", HIDDEN, 1.0, 0.1)
        matrix(p + "ffn_gate.weight", FFN, HIDDEN, 0.15, weight_type)
        matrix(p + "ffn_up.weight", FFN, HIDDEN, 0.15, weight_type)
        matrix(p + "ffn_down.weight", HIDDEN, FFN, 0.1, weight_type)
    vector("output_norm.weight", HIDDEN, 1.0, 0.1)
    if not tied:
        matrix("output.weight", n_vocab, HIDDEN, 0.3, head_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


MODELS = [
    dict(file="tiny-llama.gguf", arch="llama", weight_type=Q.Q4_0, head_type=Q.Q8_0, tied=False, bias=False,
         rope_base=500000.0, pre="default", seed=1),
    dict(file="tiny-qwen2.gguf", arch="qwen2", weight_type=Q.Q4_1, head_type=None, tied=True, bias=True,
         rope_base=1000000.0, pre="qwen2", seed=2),
    dict(file="tiny-llama-spm.gguf", arch="llama", weight_type=Q.Q8_0, head_type=Q.Q8_0, tied=False, bias=False,
         rope_base=10000.0, pre="default", seed=3, tokenizer="llama", kv_heads=HEADS),
]


def main():
    out_dir = sys.argv[1]
    from llama_cpp import Llama

    out = {"made_by": "agent-runtime/tests/reference/make_tiny_models.py", "models": []}
    for m in MODELS:
        path = os.path.join(out_dir, m["file"])
        spec = {k: v for k, v in m.items() if k != "file"}
        write_model(path, **spec)
        n_vocab = len(vocab(m.get("tokenizer", "gpt2"))[0])
        ids = [int(i) for i in np.random.default_rng(7).integers(0, n_vocab, IDS_LEN)]
        ref = Reference(path).logits(ids)
        llm = Llama(model_path=path, n_ctx=64, logits_all=True, n_threads=2, verbose=False)
        tokenized = [{"text": t, "ids": llm.tokenize(t.encode(), add_bos=False, special=True)} for t in TEXTS]
        llm.eval(ids)
        cpp = np.array(llm.scores[:IDS_LEN], dtype=np.float64)
        diff = np.abs(cpp - ref).max()
        scale = np.abs(ref).max()
        tol = 0.05 * scale
        for row_ref, row_cpp in zip(ref, cpp):
            two = np.sort(row_ref)[-2:]
            if two[1] - two[0] > tol:
                assert np.argmax(row_ref) == np.argmax(row_cpp), f"{m['file']}: llama.cpp reads it otherwise"
        assert diff < tol, f"{m['file']}: llama.cpp differs from the float64 forward by {diff} (scale {scale})"
        print(f"{m['file']}: llama.cpp vs float64 forward: max |diff| {diff:.4f}, max |logit| {scale:.2f}", file=sys.stderr)
        out["models"].append({
            "file": m["file"],
            "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
            "ids": ids,
            "tokenizer": tokenized,
            "logits": [[round(float(v), 5) for v in row] for row in ref],
            "llama_cpp_max_diff": float(diff),
        })
    with open(os.path.join(out_dir, "tiny_models_reference.json"), "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
