#!/usr/bin/env python3
"""Writes arithmetic.jsonl: 200 two-operand problems with exact answers,
from a fixed seed (python3 spaces/prompts/make_arithmetic.py). Each carries
a difficulty tier for GRPO's curriculum: 0 for a one-digit product or a sum
or non-negative difference with a one-digit operand, 2 for a product of two
two-digit numbers or a negative difference, 1 for the rest."""
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
        short = min(len(str(a)), len(str(b))) == 1
        if sym == "*":
            tier = 0 if max(a, b) < 10 else 1 if short else 2
        elif fn(a, b) < 0:
            tier = 2
        else:
            tier = 0 if short else 1
        line = {"prompt": f"What is {a} {sym} {b}? Answer with the number.", "reference": str(fn(a, b)), "tier": tier}
        f.write(json.dumps(line) + "\n")
print(path)
