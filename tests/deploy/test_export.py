"""attnlab.export and `attnlab export`: the file written computes what the model computes (ONNX in
onnxruntime, .pt2 reloaded) at batch sizes other than the example's; a file that does not is
refused and nothing is left behind; bad arguments are refused before any work."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import attnlab
from attnlab.cli import main
from attnlab.deploy.export import (ExportError, compare_outputs, export_program, onnx_runner, program_runner,
                                   verification_inputs)

pytest.importorskip("onnxruntime")


def _gated_net() -> nn.Module:
    """A small net holding every mechanism built on adaptive pooling (SE, ECA, CBAM, GC), the
    classic source of ONNX export failures, with random BN statistics so that eval mode matters."""
    torch.manual_seed(0)
    channels = 8
    net = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                        *(attnlab.create_attention(name, channels, **({"reduction": 2} if name != "eca" else {}))
                          for name in ("se", "eca", "cbam", "gc")),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 4))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
        for p in net.parameters():    # GC's last conv starts at zero (an identity): make it count
            p.add_(torch.randn_like(p) * 0.1)
    return net


@pytest.fixture(scope="module")
def net():
    return _gated_net()


# a non-square input whose sides the pooling does not divide evenly
EXAMPLE = torch.randn(2, 3, 11, 13, generator=torch.Generator().manual_seed(1))


def test_onnx_export_of_the_pooling_attentions_runs_the_same_in_onnxruntime(net, tmp_path):
    net.train()
    result = attnlab.export(net, EXAMPLE, tmp_path / "net.onnx", metadata={"mean": "[0.5]"})
    assert net.training                                   # the mode is restored
    assert result.exporter == "torch.onnx (dynamo)" and result.fallback_reason is None
    assert result.batch_sizes == (1, 3) and result.max_abs_diff <= result.tolerance
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]      # no temporary file left
    import onnx

    proto = onnx.load(str(tmp_path / "net.onnx"))
    assert {p.key: p.value for p in proto.metadata_props}["mean"] == "[0.5]"
    # the same file against a model whose weights moved: the check must see it
    moved = _gated_net()
    with torch.no_grad():
        moved[-1].weight.add_(0.05)
    worst, tolerance = compare_outputs(moved, onnx_runner(tmp_path / "net.onnx"), verification_inputs(EXAMPLE),
                                       1e-4, 1e-4)
    assert worst > tolerance


def test_torch_export_program_reloads_and_matches(net, tmp_path):
    result = attnlab.export(net, EXAMPLE, tmp_path / "net.pt2", "torch-export")
    assert result.exporter == "torch.export" and result.max_abs_diff <= result.tolerance
    reloaded = program_runner(tmp_path / "net.pt2")
    x = torch.randn(5, 3, 11, 13)
    torch.testing.assert_close(reloaded(x), net.eval()(x), rtol=1e-5, atol=1e-5)


def test_a_program_passed_in_is_still_checked_against_the_model(net, tmp_path):
    program = export_program(net.eval(), EXAMPLE)
    other = _gated_net()
    with torch.no_grad():
        other[-1].bias.add_(1.0)
    with pytest.raises(ExportError, match="differs from the eager model"):
        attnlab.export(other, EXAMPLE, tmp_path / "other.pt2", "torch-export", program=program)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="program must be a torch.export.ExportedProgram"):
        attnlab.export(net, EXAMPLE, tmp_path / "net.pt2", "torch-export", program=net)


class _DataDependent(nn.Module):
    """A branch on a tensor's value: torch.export cannot capture it."""

    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_a_failed_export_leaves_nothing_behind(tmp_path):
    target = tmp_path / "bad.pt2"
    with pytest.raises(ExportError, match="torch-export export of _DataDependent failed"):
        attnlab.export(_DataDependent(), EXAMPLE, target, "torch-export")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_refused_before_any_work(net, tmp_path):
    existing = tmp_path / "kept.onnx"
    existing.write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        attnlab.export(net, EXAMPLE, existing)
    assert existing.read_text() == "mine"
    with pytest.raises(ValueError, match="unknown format 'tflite'"):
        attnlab.export(net, EXAMPLE, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ValueError, match="does not exist"):
        attnlab.export(net, EXAMPLE, tmp_path / "no" / "m.onnx")
    with pytest.raises(ValueError, match="is a folder"):
        attnlab.export(net, EXAMPLE, tmp_path)
    with pytest.raises(TypeError, match="floating-point"):
        attnlab.export(net, EXAMPLE.long(), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="atol"):
        attnlab.export(net, EXAMPLE, tmp_path / "m.onnx", atol=-1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.onnx"]


# ---------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    code = main(["train", "--model", "resnet_cifar", "--model-kwargs", '{"depth": 8, "width": 4}', "--attention",
                 "eca", "--dataset", "digits", "--image-size", "12", "--epochs", "1", "--threads", "1", "--out",
                 str(out), "--no-progress"])
    assert code == 0
    return out


def _usage_error(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_cli_exports_a_run_and_refuses_to_overwrite(run_dir, tmp_path, capsys):
    # the .pt2 route (the quicker one; the ONNX route is the library's, tested above)
    target = tmp_path / "r8.pt2"
    target.write_bytes(b"an earlier file")
    capsys.readouterr()
    argv = ["export", "--checkpoint", str(run_dir), "--format", "torch-export", "--out", str(target), "--batch", "2"]
    _usage_error(capsys, argv, "--force")
    assert target.read_bytes() == b"an earlier file"
    assert main([*argv, "--force"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["path"] == str(target) and line["max_abs_diff"] <= line["tolerance"] and line["batch_sizes"] == [1, 3]
    program = torch.export.load(str(target), extra_files=dict.fromkeys(("input_size", "attnlab_model"), ""))
    assert program.module()(torch.randn(4, 1, 12, 12)).shape == (4, 10)


def test_cli_bad_inputs_get_one_line_and_exit_2(run_dir, tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    _usage_error(capsys, ["export", "--checkpoint", str(tmp_path / "nothing"), "--format", "onnx", "--out", out],
                 "nothing")
    _usage_error(capsys, ["export", "--checkpoint", str(run_dir), "--format", "tflite", "--out", out], "tflite")
    _usage_error(capsys, ["export", "--checkpoint", str(run_dir), "--format", "onnx", "--out",
                          str(tmp_path / "no" / "m.onnx")], "does not exist")
    _usage_error(capsys, ["export", "--checkpoint", str(run_dir), "--format", "onnx", "--out", out, "--batch", "0"],
                 "--batch")
    assert list(tmp_path.iterdir()) == []
