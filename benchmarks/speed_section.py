"""Write the speed sections of benchmarks/RESULTS.md from the result files of the speed benchmarks:
speed_hacks (benchmarks/speed_hacks.py), busy_machine (busy_machine.py), compile (compile_gain.py),
compile_check (compile_check.py) and bf16_parity (bf16_parity.py), each read from benchmarks/results/. A missing file leaves its
section as it is.

    python benchmarks/speed_section.py
"""
from __future__ import annotations

import json
from pathlib import Path

from _sections import replace_section
from attnlab.train.trainer import COMPILE_MIN_STEPS

RESULTS = Path(__file__).with_name("results")
KEEP_GAIN, LOSS = 0.05, -0.01   # keep a path that wins >= 5% of a step somewhere and loses > 1% nowhere


def _load(name):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def speed_hacks() -> str | None:
    broad, focus = _load("speed_hacks_eager.json"), _load("speed_hacks_focus.json")
    if broad is None:
        return None
    rows = {(r["path"], r["mode"]): dict(r, rounds=broad["meta"]["rounds"]) for r in broad["rows"]}
    for r in (focus or {}).get("rows", []):     # longer runs of the close calls replace the short ones
        rows[(r["path"], r["mode"])] = dict(r, rounds=focus["meta"]["rounds"])
    groups: dict[str, list] = {}
    for (path, _), r in rows.items():
        groups.setdefault(path.split(" (")[0], []).append(r)
    verdict = {g: ("kept" if max(r["gain"] for r in rs) >= KEEP_GAIN and min(r["gain"] for r in rs) > LOSS
                   else "deleted") for g, rs in groups.items()}
    m = broad["meta"]
    lines = ["## Speed hacks: does each custom path pay for itself?", "",
             f"A whole training step (forward, backward, SGD) of ResNet-20 at {m['size']}x{m['size']}, batch "
             f"{m['batch']}, channels_last, fp32, {m['threads']} threads, with the custom path on and off (the same "
             "computation in plain PyTorch, patched in), alternating A and B; median over the rounds. Gain = plain / "
             f"custom - 1. Rule: a path stays if it wins at least {KEEP_GAIN:.0%} of a step in some mode and loses "
             f"more than {-LOSS:.0%} in none. fp32 eager is also the default precision on this CPU (no native bf16), "
             "and under torch.compile the kept gate path is bypassed (the plain expression is traced), so it cannot "
             "lose there; the deleted paths are plain PyTorch in every mode now.", "",
             "| path | model | mode | rounds | custom (ms) | plain (ms) | gain | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for (path, mode), r in rows.items():
        lines.append(f"| {path} | {r['model']} | {mode} | {r['rounds']} | {r['on_ms']:.0f} | {r['off_ms']:.0f} | "
                     f"{100 * r['gain']:+.1f}% | {verdict[path.split(' (')[0]]} |")
    lines += ["", f"Commands: `python benchmarks/speed_hacks.py --rounds {m['rounds']} --steps {m['steps']} --json "
              "benchmarks/results/speed_hacks_eager.json` (run against the code before the deletions); "
              + (f"`python benchmarks/speed_hacks.py --rounds {focus['meta']['rounds']} --only ... --json "
                 "benchmarks/results/speed_hacks_focus.json`" if focus else ""),
              f"Machine: {m['cpu']}, torch {m['torch']}; load average at the end {m['load_avg'][0]:.1f}"]
    return "\n".join(lines)


def busy_machine() -> str | None:
    data = _load("busy_machine.json")
    if data is None:
        return None
    s = data["summary"]
    lines = ["## Training beside another CPU-bound process", "",
             f"ResNet-20 on 32x32 digits, batch 128, fp32, the Trainer in a fresh process; median images/s of the "
             f"epochs after the first, over the rounds. Busy = one other process spinning on one core of the "
             f"{data['cores']}. fixed = the old default (every core); auto = `threads=None` now (the cores the other "
             "processes leave free, chosen before each epoch).", "",
             "| threads | idle img/s | busy img/s | busy / idle | threads chosen (busy) |", "|---|---|---|---|---|"]
    for mode in ("fixed", "auto"):
        lines.append(f"| {mode} | {s[f'idle/{mode}']:.0f} | {s[f'busy/{mode}']:.0f} | "
                     f"{100 * s[f'busy_over_idle/{mode}']:.0f}% | {data['threads'][f'busy/{mode}'][0]} |")
    lines += ["", "Floor: busy at least 45% of idle. Command: `python benchmarks/busy_machine.py --rounds 2 --epochs 4 "
              "--json benchmarks/results/busy_machine.json`"]
    return "\n".join(lines)


def compile_gain() -> str | None:
    data = _load("compile.json")
    if data is None:
        return None
    lines = ["## torch.compile in training: cost and gain", "",
             f"ResNet-20, {data['threads']} threads; the first compiled step includes the compilation; steps are "
             "interleaved eager / compiled, median.", "",
             "| model | batch | first compiled step (s) | eager step (ms) | compiled step (ms) | gain | break-even (steps) |",
             "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        even = f"{r['break_even_steps']:.0f}" if r["break_even_steps"] else "never"
        lines.append(f"| {r['model']} | {r['batch']} | {r['first_compiled_step_s']:.0f} | {1e3 * r['eager_step_s']:.0f} "
                     f"| {1e3 * r['compiled_step_s']:.0f} | {r['gain']:.2f}x | {even} |")
    lines += ["", "Measured with an empty compiler cache (TORCHINDUCTOR_CACHE_DIR set to a new folder); with a "
              "warm cache the first step takes seconds, not a minute. The Trainer's `compile=None` compiles runs of "
              f"at least {COMPILE_MIN_STEPS:,} steps, above the largest break-even measured here. Command: "
              "`TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python benchmarks/compile_gain.py --json "
              "benchmarks/results/compile.json`"]
    return "\n".join(lines)


def compile_check() -> str | None:
    data = _load("compile_check.json")
    if data is None:
        return None
    rows = data["rows"]
    clean = sum(1 for r in rows if r.get("breaks") == 0 and r.get("graphs") == 1)
    lines = ["## torch.compile in training: graph breaks per family", "",
             f"One small model per family in train mode, traced by torch._dynamo.explain (torch {data['torch']}): "
             f"{clean} of {len(rows)} model/attention pairs are one graph with no break.", "",
             "| model | attention | graphs | breaks | first reason |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['attention'] or 'none'} | {r.get('graphs', '-')} | {r.get('breaks', '-')} | "
                     f"{(r.get('reasons') or [r.get('error', '')])[0] if (r.get('reasons') or r.get('error')) else ''} |")
    lines += ["", "Command: `python benchmarks/compile_check.py --json benchmarks/results/compile_check.json`"]
    return "\n".join(lines)


def bf16_parity() -> str | None:
    path = RESULTS / "bf16_parity.md"
    return path.read_text() if path.exists() else None


def main():
    for name, make in (("speed_hacks", speed_hacks), ("busy_machine", busy_machine), ("compile", compile_gain),
                       ("compile_check", compile_check), ("bf16_parity", bf16_parity)):
        body = make()
        if body is not None:
            replace_section(name, body)
            print(f"wrote section {name}")


if __name__ == "__main__":
    main()
