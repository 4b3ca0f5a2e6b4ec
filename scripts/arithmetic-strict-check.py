#!/usr/bin/env python3
# Strict re-check of an arithmetic agent on problems outside the Space's file:
# 60 seeded two-operand problems (the Space's operand ranges and operators;
# none of them in spaces/prompts/arithmetic.jsonl), greedy answers, two counts:
#   space  — the Space's rule: the last number in the answer is the result;
#   strict — every number in the answer other than the two operands is the
#            result, and there is one (no lists of guesses, no other sums).
# Usage: scripts/arithmetic-strict-check.py [base|ADAPTER_DIR ...]  (default: base)
# (run from the repository root after a release build; ARENA_BIN names the
# binary, default $CARGO_TARGET_DIR/release/arena or target/release/arena).
import json, os, random, re, subprocess, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
known = {json.loads(l)["prompt"] for l in open(os.path.join(root, "spaces/prompts/arithmetic.jsonl"))}
rng = random.Random(4242)
ops = [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b)]
problems = []
while len(problems) < 60:
    sym, fn = rng.choice(ops)
    a = rng.randint(2, 99 if sym != "*" else 30)
    b = rng.randint(2, 99 if sym != "*" else 30)
    prompt = f"What is {a} {sym} {b}? Answer with the number."
    if prompt in known or any(p[0] == prompt for p in problems):
        continue
    problems.append((prompt, a, b, fn(a, b)))
binary = os.environ.get("ARENA_BIN") or os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "arena")
for adapter in [None if a == "base" else a for a in (sys.argv[1:] or ["base"])]:
    space = strict = 0
    for prompt, a, b, result in problems:
        cmd = [binary, "model", "generate", "--prompt", prompt, "--max-tokens", "48", "--temperature", "0",
               "--repetition-penalty", "1"]
        if adapter:
            cmd += ["--adapter", adapter]
        text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        numbers = [int(n) for n in re.findall(r"-?\d+", text.replace(",", ""))]
        space += bool(numbers) and numbers[-1] == result
        others = [n for n in numbers if n not in (a, b) or n == result]
        strict += bool(others) and all(n == result for n in others)
    print(f"{adapter or 'base'}: Space's rule {space}/60, strict {strict}/60")
