"""A weight, checkpoint or dataset file from elsewhere never runs code: pickles whose __reduce__
would create a marker file go through every loading path (create_model(pretrained=),
read_state_dict, load_checkpoint, load_trained, `attnlab eval/explain --checkpoint`,
`attnlab train --resume`, the CIFAR loader); each is refused with a ValueError / TypeError (or
exit status 2 from the CLI) and the marker never appears. A checkpoint record that names a tensor
file outside its own folder is refused by every loading path before that file is opened."""
from __future__ import annotations

import contextlib
import io
import pickle

import pytest
import torch

from attnlab.cli import main
from attnlab.data.datasets import load_dataset
from attnlab.io.checkpoint import load_checkpoint
from attnlab.models import create_model
from attnlab.models.pretrained import read_state_dict
from attnlab.train import load_trained


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


# ---------------------------------------------------------------------------- paths a checkpoint names
def _forge(json_path, tensors_file) -> None:
    """Point the record at `tensors_file` and fix its hash (it has no key: anyone can)."""
    import hashlib
    import json

    from attnlab.io import checkpoint as ck

    record = json.loads(json_path.read_text())
    record.pop("record_sha256")
    record["tensors_file"] = tensors_file
    record["record_sha256"] = hashlib.sha256(ck._canonical(record)).hexdigest()
    json_path.write_text(json.dumps(record))


@pytest.fixture
def escaping_runs(tmp_path):
    """Runs whose newest record names a tensor file outside its folder: a complete, hash-valid
    .safetensors beside the run (which the loader used to take), an absolute path, /etc/passwd."""
    import random
    import shutil

    import numpy as np

    from attnlab.train import TrainConfig
    from attnlab.io.checkpoint import save_checkpoint

    model = create_model("resnet_cifar", depth=8, width=4, num_classes=10, in_chans=1)
    config = TrainConfig(model="resnet_cifar", model_kwargs={"depth": 8, "width": 4}, dataset="digits", epochs=1,
                         batch_size=256, channels_last=False).to_dict()
    state = {"epoch": 1, "batch_in_epoch": 0, "step": 5, "bad_steps": 0, "seconds": 1.0, "best_acc": 0.5,
             "steps_per_epoch": 5, "epoch_sums": {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0},
             "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
             "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                     "augment": torch.Generator().get_state()}, "config": config, "metrics": {},
             "data": {"num_classes": 10, "in_chans": 1, "mean": [0.3], "std": [0.4], "image_size": [8, 8]}}
    runs = {}
    for label in ("relative", "absolute", "passwd"):
        run = tmp_path / label
        path = save_checkpoint(run / "checkpoints", 5, state, model.state_dict())
        outside = tmp_path / f"{label}-outside.safetensors"
        shutil.copy(path.with_suffix(".safetensors"), outside)
        name = {"relative": f"../../{outside.name}", "absolute": str(outside), "passwd": "/etc/passwd"}[label]
        _forge(path, name)
        runs[label] = (run, path, outside)
    return runs


def test_no_loading_path_follows_a_record_out_of_its_folder(escaping_runs, tmp_path, monkeypatch, capsys):
    from attnlab.io import checkpoint as ck

    opened = []
    real = ck.read_regular_file
    monkeypatch.setattr(ck, "read_regular_file", lambda p: (opened.append(str(p)), real(p))[1])
    for label, (run, path, outside) in escaping_runs.items():
        attempts = [(lambda: load_checkpoint(run)), (lambda: load_trained(run)),
                    (lambda: create_model("resnet_cifar", depth=8, width=4, num_classes=10, in_chans=1,
                                          pretrained=str(run))),
                    (lambda: read_state_dict(path.with_suffix(".safetensors")))]
        for attempt in attempts:
            opened.clear()
            with pytest.raises(ValueError, match="field record.tensors_file must be the name of a .safetensors file"):
                attempt()
            assert opened == [str(path)], (label, opened)     # the record only, never the file it names
        for argv in (["eval", "--checkpoint", str(run)],
                     ["explain", "--checkpoint", str(run), "--out", str(tmp_path / "figs")],
                     ["train", "--model", "resnet_cifar", "--model-kwargs", '{"depth": 8, "width": 4}', "--dataset",
                      "digits", "--epochs", "1", "--batch-size", "256", "--out", str(run), "--resume",
                      "--no-progress"]):
            opened.clear()
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and "record.tensors_file" in err and "Traceback" not in err, err
            assert all(p == str(path) for p in opened), (argv, opened)
