"""Write docs/conformance.md: every registered model against every conformance check
(attnlab.deploy.conformance), or check that the page still says what the models do.

    python tools/conformance.py              # the per-model columns (about half an hour); costly cells are kept
    python tools/conformance.py --costly     # every column on every model (long: over an hour)
    python tools/conformance.py --check      # exit 1 when a per-model column's cell differs from the page
    python tools/conformance.py --models '*resnet*' --costly    # rewrite only these rows' cells
    python tools/conformance.py --jobs 2     # models in 2 worker processes

Runs each model on one thread (small inputs: more threads cost more than they give), models one by
one in each of --jobs processes, and prints each check's outcome and CPU seconds as it goes.
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import functools
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

import attnlab
from attnlab.deploy.conformance import (CHEAP, CHECK_KEYS, CHECKS, MIN_SIDE, NUM_CLASSES, SCRIPT_ONLY_EXPORTS,
                                        SCRIPT_ONLY_NODES, ModelRow, Outcome, check_model, read_matrix,
                                        render_matrix)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "conformance.md"


def first_paragraph(doc: str) -> str:
    return " ".join(doc.split("\n\n")[0].split())


def preamble() -> str:
    columns = "\n".join(f"- `{c.key}`: {c.title}{' (costly)' if c.costly else ''}. {first_paragraph(c.run.__doc__)}"
                        for c in CHECKS)
    script_only = ", ".join(f"`{name}`" for name in sorted(SCRIPT_ONLY_EXPORTS))
    return f"""# Conformance matrix

Every registered model (`attnlab.list_models()`) against the checks a backbone that drops into
detection, segmentation and deployment code must pass, in the spirit of timm's per-model tests.
Written by `python tools/conformance.py --costly`; `python tools/conformance.py` recomputes the
per-model columns and keeps the costly cells; `--check` says whether the page is still true.

In CI (the test suite), every per-model column runs on every registered model:
tests/models/test_all_models.py runs forward, backward, forward_intermediates and the FX trace;
tests/models/test_conformance.py runs grad checkpointing, features_only and the torch.export round
trip, and expects this page's cells, except the round trip of the {len(SCRIPT_ONLY_EXPORTS)} models
whose torch.fx graph has more than {SCRIPT_ONLY_NODES} nodes and of the ImageNet VGGs (130 M
weights): the round trip costs some 25 CPU-milliseconds per node, over 20 CPU-minutes for all
models, more than the suite's 10 minutes can hold. Their cells come from this script only:
{script_only}.
The costly columns, and the round trip once more, run in CI on one model per family, with fewer
blocks where the family's arguments allow, and are compared with this page's representative of the
family (listed below the matrix).

Each model is built with {NUM_CLASSES} classes and checked on a batch of 2 at the smallest side it
accepts, at least {MIN_SIDE} px and at least twice its largest reduction (every stage's map 2 x 2 or
more). Cells: `pass`; `FAIL` (the reason is listed at the end); `n/a`
(the family declares it cannot honour the check and its API raises a clear error; the reason is
listed); `missing` (the model lacks the API); `—` (not run).

Columns (the implementation is `attnlab.deploy.conformance`):

{columns}
"""


NOTE = re.compile(r"^- (\S+), (\S+): [^:]+: (.*)$", re.M)


def existing_page() -> tuple[dict[str, dict[str, str]], dict[tuple[str, str], str]]:
    """The page's matrix and the reason of each cell other than pass, (model, check) -> reason."""
    text = DOC.read_text() if DOC.exists() else ""
    return read_matrix(text), {(m, k): reason for m, k, reason in NOTE.findall(text)}


def kept(name: str, key: str, old: dict, reasons: dict) -> Outcome:
    return Outcome(old[name][key], reasons.get((name, key), ""))


def kept_row(name: str, old: dict, reasons: dict) -> ModelRow:
    """A row not rechecked, as the page has it; its parameters counted on the meta device (no memory)."""
    with torch.device("meta"):
        params = sum(p.numel() for p in attnlab.create_model(name, num_classes=NUM_CLASSES).parameters())
    cells = {k: kept(name, k, old, reasons) for k in CHECK_KEYS if old[name][k] != "—"}
    return ModelRow(name, old[name]["family"], params, cells)


def page_differences(row: ModelRow, old: dict) -> list[str]:
    """How the page's row of the model differs from `row` in the per-model columns and the family."""
    before = old.get(row.name, {})
    lines = [f"{row.name} {k}: page says {before.get(k, 'nothing')!r}, the check gives {row.cells[k].status!r}"
             for k in CHEAP if before.get(k) != row.cells[k].status]
    if before.get("family") != row.family:
        lines.append(f"{row.name}: page says family {before.get('family')!r}, the model's is {row.family!r}")
    return lines


def checked(keys: tuple[str, ...], name: str) -> ModelRow:
    """`check_model(name, keys)` on one thread (in a worker process too)."""
    torch.set_num_threads(1)
    return check_model(name, keys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--costly", action="store_true", help="also run the costly columns (default: cheap only)")
    ap.add_argument("--check", action="store_true", help="compare the cheap columns with the page; write nothing")
    ap.add_argument("--models", default="*", help="shell pattern of the models to (re)check (default: all)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes checking models side by side (default: 1)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        print(f"conformance: --jobs {args.jobs}: expected 1 or more", file=sys.stderr)
        return 2
    names = attnlab.list_models()
    chosen = [n for n in names if fnmatch.fnmatch(n, args.models)]
    if not chosen:
        print(f"conformance: no model matches {args.models!r}", file=sys.stderr)
        return 2
    keys = CHECK_KEYS if args.costly and not args.check else CHEAP
    old, reasons = existing_page()
    rows, differences = [], []
    check = functools.partial(checked, keys)
    with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else contextlib.nullcontext() as pool:
        for i, row in enumerate(pool.map(check, chosen) if pool else map(check, chosen), 1):
            print(f"[{i}/{len(chosen)}] {row.name}: " + " ".join(f"{k}={v.status} ({v.seconds:.2f} s)"
                                                              for k, v in row.cells.items()),
                  file=sys.stderr, flush=True)
            differences += page_differences(row, old)
            for key in CHECK_KEYS:          # costly cells not rerun stay as the page has them
                if key not in row.cells and old.get(row.name, {}).get(key, "—") != "—":
                    row.cells[key] = kept(row.name, key, old, reasons)
            rows.append(row)
    if args.check:
        stale = sorted(set(old) - set(names))
        differences += [f"{name}: on the page but no longer registered" for name in stale]
        for line in differences:
            print(line)
        return 1 if differences else 0
    done = {r.name for r in rows}
    rows += [kept_row(n, old, reasons) for n in names if n not in done and n in old]
    DOC.write_text(render_matrix(rows, preamble()))
    print(DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
