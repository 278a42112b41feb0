"""A weight, checkpoint or dataset file from elsewhere never runs code: pickles whose __reduce__
would create a marker file go through every loading path (create_model(pretrained=),
read_state_dict, load_checkpoint, load_trained, `attnlab eval/explain --checkpoint`,
`attnlab train --resume`, the CIFAR loader); each is refused with a ValueError / TypeError (or
exit status 2 from the CLI) and the marker never appears."""
from __future__ import annotations

import contextlib
import io
import pickle

import pytest
import torch

from attnlab.cli import main
from attnlab.data.datasets import load_dataset
from attnlab.models import create_model
from attnlab.models.pretrained import read_state_dict
from attnlab.train import load_trained
from attnlab.train.checkpoint import load_checkpoint


class CodePayload:
    """Unpickling this calls exec(), which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "PAYLOAD_RAN"


@pytest.fixture
def poisoned(tmp_path, marker):
    """Every kind of file a loader might open, each carrying the payload."""
    payload = CodePayload(marker)
    files = {}
    blob = pickle.dumps({"fc.weight": payload, "state_dict": {"conv1.weight": payload}})
    for suffix in (".pth", ".pt", ".bin"):
        files[f"pickle{suffix}"] = tmp_path / f"raw{suffix}"
        files[f"pickle{suffix}"].write_bytes(blob)
    files["torch.save zip"] = tmp_path / "zipped.pth"
    torch.save({"state_dict": {"fc.weight": payload}}, files["torch.save zip"])
    files["fake .safetensors"] = tmp_path / "fake.safetensors"
    files["fake .safetensors"].write_bytes(blob)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-000000001.json").write_bytes(blob)
    (run / "checkpoints" / "ckpt-000000001.safetensors").write_bytes(blob)
    files["run folder"] = run
    files["checkpoint json"] = run / "checkpoints" / "ckpt-000000001.json"
    return files


def test_the_payload_is_live(tmp_path):
    """Guard for the tests below: plain pickle.loads does run it."""
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(CodePayload(live)))
    assert live.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_python_loading_paths_refuse_and_never_run_code(poisoned, marker):
    attempts = []
    for label, path in poisoned.items():
        attempts += [(f"create_model(pretrained={label})", lambda p=path: create_model("resnet20", pretrained=p)),
                     (f"read_state_dict({label})", lambda p=path: read_state_dict(p)),
                     (f"load_checkpoint({label})", lambda p=path: load_checkpoint(p)),
                     (f"load_trained({label})", lambda p=path: load_trained(p))]
    for label, attempt in attempts:
        with pytest.raises((ValueError, TypeError)) as err:
            attempt()
        assert str(err.value), label
        assert not marker.exists(), label


def test_cli_loading_paths_refuse_and_never_run_code(poisoned, marker, tmp_path):
    for label, path in poisoned.items():
        for argv in (["eval", "--checkpoint", str(path)],
                     ["explain", "--checkpoint", str(path), "--out", str(tmp_path / "figs")]):
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                status = main(argv)
            assert status == 2, (label, argv, stderr.getvalue())
            assert len(stderr.getvalue().strip().splitlines()) == 1 and not marker.exists(), label
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = main(["train", "--model", "resnet20", "--dataset", "digits", "--epochs", "1", "--no-progress",
                       "--out", str(poisoned["run folder"]), "--resume"])
    assert status == 2 and "ckpt-000000001.json" in stderr.getvalue() and not marker.exists()


def test_cifar_loader_refuses_code_in_batches(tmp_path, marker):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    blob = pickle.dumps({b"data": CodePayload(marker), b"labels": [0]})
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(blob)
    with pytest.raises(ValueError, match="refusing to load global builtins.exec"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()
