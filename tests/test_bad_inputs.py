"""Every bad input of tools/bad_inputs.py (the table of docs/reliability.md): API cases raise a
ValueError / TypeError with a message; CLI cases exit 2 with one line on stderr and no traceback;
one through a real `attnlab` subprocess too."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_tool():
    spec = importlib.util.spec_from_file_location("attnlab_bad_inputs", ROOT / "tools" / "bad_inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module              # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


tool = _load_tool()




@pytest.fixture(scope="module")
def all_cases(tmp_path_factory):
    return tool.cases(tmp_path_factory.mktemp("bad_inputs"))


def test_the_table_has_at_least_40_cases_through_each_surface(all_cases):
    surfaces = [c.surface for c in all_cases]
    assert surfaces.count("api") >= 40 and surfaces.count("cli") >= 40
    assert len({c.what for c in all_cases}) == len(all_cases)          # each row says something new


def test_api_cases_raise_value_or_type_error_with_a_message(all_cases):
    failures = []
    for case in (c for c in all_cases if c.surface == "api"):
        try:
            case.call()
        except (ValueError, TypeError) as err:          # CheckpointError, DatasetError are ValueErrors
            if len(str(err)) < 10:
                failures.append(f"{case.what}: message too short: {err!r}")
        except Exception as err:  # noqa: BLE001 - any other exception is the failure being looked for
            failures.append(f"{case.what}: {type(err).__name__}: {err}")
        else:
            failures.append(f"{case.what}: no error")
    assert not failures, "\n".join(failures)


def test_cli_cases_exit_2_with_one_line_and_no_traceback(all_cases):
    failures = []
    for case in (c for c in all_cases if c.surface == "cli"):
        status, err, out = tool.run_cli(case.call)
        lines = err.strip().splitlines()
        if status != 2 or len(lines) != 1 or "Traceback" in err or not lines[0].startswith("attnlab"):
            failures.append(f"{case.what}: exit {status}: {err!r}")
    assert not failures, "\n".join(failures)


def test_real_subprocess_gets_one_line_and_status_2(tmp_path):
    argv = ["train", "--model", "resnet20", "--dataset", "digits", "--out", "x", "--attention-stages", "9",
            "--attention", "se"]
    proc = subprocess.run([sys.executable, "-m", "attnlab", *argv], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_the_doc_is_generated_from_the_same_cases(all_cases):
    doc = (ROOT / "docs" / "reliability.md").read_text()
    assert "python tools/bad_inputs.py --write docs/reliability.md" in doc.splitlines()[2]
    rows = [line for line in doc.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(rows) == len(all_cases)
    for row, case in zip(rows, all_cases):
        assert case.what in row
