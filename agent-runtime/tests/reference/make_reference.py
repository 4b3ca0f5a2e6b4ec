#!/usr/bin/env python3
"""Make the reference data the runtime's correctness tests compare against.

    pip install llama-cpp-python==0.3.36 gguf numpy
    python3 agent-runtime/tests/reference/make_reference.py MODEL.gguf > agent-runtime/tests/data/smollm2_reference.json

Two independent references on the same GGUF file:

* token ids from llama.cpp (llama-cpp-python), with special tokens parsed;
* next-token logits from a plain float64 NumPy forward over the weights as
  stored in the file, dequantized with the `gguf` package: llama.cpp's own
  logits carry its int8 activation quantization, which is the error we do not
  want to match. For each teacher-forced position we keep the reference's
  top 20 logits; for each greedy prompt, the reference's greedy continuation
  and, per step, the gap between its top two logits.
"""
import hashlib
import json
import sys

import numpy as np
import gguf
from gguf.quants import dequantize

TOKENIZER_STRINGS = [
    "Hello, world!",
    "The year 2024 had 366 days; 1,234,567.89 is a number.",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Les élèves naïfs mangent des crêpes à Noël.",
    "机器学习是人工智能的一个分支。",
    "Emoji: 🤖🚀👍🏽 and ✨sparkles✨",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "  leading spaces, trailing spaces   \n\n\ttabs\tand\r\nCRLF",
    "Привет, мир! Γειά σου Κόσμε! مرحبا بالعالم",
    "<|endoftext|>fake <|im_end|> tokens <|im_start|>system",
    "URL: https://example.com/path?query=1&x=y#frag — em-dash … ellipsis",
    "{\"answer\": 42, \"list\": [1, 2, 3], \"nested\": {\"ok\": true}}",
    "",
    "a",
    "1234567890",
]

TEACHER_FORCED = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nExplain why the sky is blue in a short paragraph.<|im_end|>\n"
    "<|im_start|>assistant\nThe sky appears blue because of a phenomenon called Rayleigh scattering. "
    "Sunlight is made of many colors, each with a different wavelength. When sunlight enters the "
    "atmosphere, it collides with gas molecules, which scatter shorter wavelengths much more strongly "
    "than longer ones. Blue light has a short wavelength, so it is scattered in every direction across "
    "the sky, and that scattered blue light is what reaches our eyes from all around. At sunrise and "
    "sunset the light travels through more air, so more of the blue is scattered away before it reaches "
    "us, leaving the reds and oranges that make those times of day so colorful. The same physics explains "
    "why distant mountains look bluish and why the ocean often mirrors the color of the sky above it.<|im_end|>\n"
    "<|im_start|>user\nAnd why are clouds white?<|im_end|>\n<|im_start|>assistant\n"
)

GREEDY_PROMPTS = [
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "def add(a, b):\n    return",
]
GREEDY_STEPS = 24
TOP = 20


class Reference:
    def __init__(self, path):
        r = gguf.GGUFReader(path)
        self.fields = r.fields
        self.t = {}
        for t in r.tensors:
            w = dequantize(t.data, t.tensor_type).astype(np.float64)
            self.t[t.name] = w.reshape([int(d) for d in reversed(t.shape)]) if w.ndim != len(t.shape) else w
        arch = self.field("general.architecture")
        self.n_layers = self.field(f"{arch}.block_count")
        self.n_heads = self.field(f"{arch}.attention.head_count")
        self.n_kv = self.field(f"{arch}.attention.head_count_kv")
        self.eps = self.field(f"{arch}.attention.layer_norm_rms_epsilon")
        self.base = self.field(f"{arch}.rope.freq_base")
        # llama GGUFs rotate interleaved pairs; Qwen2 rotates halves (NeoX).
        self.neox = arch == "qwen2"

    def field(self, key):
        f = self.fields[key]
        v = f.parts[f.data[0]]
        if f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(v).decode()
        return v.tolist()[0]

    def w(self, name):
        return self.t[name]

    def rms(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, x, positions):
        # x: [T, heads, hd]; pairs (a, b) rotate by position · freq.
        hd = x.shape[-1]
        freqs = 1.0 / self.base ** (np.arange(0, hd, 2) / hd)
        ang = positions[:, None] * freqs[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        first, second = (slice(0, hd // 2), slice(hd // 2, hd)) if self.neox else (slice(0, hd, 2), slice(1, hd, 2))
        a, b = x[..., first], x[..., second]
        out = np.empty_like(x)
        out[..., first] = a * cos - b * sin
        out[..., second] = a * sin + b * cos
        return out

    def proj(self, h, name):
        y = h @ self.w(name + ".weight").T
        return y + self.t[name + ".bias"] if name + ".bias" in self.t else y

    def logits(self, ids):
        T = len(ids)
        x = self.w("token_embd.weight")[ids]
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for i in range(self.n_layers):
            p = f"blk.{i}."
            h = self.rms(x, self.w(p + "attn_norm.weight"))
            q = self.proj(h, p + "attn_q").reshape(T, self.n_heads, -1)
            k = self.proj(h, p + "attn_k").reshape(T, self.n_kv, -1)
            v = self.proj(h, p + "attn_v").reshape(T, self.n_kv, -1)
            q, k = self.rope(q, pos), self.rope(k, pos)
            group = self.n_heads // self.n_kv
            k = np.repeat(k, group, axis=1)
            v = np.repeat(v, group, axis=1)
            hd = q.shape[-1]
            att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            o = np.einsum("hts,shd->thd", att, v).reshape(T, -1)
            x = x + o @ self.w(p + "attn_output.weight").T
            h = self.rms(x, self.w(p + "ffn_norm.weight"))
            g = h @ self.w(p + "ffn_gate.weight").T
            u = h @ self.w(p + "ffn_up.weight").T
            x = x + (g / (1 + np.exp(-g)) * u) @ self.w(p + "ffn_down.weight").T
        h = self.rms(x, self.w("output_norm.weight"))
        head = self.t.get("output.weight", self.w("token_embd.weight"))
        return h @ head.T


def top_two_gap(row):
    two = np.partition(row, -2)[-2:]
    return float(abs(two[1] - two[0]))


def main():
    path = sys.argv[1]
    from llama_cpp import Llama

    llm = Llama(model_path=path, vocab_only=True, verbose=False)
    tok = lambda s: llm.tokenize(s.encode(), add_bos=False, special=True)
    ref = Reference(path)
    out = {
        "model_sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
        "made_by": "agent-runtime/tests/reference/make_reference.py",
        "tokenizer": [{"text": s, "ids": tok(s)} for s in TOKENIZER_STRINGS],
    }
    ids = tok(TEACHER_FORCED)
    logits = ref.logits(ids)
    positions = []
    for row in logits:
        top = np.argsort(-row)[:TOP]
        positions.append({"top": [[int(t), float(row[t])] for t in top], "gap": top_two_gap(row)})
    out["teacher_forced"] = {"text": TEACHER_FORCED, "ids": ids, "positions": positions}
    greedy = []
    for prompt in GREEDY_PROMPTS:
        p_ids = tok(prompt)
        seq, gaps = list(p_ids), []
        for _ in range(GREEDY_STEPS):
            row = ref.logits(seq)[-1]
            gaps.append(top_two_gap(row))
            seq.append(int(np.argmax(row)))
        greedy.append({"prompt": prompt, "prompt_ids": p_ids, "continuation": seq[len(p_ids):], "gaps": gaps})
    out["greedy"] = greedy
    json.dump(out, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
