"""measure.reference: the timm / torchvision twins ship with the package, so `attnlab bench
--reference` works from any working directory; without timm or torchvision it is one clear line."""
from __future__ import annotations

import sys

import pytest
from torch import nn

from attnlab.cli import main
from attnlab.measure import bench, reference

TINY = dict(models=["resnet20"], attentions=[None, "se"], batch_sizes=(1, 2), image_size=8, repeats=1,
            memory_formats=("contiguous",), modes=("infer_bs1",), measure_memory=False, measure_flops=False,
            matmul_size=0, warmup=0, min_sample_s=0.0)


def test_reference_builders_load_from_another_working_directory(timm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # no benchmarks/ folder here
    twins = reference.reference_builders("resnet18", None, 10)
    assert set(twins) == {"torchvision:resnet18", "timm:resnet18"}
    assert all(isinstance(m, nn.Module) for m in twins.values())
    rows = bench.run_bench(**TINY, reference=True)
    labels = {r["label"] for r in rows}
    assert "timm-modules:resnet20+se" in labels and "attnlab:resnet20+se" in labels
    assert set(reference.versions()) == {"timm", "torchvision"}


@pytest.mark.parametrize("missing", ["timm", "torchvision"])
def test_without_the_packages_reference_is_one_clear_line(missing, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, missing, None)   # `import <missing>` now raises ImportError
    pins = f"timm=={reference.REQUIRED['timm']} and torchvision=={reference.REQUIRED['torchvision']}"
    with pytest.raises(ValueError, match=f"--reference needs {pins}") as err:
        reference.reference_builders("resnet20", "se", 10)
    assert "pip install" in str(err.value) and missing in str(err.value)
    with pytest.raises(bench.BenchArgumentError, match=f"--reference needs {pins}"):
        bench.run_bench(**TINY, reference=True)
    monkeypatch.chdir(tmp_path)
    code = main(["bench", "--models", "resnet20", "--repeats", "1", "--batch-sizes", "1", "2", "--image-size", "8",
                 "--reference"])
    out, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"bench: --reference needs {pins}" in err and "pip install" in err
    assert list(tmp_path.iterdir()) == []   # refused before anything was timed or written
