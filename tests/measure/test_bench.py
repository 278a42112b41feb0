"""run_bench at a tiny size: the table's columns, and ratios / overheads computed as defined.

Timings are replaced by a scripted clock (no timing assertion): the clock hands out known
per-repeat times in the documented interleaving order (round r starts at candidate r mod n),
and the table must show exactly the min / median / max of the ratios those times define.
"""
import csv
import statistics

import pytest
import torch
from torch import nn

import attnlab
from attnlab.measure import bench


class TinyNet(nn.Module):
    """Stand-in for an attnlab model: conv-bn-relu, optional gate, pooled linear head."""

    def __init__(self, gate=False, num_classes=3):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, 3, (3, 6, 6)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        self.gate = nn.Conv2d(4, 4, 1) if gate else nn.Identity()
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        x = self.body(x)
        x = x * torch.sigmoid(self.gate(x)) if isinstance(self.gate, nn.Conv2d) else x
        return self.fc(x.mean((2, 3)))


# per candidate (attnlab plain, attnlab + gate, reference), the seconds of each of 3 repeats
SCRIPTED = [[1.0, 2.0, 4.0], [1.1, 2.4, 4.0], [1.5, 2.0, 2.0]]
MATMUL_S = 0.01
MATMUL_SIZE = 16


@pytest.fixture
def tiny_bench(monkeypatch):
    monkeypatch.setattr(bench, "list_models", lambda pattern="*": ["tiny"])
    monkeypatch.setattr(bench, "create_model", lambda name, attention=None: TinyNet(gate=attention is not None))
    n_cands, repeats = len(SCRIPTED), len(SCRIPTED[0])
    calls = {"n": 0}

    def scripted_clock(fn, iters, device):
        fn()  # still run the step once: the closures must work
        i = calls["n"] % (n_cands * (1 + repeats))
        calls["n"] += 1
        if i < n_cands:  # calibration sample of each candidate
            return 1.0
        j = i - n_cands
        round_index = j // n_cands
        return SCRIPTED[(round_index + j) % n_cands][round_index]

    monkeypatch.setattr(bench, "_time_iters", scripted_clock)
    monkeypatch.setattr(bench, "matmul_sample", lambda size, device, iters=1: MATMUL_S)

    def refs(model_name, attention, num_classes):
        assert model_name == "tiny" and num_classes == 3
        return {"ref:tiny": TinyNet()} if attention is None else {}

    return dict(models=["tiny"], attentions=[None, "se"], batch_sizes=(1, 2), repeats=repeats,
                memory_formats=("channels_last",), reference=True, reference_builders=refs, warmup=1,
                min_sample_s=0.0, matmul_size=MATMUL_SIZE)


def test_rows_columns_and_ratios_as_defined(tiny_bench, tmp_path):
    rows = bench.run_bench(**tiny_bench, out_dir=str(tmp_path), command="bench-test")
    assert [r["label"] for r in rows] == ["attnlab:tiny", "attnlab:tiny+se", "ref:tiny"]
    assert all(tuple(r) == bench.COLUMNS for r in rows)
    plain, gated, ref = rows
    # attnlab / reference throughput = t_ref / t_attnlab per repeat
    ratios = [b / a for a, b in zip(SCRIPTED[0], SCRIPTED[2])]
    for mode in ("train", "infer_bs1", "infer_large"):
        assert ref[f"ratio_{mode}_min"] == pytest.approx(min(ratios))
        assert ref[f"ratio_{mode}_median"] == pytest.approx(statistics.median(ratios))
        assert ref[f"ratio_{mode}_max"] == pytest.approx(max(ratios))
        assert ref[f"ratio_{mode}_best"] == pytest.approx(min(SCRIPTED[2]) / min(SCRIPTED[0]))
        assert plain[f"ratio_{mode}_median"] is None  # attnlab rows are not compared with themselves
    # overhead of the gated model over the plain one: t_gate / t_plain - 1
    over = [g / p - 1 for p, g in zip(SCRIPTED[0], SCRIPTED[1])]
    assert gated["overhead_train_median"] == pytest.approx(statistics.median(over))
    assert gated["overhead_train_min"] == pytest.approx(min(over))
    assert gated["overhead_train_best"] == pytest.approx(min(SCRIPTED[1]) / min(SCRIPTED[0]) - 1)
    assert gated["overhead_infer_large_max"] == pytest.approx(max(over))
    assert gated["overhead_baseline"] == "attnlab:tiny"
    assert plain["overhead_train_median"] is None
    # throughput = batch / median time; matmul and the fraction of it
    assert plain["train_img_s"] == pytest.approx(2 / statistics.median(SCRIPTED[0]))
    assert plain["infer_bs1_img_s"] == pytest.approx(1 / statistics.median(SCRIPTED[0]))
    mm = 2 * MATMUL_SIZE ** 3 / MATMUL_S
    assert plain["matmul_gflop_s"] == pytest.approx(mm / 1e9)
    # forward FLOPs: 3x3 conv 3->4 on 6x6 plus the 4->3 linear, 2 FLOPs per multiply-add
    assert plain["gflops_fwd_per_image"] * 1e9 == pytest.approx(2 * (36 * 4 * 27 + 4 * 3))
    step_flops = bench_train_flops = ref["train_gflop_s"] * statistics.median(SCRIPTED[2]) * 1e9
    fracs = [step_flops / t / mm for t in SCRIPTED[2]]
    assert ref["train_frac_matmul"] == pytest.approx(statistics.median(fracs))
    # training = 3 x forward FLOPs (the counter's own backward count is wrong for grouped convs)
    assert bench_train_flops == pytest.approx(3 * 2 * plain["gflops_fwd_per_image"] * 1e9)
    assert plain["params"] == sum(p.numel() for p in TinyNet().parameters())
    assert plain["train_peak_mb"] > 0 and plain["infer_large_peak_mb"] > 0
    # the files: CSV with every column, Markdown with the command and the machine
    with open(tmp_path / "results.csv") as fh:
        lines = [ln for ln in fh if not ln.startswith("#")]
    table = list(csv.DictReader(lines))
    assert list(table[0]) == list(bench.COLUMNS) and len(table) == 3
    md = (tmp_path / "results.md").read_text()
    assert "bench-test" in md and "torch" in md and "| ref:tiny |" in md


def test_memory_formats_interleaved_in_one_loop(tiny_bench, monkeypatch):
    """Both formats in one loop: the clock sees 6 candidates per round, formats compared per repeat."""
    times = {"channels_last": [1.0, 2.0, 4.0], "contiguous": [2.0, 2.0, 2.0]}
    order = ["channels_last"] * 3 + ["contiguous"] * 3
    calls = {"n": 0}

    def scripted_clock(fn, iters, device):
        i = calls["n"] % (6 * 4)
        calls["n"] += 1
        if i < 6:
            return 1.0
        j = i - 6
        round_index = j // 6
        return times[order[(round_index + j) % 6]][round_index]

    monkeypatch.setattr(bench, "_time_iters", scripted_clock)
    rows = bench.run_bench(**dict(tiny_bench, memory_formats=("channels_last", "contiguous"),
                                  measure_memory=False, measure_flops=False))
    assert [r["memory_format"] for r in rows] == order
    cl = rows[0]
    assert cl["speedup_vs_contiguous_train"] == pytest.approx(statistics.median([2.0, 1.0, 0.5]))
    assert rows[3]["speedup_vs_contiguous_train"] is None
    # the two copies hold separate weights in their own layout
    assert rows[0]["params"] == rows[3]["params"]


def test_ratio_and_overhead_definitions():
    assert bench.throughput_ratio([1.0, 2.0, 4.0], [2.0, 2.0, 2.0]) == pytest.approx((0.5, 1.0, 2.0))
    assert bench.overhead([1.1, 2.2], [1.0, 2.0]) == pytest.approx((0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="equally long"):
        bench.throughput_ratio([1.0], [1.0, 2.0])


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError, match="fp8"):
        bench.run_bench(models=["resnet20"], precisions=("fp8",), reference=False)
    with pytest.raises(ValueError, match="batch_sizes"):
        bench.run_bench(models=["x"], batch_sizes=(0,), reference=False)
    with pytest.raises(ValueError, match="repeats"):
        bench.run_bench(models=["x"], repeats=0, reference=False)
    with pytest.raises(ValueError, match="unknown model"):
        bench.run_bench(models=["no_such_model_xyz"], reference=False)
    with pytest.raises(TypeError, match="models"):
        bench.run_bench(models="resnet20", reference=False)


@pytest.mark.skipif("resnet20" not in attnlab.list_models()
                    or attnlab.attention.SqueezeExcite.forward is nn.Module.forward,
                    reason="resnet20 or SqueezeExcite not written yet")
def test_real_resnet20_end_to_end_tiny():
    rows = bench.run_bench(models=["resnet20"], attentions=[None, "se"], batch_sizes=(1, 2), image_size=8,
                           repeats=1, reference=False, memory_formats=("contiguous",), warmup=0,
                           min_sample_s=0.0, matmul_size=16, measure_memory=False)
    assert [r["attention"] for r in rows] == ["none", "se"]
    assert rows[1]["params"] > rows[0]["params"] and rows[0]["image_size"] == "8x8"
    assert rows[1]["overhead_train_median"] is not None


def _table(md: str) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, rows of cells, the lines after the table) of format_markdown's text."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    end = next(i for i in range(start, len(lines) + 1) if i == len(lines) or not lines[i].startswith("|"))
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines[start:end]]
    return split[0], split[2:], lines[end:]


def test_table_shows_no_empty_column_and_explains_every_header(tiny_bench):
    rows = bench.run_bench(**tiny_bench, command="bench-test")
    with_reference = bench.format_markdown(rows)
    headers, cells, after = _table(with_reference)
    assert any(h.startswith("speed vs reference") for h in headers)
    for j, header in enumerate(headers):                     # every column shown holds a value somewhere
        assert any(row[j] for row in cells), header
    for unit in ("params (M)", "(img/s)", "(MB)", "GFLOP / image"):
        assert any(unit in h for h in headers), unit
    assert "training, batch 2 (img/s)" in headers and "inference, batch 1 (img/s)" in headers
    assert "(best)" not in headers and "train / matmul" not in headers           # the old cryptic headers
    legend = " ".join(line for line in after if line.strip())
    for term in ("**img/s**", "**speed vs reference**", "**attention overhead**", "**peak memory**",
                 "**% of fp32 matmul**", "**GFLOP**"):
        assert term in legend, term
    # the same rows without the reference twin: its ratio columns are empty, so they go, legend too
    headers, cells, after = _table(bench.format_markdown(rows[:2]))
    assert not any(h.startswith("speed vs reference") for h in headers)
    assert "speed vs reference" not in " ".join(after)
    # a describing column with one value in every row is said once above the table
    assert "precision" not in headers and "Every row: " in with_reference and "precision fp32" in with_reference


def test_progress_gets_a_line_per_model(tiny_bench):
    lines = []
    bench.run_bench(**tiny_bench, progress=lines.append)
    assert len(lines) == 2 and lines[0].startswith("bench: 1 model(s) on cpu")
    assert lines[1].startswith("bench [1/1] tiny: 3 candidate(s) timed in ") and lines[1].endswith("done)")
    with pytest.raises(TypeError, match="progress"):
        bench.run_bench(**tiny_bench, progress="yes")
