"""Every code block of README.md runs as written.

- ```python blocks run in order in one namespace, in a scratch folder holding the files they name
  (`resnet50.pth`, torchvision's own ResNet-50 weights, made here from its builder);
- ```bash blocks run line by line in a scratch folder with `attnlab` on the PATH, each line must
  exit 0;
- the two set-up commands (between the main-command / test-command markers) are run by CI (.ci/run
  runs the second one); here they are checked to install through the pinned constraints file.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README) if lang == language]


def setup_command(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\n```\n(.*?)\n```\n<!-- /{marker} -->", README, re.S)
    assert found, f"README has no {marker} block"
    return found.group(1)


def test_readme_has_the_blocks_this_test_runs():
    # a README that lost its examples, or a block under another language tag, fails here
    assert len(blocks("python")) >= 2 and len(blocks("bash")) >= 1
    assert {lang for lang, _ in BLOCK.findall(README)} <= {"", "python", "bash"}


def test_python_blocks_run_as_written(tmp_path, monkeypatch, torchvision):
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "resnet50.pth")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, code in enumerate(blocks("python"), 1):
        exec(compile(code, f"README.md python block {number}", "exec"), namespace)  # noqa: S102
    # the values the comments promise
    assert namespace["rec"]["layer3.0.attention"]["spatial_gate"].shape == (2, 1, 4, 4)
    assert namespace["rec"].paths()[:2] == ["layer3.0.attention", "layer3.1.attention"]
    assert namespace["backbone"].feature_info.channels() == [256, 512, 1024, 2048]
    assert [tuple(m.shape) for m in namespace["maps"]][0] == (2, 256, 56, 56)
    assert namespace["result"].exporter == "torch.onnx (dynamo)" and (tmp_path / "se_resnet50.onnx").is_file()


@pytest.mark.slow
def test_bash_block_runs_as_written(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONUNBUFFERED="1")
    for line in "\n".join(blocks("bash")).splitlines():
        command = line.split("  #")[0].strip()
        if not command:
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    assert (tmp_path / "runs" / "r8-se" / "final.json").is_file()
    assert list((tmp_path / "runs" / "study").glob("*/report.html"))


def test_setup_commands_install_through_the_constraints_file():
    constraints = ROOT / "constraints.txt"
    pins = {line.split("==")[0].lower(): line.split("==")[1]
            for line in constraints.read_text().splitlines() if "==" in line and not line.startswith("#")}
    assert pins["torch"] == "2.13.0" and "pytest" in pins and "numpy" in pins
    for marker in ("main-command", "test-command"):
        command = setup_command(marker)
        installs = [part for part in command.split("&&") if "pip install" in part and "--no-deps" not in part]
        assert installs and all("-c constraints.txt" in part for part in installs), (marker, command)
    # .ci/run runs the README's test command, not a copy of it
    assert "test-command" in (ROOT / ".ci" / "run").read_text()
