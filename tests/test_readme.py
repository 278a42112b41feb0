"""Every code block of README.md runs as written.

- ```python blocks run in order in one namespace, in a scratch folder holding the files they name
  (`resnet50.pth`, torchvision's own ResNet-50 weights, made here from its builder);
- ```bash blocks run line by line in a scratch folder with `attnlab` on the PATH, each line must
  exit 0. Each line is run by bash as written; its `attnlab` starts the command as a fork of a
  process that has already imported attnlab (and torch, dynamo, scipy, matplotlib: the imports,
  seconds long, that every command would repeat), so the block pays them once. The command
  itself is `console_main`, what the installed `attnlab` script runs (checked below), in a
  process of its own with the line's arguments, folder and standard streams;
- the two set-up commands (between the main-command / test-command markers) are run by CI (.ci/run
  runs the second one); here they are checked to install through the pinned constraints file.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
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
    assert namespace["result"].exporter == "torch.onnx (dynamo)" and (tmp_path / "se_resnet18.onnx").is_file()


# The process the bash block's `attnlab` commands are forked from (argv: its socket). Each request
# is one command: its arguments and folder, and its standard streams as file descriptors; the
# answer is the command's exit status. Spawned processes (a study's workers) start afresh.
ZYGOTE = textwrap.dedent("""
    import json, os, socket, sys, traceback
    from attnlab.cli import console_main
    import attnlab.report, torch._dynamo   # imports the commands share (the optimizer imports dynamo)

    server = socket.socket(socket.AF_UNIX)
    server.bind(sys.argv[1])
    server.listen()
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        message, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        request = json.loads(message)
        pid = os.fork()
        if pid == 0:
            server.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            os.chdir(request["cwd"])
            sys.argv = ["attnlab", *request["argv"]]
            try:
                code = console_main()
            except SystemExit as stop:   # as the interpreter ends on it
                code = stop.code if isinstance(stop.code, int) or stop.code is None else 1
                if code == 1 and not isinstance(stop.code, int):
                    print(stop.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code or 0)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())
        conn.close()
""")
# `attnlab` on the block's PATH: hands its arguments, folder and streams to the zygote and exits
# with the command's status (128 + N for a command ended by signal N, as a shell reports it).
CLIENT = """#!{python} -S
import json, os, socket, sys
conn = socket.socket(socket.AF_UNIX)
conn.connect({socket!r})
socket.send_fds(conn, [json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd()}}).encode()], [0, 1, 2])
status = int(conn.recv(64))
sys.exit(status if status >= 0 else 128 - status)
"""


@pytest.fixture
def attnlab_on_path(tmp_path):
    """A folder holding the `attnlab` client, to put first on the PATH; the zygote behind it."""
    bin_dir, sock = tmp_path / "bin", tmp_path / "zygote.sock"
    bin_dir.mkdir()
    with open(tmp_path / "zygote.err", "w") as err:
        zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(sock)], stdout=subprocess.PIPE, stderr=err,
                                  text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        assert zygote.stdout.readline().strip() == "ready", (tmp_path / "zygote.err").read_text()[-2000:]
        client = bin_dir / "attnlab"
        client.write_text(CLIENT.format(python=sys.executable, socket=str(sock)))
        client.chmod(0o755)
        yield bin_dir
    finally:
        zygote.kill()
        zygote.wait(timeout=60)


@pytest.mark.slow
def test_bash_block_runs_as_written(tmp_path, attnlab_on_path):
    # the installed `attnlab` script runs console_main, what the commands below run
    installed = (Path(sys.executable).parent / "attnlab").read_text()
    assert "from attnlab.cli import console_main" in installed and "console_main()" in installed
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PATH=f"{attnlab_on_path}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                                f"{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")
    for line in "\n".join(blocks("bash")).splitlines():
        command = line.split("  #")[0].strip()
        if not command:
            continue
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    assert (work / "runs" / "r8-se" / "final.json").is_file()
    assert list((work / "runs" / "study").glob("*/report.html"))


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
