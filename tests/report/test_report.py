"""build_report on a small fake run folder made here: arithmetic, files, a self-contained HTML."""
import base64
import csv
import io
import json
import math
import re

import pytest
from PIL import Image

from attnlab.report import build_report
from attnlab.report.plots import pareto_front

ACCS = {  # variant -> seed -> test accuracy
    "none": {0: 0.90, 1: 0.92, 2: 0.94},
    "se": {0: 0.91, 1: 0.93, 2: 0.96},
    "cbam": {0: 0.95, 1: 0.96, 2: 0.97},
    "none-wide": {0: 0.92, 1: 0.93, 2: 0.95},
}
T_975_DF2 = 4.302653


def _cost(params, flops, latency):
    return {"params": params, "flops": flops, "macs": flops // 2, "pooling_ops": 100, "elementwise_ops": 1000,
            "latency_b1_s": latency, "latency_large_s": 10 * latency, "large_batch": 64, "train_step_s": 5 * latency,
            "train_batch": 32, "peak_train_bytes": 4_000_000, "peak_infer_bytes": 2_000_000}


def _png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    variants = [{"name": "none", "model": "m", "attention": None, "role": "baseline"},
                {"name": "se", "model": "m", "attention": "se", "role": "attention"},
                {"name": "cbam", "model": "m", "attention": "cbam", "role": "attention"},
                {"name": "none-wide", "model": "m", "attention": None, "role": "capacity", "matches": "se"}]
    (root / "compare.json").write_text(json.dumps({"preset": "fake", "baseline": "none", "variants": variants,
                                                   "seeds": [0, 1, 2], "dataset": "digits", "input_shape": [1, 8, 8]}))
    for name, per_seed in ACCS.items():
        for seed, acc in per_seed.items():
            d = root / "runs" / name / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "final.json").write_text(json.dumps({"test_acc": acc, "test_loss": 1 - acc, "params": 10,
                                                      "epochs": 2, "seconds": 1.5}))
            (d / "metrics.jsonl").write_text("\n".join(json.dumps({"epoch": e, "train_loss": 2.0 / e, "test_acc": acc * e / 2})
                                                       for e in (1, 2)) + "\n")
    costs = {"none": _cost(1000, 20000, 0.001), "se": _cost(1100, 20100, 0.0015),
             "cbam": _cost(1150, 20200, 0.002), "none-wide": _cost(1105, 24000, 0.0012)}
    costs["cbam"]["matched_width"] = 1.07
    (root / "costs.json").write_text(json.dumps(costs))
    (root / "explain" / "se").mkdir(parents=True)
    _png(root / "explain" / "se" / "excitation.png")
    (root / "explain" / "se" / "summary.json").write_text(json.dumps({
        "class_specificity": [{"module": "stages.2.0.attn", "signal": "gate", "specificity": 0.42}],
        "reliance": {"accuracy": 0.91, "stages": [{"stage": "2", "removed": 0.5, "mean": 0.88}]}}))
    build_report(root, explain=False, measure=False)
    return root


def test_results_json_arithmetic(run_dir):
    rows = {r["variant"]: r for r in json.loads((run_dir / "results.json").read_text())["variants"]}
    assert list(rows) == ["none", "se", "cbam", "none-wide"]
    base = rows["none"]
    # baseline: mean 0.92, std 0.02, CI 0.92 +- 4.302653 * 0.02 / sqrt(3)
    assert base["acc_mean"] == pytest.approx(0.92) and base["acc_std"] == pytest.approx(0.02)
    assert base["acc_ci_low"] == pytest.approx(0.92 - T_975_DF2 * 0.02 / math.sqrt(3), abs=1e-6)
    assert base["diff_mean"] is None  # the baseline has no difference to itself
    se = rows["se"]
    # paired differences 0.01, 0.01, 0.02: mean 0.013333, s_d = 0.0057735, t = 4, p = 1 - 4 / sqrt(18)
    assert se["diff_mean"] == pytest.approx(0.04 / 3)
    assert se["p_value"] == pytest.approx(1 - 4 / math.sqrt(18), rel=1e-6)
    assert se["diff_ci_low"] == pytest.approx(0.04 / 3 - T_975_DF2 * 0.0057735 / math.sqrt(3), abs=1e-5)
    assert se["sentence"].startswith("se: no detectable difference")
    cbam = rows["cbam"]
    # differences 0.05, 0.04, 0.03: mean 0.04, s_d 0.01, CI 0.04 +- 4.302653 * 0.01 / sqrt(3) = [0.0152, 0.0648]
    assert cbam["diff_ci_low"] == pytest.approx(0.04 - T_975_DF2 * 0.01 / math.sqrt(3), abs=1e-6)
    assert cbam["sentence"] == "cbam: +4.0 points, 95% CI [+1.5, +6.5], p=0.02 over 3 seeds"
    # cost ratios to the baseline
    assert cbam["params_ratio"] == pytest.approx(1.15) and cbam["latency_b1_ratio"] == pytest.approx(2.0)
    assert se["flops_ratio"] == pytest.approx(1.005)


def test_results_csv_has_one_row_per_variant(run_dir):
    with open(run_dir / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == ["none", "se", "cbam", "none-wide"]
    assert float(rows[2]["acc_mean"]) == pytest.approx(0.96)
    assert rows[0]["seeds"] == "0 1 2"
    for key in ("acc_std", "acc_ci_low", "diff_ci_high", "p_value", "params", "flops", "latency_b1_s"):
        assert key in rows[0]


def test_markdown_sections_and_capacity_control(run_dir):
    md = (run_dir / "report.md").read_text()
    for heading in ("## 1. Effect", "## 2. Cost", "## 3. Capacity control", "## 4. Figures", "## 5. Explanations"):
        assert heading in md
    # se vs its parameter-matched wider baseline: differences -0.01, 0, +0.01 -> mean 0, no difference
    assert "se vs none-wide: no detectable difference" in md
    assert "cbam (1.070)" in md  # the width the unmatched variant would need
    assert "0.420" in md and "| se | 2 | 91.00 | 50.00 | 88.00 |" in md


def test_html_is_self_contained_and_images_decode(run_dir):
    page = (run_dir / "report.html").read_text()
    uris = re.findall(r'src="([^"]*)"', page)
    assert len(uris) == 4  # accuracy, gain vs cost, training curves, one explanation figure
    assert all(u.startswith("data:image/png;base64,") for u in uris)
    for uri in uris:
        img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        img.load()
        assert img.size[0] > 10 and img.size[1] > 10
    outside = re.sub(r'src="data:[^"]*"', "", page)
    assert "http" not in outside.lower() and "href=" not in outside and "url(" not in outside
    assert "@import" not in outside and "<script" not in outside
    for name in ("accuracy.png", "gain_vs_cost.png", "training_curves.png"):
        assert (run_dir / "figures" / name).stat().st_size > 1000


def test_regenerating_gives_the_same_tables(run_dir):
    before = (run_dir / "results.csv").read_text()
    build_report(run_dir, explain=False, measure=False)
    assert (run_dir / "results.csv").read_text() == before


def test_pareto_front():
    # (cost, gain): the second is dominated by the first (costlier, smaller gain)
    assert pareto_front([(1.0, 0.0), (1.5, -0.2), (2.0, 1.0), (1.2, 0.5)]) == [0, 3, 2]


def test_bad_run_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(ValueError, match="not a compare run folder"):
        build_report(tmp_path)
