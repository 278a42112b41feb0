"""The import contracts of pyproject.toml ([tool.importlinter]) hold: every import of attnlab points
down its layers (cli > study > report > explain > measure > train > models > attention | data | io
> checks), inside functions too. Checked by import-linter, the tool CI runs through this test; a
second test proves the check bites by adding one upward import to a copy of the package."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
pytestmark = pytest.mark.skipif(LINT is None, reason="import-linter is not installed (pip install -e '.[test]')")


def lint(config: Path, package_parent: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(package_parent))
    return subprocess.run([LINT, "--config", str(config), "--no-cache"], cwd=config.parent, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_import_points_down():
    done = lint(ROOT / "pyproject.toml", ROOT / "src")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout or "kept, 0 broken" in done.stdout


@pytest.mark.parametrize("lower, upper", [
    ("attention/se.py", "attnlab.models.registry"),
    ("models/vgg.py", "attnlab.train.trainer"),
    ("train/optim.py", "attnlab.report"),
])
def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path, lower, upper):
    copy = tmp_path / "src" / "attnlab"
    shutil.copytree(ROOT / "src" / "attnlab", copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / lower, "a") as fh:
        fh.write(f"\n\ndef _probe():\n    import {upper}  # upward: must be refused\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    done = lint(tmp_path / "pyproject.toml", tmp_path / "src")
    assert done.returncode != 0
    assert upper in done.stdout and "BROKEN" in done.stdout.upper()
