"""build_report on a small fake run folder made here: arithmetic, the presentation rules, files."""
import base64
import csv
import html.parser
import io
import json
import math
import re

import pytest
from PIL import Image
from scipy import stats as scipy_stats

from attnlab.measure.stats import accuracy_interval, holm, minimum_detectable_effect
from attnlab.report import build_report
from attnlab.report.plots import pareto_front

TEST_SIZE = 200
ACCS = {  # variant -> seed -> test accuracy (multiples of 1/200: a whole number of right test examples)
    "none": {0: 0.90, 1: 0.92, 2: 0.94},
    "se": {0: 0.91, 1: 0.93, 2: 0.96},
    "cbam": {0: 0.95, 1: 0.965, 2: 0.985},
    "none-wide": {0: 0.92, 1: 0.93, 2: 0.95},
}


def _cost(params, flops, latency):
    return {"params": params, "flops": flops, "macs": flops // 2, "pooling_ops": 100, "elementwise_ops": 1000,
            "latency_b1_s": latency, "latency_large_s": 10 * latency, "large_batch": 64, "train_step_s": 5 * latency,
            "train_batch": 32, "peak_train_bytes": 4_000_000, "peak_infer_bytes": 2_000_000}


def _right(name: str, seed: int) -> list[bool]:
    """Which test examples the run gets right: the first k, except se, whose k right ones are the last."""
    k = round(ACCS[name][seed] * TEST_SIZE)
    right = [i < k for i in range(TEST_SIZE)]
    return right[::-1] if name == "se" else right


def _png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def make_run_folder(root, accs, costs, variants, predictions=True, explain=True, plan_extra=None):
    """A study folder with the test accuracies `accs` ({variant: {seed: acc}}), its report built;
    `plan_extra`: more compare.json fields (description, notes)."""
    (root / "compare.json").write_text(json.dumps({
        "preset": "fake", "baseline": "none", "variants": variants, "seeds": [0, 1, 2], "dataset": "digits",
        "input_shape": [1, 8, 8], "train": {"epochs": 2, "batch_size": 32, "lr": 0.1}, **(plan_extra or {})}))
    for name, per_seed in accs.items():
        for seed, acc in per_seed.items():
            d = root / "runs" / name / f"seed{seed}"
            d.mkdir(parents=True)
            (d / "final.json").write_text(json.dumps({"test_acc": acc, "test_loss": 1 - acc, "params": 10, "epochs": 2,
                                                      "seconds": 1.5, "image_size": [8, 8], "num_classes": 10,
                                                      "precision": "fp32", "compile": False}))
            (d / "config.yaml").write_text("model: m\noptimizer: sgd\nmomentum: 0.9\nnesterov: true\nlr: 0.1\n"
                                           "weight_decay: 0.0005\nschedule: cosine\nwarmup_epochs: 0\nepochs: 2\n"
                                           "batch_size: 32\nlabel_smoothing: 0.0\naugment: {}\ncompile: false\n")
            (d / "metrics.jsonl").write_text("\n".join(json.dumps({"epoch": e, "train_loss": 2.0 / e, "test_acc": acc * e / 2,
                                                                   "seconds": 2.0, "images_per_s": 800.0})
                                                       for e in (1, 2)) + "\n")
            if predictions:
                labels = [i % 10 for i in range(TEST_SIZE)]
                preds = [lab if ok else (lab + 1) % 10 for lab, ok in zip(labels, _right(name, seed))]
                (d / "test_predictions.json").write_text(json.dumps({"labels": labels, "predictions": preds}))
    (root / "costs.json").write_text(json.dumps(costs))
    if explain:
        (root / "explain" / "se").mkdir(parents=True)
        _png(root / "explain" / "se" / "excitation.png")
        (root / "explain" / "se" / "summary.json").write_text(json.dumps({
            "class_specificity": [{"module": "stages.2.0.attn", "signal": "gate", "specificity": 0.42}],
            "reliance": {"accuracy": 0.91, "stages": [{"stage": "2", "removed": 0.5, "mean": 0.88}]}}))
        (root / "explain" / "se" / "explorer.html").write_text("<!DOCTYPE html><title>explorer</title>\n")
    build_report(root, explain=False, measure=False)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    variants = [{"name": "none", "model": "m", "attention": None, "role": "baseline"},
                {"name": "se", "model": "m", "attention": "se", "role": "attention", "attention_kwargs": {"reduction": 4}},
                {"name": "cbam", "model": "m", "attention": "cbam", "role": "attention"},
                {"name": "none-wide", "model": "m", "attention": None, "role": "capacity", "matches": "se"}]
    costs = {"none": _cost(1000, 20000, 0.001), "se": _cost(1100, 20100, 0.0015),
             "cbam": _cost(1150, 20200, 0.002), "none-wide": _cost(1105, 24000, 0.0012)}
    # repeats: se slower without overlap, cbam's batch-1 range overlaps the baseline's, cbam's large
    # batch timed faster than the baseline (noise), none-wide measured without repeats
    costs["none"].update(latency_b1_runs=[0.0009, 0.001, 0.0011], latency_large_runs=[0.0095, 0.01, 0.0105])
    costs["se"].update(latency_b1_runs=[0.0014, 0.0015, 0.0016], latency_large_runs=[0.0149, 0.015, 0.0151])
    costs["cbam"].update(latency_b1_runs=[0.00105, 0.002, 0.0021], latency_large_s=0.008,
                         latency_large_runs=[0.0075, 0.008, 0.0085])
    costs["cbam"]["matched_width"] = 1.07
    costs["cbam"]["matched_width_params"] = 1149
    return make_run_folder(tmp_path_factory.mktemp("run"), ACCS, costs, variants)


def _rows(run_dir):
    return {r["variant"]: r for r in json.loads((run_dir / "results.json").read_text())["variants"]}


def test_accuracy_intervals_stay_inside_100_percent(run_dir):
    rows = _rows(run_dir)
    for name, per_seed in ACCS.items():
        r = rows[name]
        expected = accuracy_interval(list(per_seed.values()), count=TEST_SIZE)
        assert r["acc_ci_method"] == "logit t"
        assert (r["acc_ci_low"], r["acc_ci_high"]) == pytest.approx((expected["ci_low"], expected["ci_high"]))
        assert 0 < r["acc_ci_low"] < r["acc_mean"] < r["acc_ci_high"] < 1
    # cbam's plain t interval would run past 100%: 0.9667 + 4.303 * 0.0175 / sqrt(3) = 1.010
    assert rows["cbam"]["acc_ci_high"] < 1 and rows["cbam"]["acc_mean"] == pytest.approx(2.9 / 3)


def test_paired_statistics_by_hand_and_by_scipy(run_dir):
    rows = _rows(run_dir)
    assert rows["none"]["diff_mean"] is None and rows["none"]["diff_note"] == "the baseline itself"
    for name in ("se", "cbam", "none-wide"):
        a, b = list(ACCS[name].values()), list(ACCS["none"].values())
        d = [x - y for x, y in zip(a, b)]
        r = rows[name]
        assert r["diff_mean"] == pytest.approx(sum(d) / 3)
        assert r["p_value"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
        # with 3 seeds the percentile bootstrap interval is [min, max] of the differences
        assert (r["diff_ci_low"], r["diff_ci_high"]) == pytest.approx((min(d), max(d)))
    # Holm over the three comparisons, written out: sorted p's times 3, 2, 1, kept monotone
    raw = [rows[n]["p_value"] for n in ("se", "cbam", "none-wide")]
    assert [rows[n]["p_holm"] for n in ("se", "cbam", "none-wide")] == pytest.approx(holm(raw))
    order = sorted(raw)
    assert rows["cbam"]["p_holm"] == pytest.approx(3 * order[0])
    # se: differences 0.01, 0.01, 0.02: t = 4 with 2 degrees of freedom, p = 1 - 4 / sqrt(18)
    assert rows["se"]["p_value"] == pytest.approx(1 - 4 / math.sqrt(18), rel=1e-6)
    # P(A > B): se won every seed: 1 with the exact interval [0.025^(1/3), 1]
    assert rows["se"]["p_better"] == 1.0 and rows["se"]["p_better_low"] == pytest.approx(0.025 ** (1 / 3))
    sd = math.sqrt(((0.01 - 0.04 / 3) ** 2 * 2 + (0.02 - 0.04 / 3) ** 2) / 2)
    assert rows["se"]["mde"] == pytest.approx(minimum_detectable_effect(sd, 3))


def test_only_supported_differences_are_claimed(run_dir):
    rows = _rows(run_dir)
    # se: the bootstrap interval [+1, +2] excludes 0, but the paired test does not reject
    assert rows["se"]["diff_ci_low"] > 0 and rows["se"]["p_holm"] > 0.05 and not rows["se"]["claimed"]
    assert rows["se"]["sentence"].startswith("se: no detectable difference from its baseline 'none'")
    # cbam: differences 0.05, 0.045, 0.045, Holm-adjusted p < 0.05: claimed
    assert rows["cbam"]["claimed"] and rows["cbam"]["p_holm"] < 0.05
    assert rows["cbam"]["sentence"].startswith("cbam: +4.7 points, 95% CI [+4.5, +5.0], p=0.001, adjusted p=0.004")


def test_per_example_test_is_mcnemar_pooled_over_seeds(run_dir):
    rows = _rows(run_dir)
    for name in ("se", "cbam"):
        only_variant = only_base = 0
        for seed in (0, 1, 2):
            for a, b in zip(_right(name, seed), _right("none", seed)):
                only_variant += a and not b
                only_base += b and not a
        r = rows[name]
        assert (r["mcnemar_examples"], r["mcnemar_treatment_only"], r["mcnemar_baseline_only"]) == \
            (3 * TEST_SIZE, only_variant, only_base)
        assert r["mcnemar_p"] == pytest.approx(scipy_stats.binomtest(only_variant, only_variant + only_base).pvalue)
    # cbam is right on a superset of the baseline's examples: 10 + 9 + 9 = 28 discordant, all one way
    assert rows["cbam"]["mcnemar_treatment_only"] == 28 and rows["cbam"]["mcnemar_p"] == pytest.approx(2 * 0.5 ** 28)
    raw = [rows[n]["mcnemar_p"] for n in ("se", "cbam", "none-wide")]
    assert [rows[n]["mcnemar_holm"] for n in ("se", "cbam", "none-wide")] == pytest.approx(holm(raw))


def test_cost_ratios_and_timing_noise(run_dir):
    rows = _rows(run_dir)
    cbam, se = rows["cbam"], rows["se"]
    assert cbam["params_ratio"] == pytest.approx(1.15) and se["flops_ratio"] == pytest.approx(1.005)
    assert se["latency_b1_ratio"] == pytest.approx(1.5) and se["latency_b1_verdict"] is None
    assert (se["latency_b1_min"], se["latency_b1_max"]) == (0.0014, 0.0016)
    assert cbam["latency_b1_verdict"] == "no measurable difference"
    assert cbam["latency_large_verdict"] == "faster than its baseline: measurement noise, not a gain"
    assert rows["none-wide"]["latency_b1_min"] is None and rows["none-wide"]["latency_b1_verdict"] is None
    md = (run_dir / "report.md").read_text()
    assert "| se | 1.50 [1.40-1.60] (1.50x) |" in md
    assert "2.00 [1.05-2.10] (2.00x, no measurable difference)" in md
    assert "8.0 [7.5-8.5] (0.80x, flagged: noise)" in md
    assert "- cbam: large-batch latency (0.80x) timed faster than its baseline: measurement noise, not a gain" in md


def test_results_csv_has_one_row_per_variant(run_dir):
    with open(run_dir / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == ["none", "se", "cbam", "none-wide"]
    assert float(rows[2]["acc_mean"]) == pytest.approx(2.9 / 3)
    assert rows[0]["seeds"] == "0 1 2"
    for key in ("acc_std", "acc_ci_low", "diff_ci_high", "p_value", "p_holm", "mcnemar_p", "params", "latency_b1_s"):
        assert key in rows[0]


def test_results_json_is_strict_json(run_dir):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    data = json.loads((run_dir / "results.json").read_text(), parse_constant=refuse)
    assert len(data["variants"]) == 4


def test_headline_and_setup_come_first(run_dir):
    md = (run_dir / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings[:3] == ["Headline", "Setup", "1. Effect of attention on test accuracy"]
    top = md.split("## 1. Effect")[0]
    assert "The best attention variant, **cbam**, changes test accuracy by **+4.67 points** (92.00% to 96.67%;" in top
    assert "Partial study" not in md          # every planned run finished
    assert "a difference these 3 seeds resolve" in top
    assert "it got 28 predictions right that the baseline got wrong and 0 the other way round" in top
    assert "The baseline reaches 92.00%" in top and "ceiling" not in top
    # setup, read from the run folder
    assert "- **Backbone**: m (defaults), 1k parameters without attention." in top
    assert ("optimizer SGD (momentum 0.9, Nesterov); learning rate 0.1; weight decay 0.0005; schedule cosine; "
            "epochs 2; batch 32") in top
    assert "precision fp32; torch.compile off" in top
    assert "digits at 8x8 pixels, 10 classes; 1,600 training images seen per epoch" in top and "200 test images" in top
    assert "12 training runs, 18 s of training in all" in top
    assert "this report was built on" in top and "torch 2." in top
    assert "| se | attention | se | reduction=4 | all | default | 1.1k |" in top


def test_capacity_control_is_stated(run_dir):
    md = (run_dir / "report.md").read_text()
    section = md.split("## 3. Capacity control")[1].split("## 4.")[0]
    assert "- none-wide (1.1k parameters) is matched to se (1.1k parameters) by parameter count." in section
    # se vs its parameter-matched wider baseline: differences -0.01, 0, +0.01 -> mean 0
    assert "- se vs none-wide: no detectable difference from the baseline of its size (+0.0 points" in section
    assert ("- cbam (1.15k parameters) has no trained matched baseline (the study trains one for se only); a "
            "baseline of width multiplier 1.070 (1.15k parameters) would match it.") in section


def test_explanations_are_listed(run_dir):
    md = (run_dir / "report.md").read_text()
    assert "0.420" in md and "| se | 2 | 91.00 | 50.00 | 88.00 |" in md
    assert "[Interactive explorer of se](explain/se/explorer.html)" in md


class _Nesting(html.parser.HTMLParser):
    """Fails on a closing tag that does not close the element last opened."""
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):  # <img ... />: opens and closes itself
        pass

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:] or 'nothing'}"
        self.stack.pop()


def test_html_is_rendered_from_the_markdown_and_self_contained(run_dir):
    page = (run_dir / "report.html").read_text()
    parser = _Nesting()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert "`" not in page                       # inline code became <code>, no raw backticks
    assert "<code>attnlab report RUN_DIR</code>" in page
    separators = [ln for ln in (run_dir / "report.md").read_text().splitlines() if ln.startswith("|---|")]
    assert page.count("<table>") == len(separators) > 5
    uris = re.findall(r'src="([^"]*)"', page)
    assert len(uris) == 4  # accuracy, gain vs cost, training curves, one explanation figure
    assert all(u.startswith("data:image/png;base64,") for u in uris)
    for uri in uris:
        img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        img.load()
        assert img.size[0] > 10 and img.size[1] > 10
    outside = re.sub(r'src="data:[^"]*"', "", page)
    assert re.findall(r'href="([^"]*)"', outside) == ["explain/se/explorer.html"]   # the one page beside it
    outside = outside.replace('href="explain/se/explorer.html"', "")
    assert not re.search(r"(src|href)\s*=", outside) and "url(" not in outside
    assert "@import" not in outside and "<script" not in outside and "<link" not in outside
    for name in ("accuracy.png", "gain_vs_cost.png", "training_curves.png"):
        assert (run_dir / "figures" / name).stat().st_size > 1000


def test_every_accuracy_table_is_in_percent(run_dir):
    md = (run_dir / "report.md").read_text()
    for line in md.splitlines():
        if line.startswith("| variant") and "acc" in line:
            assert "%" in line, line
    assert "| cbam | attention | 3 | 96.67 ± 1.76 |" in md


def test_regenerating_gives_the_same_tables(run_dir):
    before = (run_dir / "results.csv").read_text()
    build_report(run_dir, explain=False, measure=False)
    assert (run_dir / "results.csv").read_text() == before


def test_a_baseline_at_its_ceiling_and_the_power_are_said(tmp_path):
    accs = {"none": {0: 0.995, 1: 0.99, 2: 1.0}, "se": {0: 0.99, 1: 0.995, 2: 0.99}}
    variants = [{"name": "none", "model": "m", "role": "baseline"},
                {"name": "se", "model": "m", "attention": "se", "role": "attention"}]
    costs = {"none": _cost(1000, 20000, 0.001), "se": _cost(1100, 20100, 0.0015)}
    root = make_run_folder(tmp_path, accs, costs, variants, predictions=False, explain=False)
    md = (root / "report.md").read_text()
    top = md.split("## Setup")[0]
    assert "The best attention variant, **se**, is -0.33 points from the baseline" in top
    assert "**no detectable difference** over 3 seeds" in top
    assert "The baseline already reaches 99.50%" in top and "the data set is at its ceiling" in top
    d = [-0.005, 0.005, -0.01]
    sd = math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    assert f"detects an effect of {100 * minimum_detectable_effect(sd, 3):.2f} points with 80% power" in top
    assert "Resolving the observed -0.33 points would take about" in top
    assert "holds, against FLOPs only baselines (none)" in top
    assert "No per-example test: test_predictions.json not recorded" in top
    # a seed at 100% without the test-set size: the interval falls back to the bootstrap, inside [0, 1]
    row = _rows(root)["none"]
    assert row["acc_ci_method"] == "bootstrap" and row["acc_ci_high"] <= 1.0


def test_pareto_front():
    # (cost, gain): the second is dominated by the first (costlier, smaller gain)
    assert pareto_front([(1.0, 0.0), (1.5, -0.2), (2.0, 1.0), (1.2, 0.5)]) == [0, 3, 2]


def test_bad_run_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_report(tmp_path / "nope")
    with pytest.raises(ValueError, match="not a compare run folder"):
        build_report(tmp_path)


def test_bad_predictions_file_is_named(tmp_path):
    variants = [{"name": "none", "model": "m", "role": "baseline"}]
    root = make_run_folder(tmp_path, {"none": {0: 0.5, 1: 0.6, 2: 0.7}}, {"none": _cost(1, 2, 0.1)}, variants,
                           predictions=False, explain=False)
    (root / "runs" / "none" / "seed0" / "test_predictions.json").write_text('{"labels": [1, 2], "predictions": [1]}')
    with pytest.raises(ValueError, match="test_predictions.json: 2 labels but 1 predictions"):
        build_report(root, explain=False, measure=False)


def test_a_recipe_that_differs_between_runs_is_named(tmp_path):
    from attnlab.io.study_files import StudyFolder
    from attnlab.report.setup import recipe_differences

    folder = StudyFolder(tmp_path)
    for name, lr in (("none", 0.1), ("se", 0.1), ("cbam", 0.2)):
        run = folder.seed_dir(name, 0)
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(f"model: m\nlr: {lr}\nepochs: 2\nseed: 0\n")
    finals = {name: {0: {}} for name in ("none", "se", "cbam")}
    assert recipe_differences(folder, finals) == ["lr: 0.1 (none/seed0, se/seed0), 0.2 (cbam/seed0)"]
    assert recipe_differences(folder, {"none": {0: {}}, "se": {0: {}}}) == []


def test_runs_resumed_on_another_device_type_are_named_with_the_machines():
    from attnlab.report.setup import _machines

    change = {"from": "cuda", "to": "cpu", "at_step": 5251}
    finals = {"none": {0: {"machine": "host A"}}, "cbam": {3: {"machine": "host B", "device_changes": [change]},
                                                         4: {"machine": "host A"}}}
    line = _machines(finals)
    assert line.startswith("the runs trained on host A; and on host B")
    assert "; 1 resume(s) on another device type (cbam/seed3: cuda -> cpu at step 5251)" in line
    assert "not bit-identical" in line
    del finals["cbam"][3]["device_changes"]
    assert "another device type" not in _machines(finals)
