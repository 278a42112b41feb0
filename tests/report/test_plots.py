"""The report's figures, rendered and measured: no text overprints another (the boxes of every
drawn text are compared), legends lie outside the axes, accuracies are in % and their axis ends
at 100."""
import pytest

from attnlab.explain.plotting import drawn_texts, overlapping_texts
from attnlab.report import plots


@pytest.fixture
def rendered(monkeypatch):
    """The figures the plot functions save, kept open for measuring."""
    figures = []
    save = plots.save_figure

    def keep(fig, path, **kw):
        figures.append(fig)
        return save(fig, path, **kw)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def _legends_clear_of_the_axes(fig):
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            if ax.get_visible():
                assert not box.overlaps(ax.get_window_extent(renderer)), "a legend lies over the data"


def _row(variant, role, diff=0.0, flops=1.0, latency=1.0, accs=(0.99, 0.995, 1.0)):
    mean = sum(accs) / len(accs)
    return {"variant": variant, "role": role, "seed_accs": dict(enumerate(accs)), "acc_mean": mean,
            "acc_ci_low": min(accs), "acc_ci_high": 1.0, "diff_mean": diff, "diff_ci_low": diff - 0.01,
            "diff_ci_high": diff + 0.01, "flops_ratio": flops, "latency_b1_ratio": latency}


def test_names_of_nearly_coincident_points_do_not_overprint(rendered, tmp_path):
    # five points within a marker's width of each other on both panels (the "ngcne" of a study
    # where gc, none and eca cost the same FLOPs), and two apart
    rows = [_row("none", "baseline"),
            _row("gc", "attention", 0.0004, 1.0004, 1.01),
            _row("eca", "attention", -0.0003, 1.0001, 1.005),
            _row("se", "attention", 0.0001, 1.0002, 0.995),
            _row("none-width19", "capacity", -0.0001, 1.0003, 1.0),
            _row("non_local", "attention", 0.001, 1.09, 2.5),
            _row("stn", "attention", 0.002, 1.26, 1.9)]
    path = plots.gain_cost_figure(rows, tmp_path / "gain.png")
    assert path.is_file()
    fig = rendered[-1]
    names = [t.get_text() for t in drawn_texts(fig)]
    for row in rows:                             # every variant named on both panels
        assert names.count(row["variant"]) == 2
    assert overlapping_texts(fig) == []
    _legends_clear_of_the_axes(fig)
    # a name moved away from its crowded point is joined to it by a leader line
    assert any(a.arrow_patch is not None for a in fig.axes[0].texts)


def test_overlap_check_sees_overprinted_names():
    # the check the tests rely on: two names written at the same spot are reported
    fig, ax = plots.plt.subplots()
    ax.annotate("gc", (0.5, 0.5))
    ax.annotate("none", (0.5, 0.5))
    assert ("gc", "none") in overlapping_texts(fig)
    plots.plt.close(fig)


def test_accuracy_axis_ends_at_100_and_nothing_overprints(rendered, tmp_path):
    # seeds at 100% and intervals reaching it; long variant names on the rotated ticks
    rows = [_row("none", "baseline", accs=(1.0, 0.995, 0.99)),
            _row("se-reduction4-everywhere", "attention", accs=(1.0, 1.0, 0.985)),
            _row("none-width19-matched", "capacity", accs=(0.98, 0.99, 1.0)),
            _row("non_local-layer2-layer3", "attention")]
    plots.accuracy_figure(rows, tmp_path / "acc.png")
    fig = rendered[-1]
    assert fig.axes[0].get_ylim()[1] <= 100.0
    assert overlapping_texts(fig) == []
    _legends_clear_of_the_axes(fig)


def test_training_curves_in_percent_and_nothing_overprints(rendered, tmp_path):
    curves = {v: {"train_loss": [[2.0, 1.0, 0.5], [2.1, 0.9, 0.4]], "test_acc": [[0.5, 0.9, 1.0], [0.4, 0.95, 0.99]],
                  "train_acc": [[0.6, 0.92, 0.999]]} for v in ("none", "se", "cbam", "non_local", "none-width19")}
    plots.training_curves_figure(curves, tmp_path / "curves.png")
    fig = rendered[-1]
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"train_loss", "test_acc (%)", "train_acc (%)"}
    # accuracies drawn in %: the mean of the two seeds' last epochs, by hand
    test_acc = panels["test_acc (%)"].get_lines()[0].get_ydata()
    assert test_acc[-1] == pytest.approx(100 * (1.0 + 0.99) / 2)
    assert panels["train_loss"].get_lines()[0].get_ydata()[-1] == pytest.approx((0.5 + 0.4) / 2)
    for title in ("test_acc (%)", "train_acc (%)"):
        assert panels[title].get_ylim()[1] <= 100.0
    assert overlapping_texts(fig) == []
    _legends_clear_of_the_axes(fig)

