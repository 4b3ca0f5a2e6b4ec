#!/usr/bin/env python3
"""Writes tic-tac-toe-openings.jsonl: every tic-tac-toe position after 0, 1
or 2 moves (1 + 9 + 72 = 82 starting prompts). Re-running it gives the
committed file byte for byte."""
import itertools, json, pathlib

lines = []
for n in range(3):
    for moves in itertools.permutations(range(1, 10), n):
        opening = " ".join(map(str, moves))
        prompt = "Tic-tac-toe: three in a row wins." + (f"\nopening: {opening}" if moves else "")
        lines.append(json.dumps({"prompt": prompt}))
out = pathlib.Path(__file__).with_name("tic-tac-toe-openings.jsonl")
out.write_text("".join(line + "\n" for line in lines))
print(f"{len(lines)} prompts written to {out}")
