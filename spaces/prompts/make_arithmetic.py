#!/usr/bin/env python3
"""Writes arithmetic.jsonl: 200 two-operand problems with exact answers,
from a fixed seed (python3 spaces/prompts/make_arithmetic.py)."""
import json
import os
import random

rng = random.Random(20261125)
ops = [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b)]
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "arithmetic.jsonl")
with open(path, "w") as f:
    for _ in range(200):
        sym, fn = rng.choice(ops)
        a = rng.randint(2, 99 if sym != "*" else 30)
        b = rng.randint(2, 99 if sym != "*" else 30)
        f.write(json.dumps({"prompt": f"What is {a} {sym} {b}? Answer with the number.", "reference": str(fn(a, b))}) + "\n")
print(path)
