"""The explorer page: written by explain_model(html=True), self-contained (no external reference),
small, and driven in a real browser (headless Chromium through the DevTools protocol): a click on
the image changes the affinity view, and no console error occurs. The test saves a screenshot
under its tmp folder and, when ATTNLAB_SCREENSHOT_DIR is set, there too.

Skips only where Chromium is missing and the CI variable is unset: in CI it must run."""
import json
import re
import shutil
import time

import pytest
import torch
from chromium_devtools import chromium   # tests/chromium_devtools.py: the browser these tests drive

import attnlab
from attnlab.explain import explain_model


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """explorer.html and summary.json of a tiny CBAM + non-local ResNet on digits-sized images."""
    torch.manual_seed(0)
    model = attnlab.create_model("resnet_cifar", depth=8, width=4, in_chans=1, num_classes=3, attention="cbam",
                                 attention_kwargs={"reduction": 2}, nonlocal_stages=[2]).eval()
    gen = torch.Generator().manual_seed(0)
    raw = torch.rand(8, 1, 16, 16, generator=gen)
    out = tmp_path_factory.mktemp("explorer")
    paths = explain_model(model, (raw - 0.5) / 0.25, torch.arange(8) % 3, raw, out, classes=["zero", "one", "two"],
                          illustration=False, html=True)
    assert out / "explorer.html" in paths
    return out / "explorer.html", json.loads((out / "summary.json").read_text())


def test_the_page_is_self_contained_and_small(page):
    path, summary = page
    text = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "http://" not in text and "https://" not in text
    assert path.stat().st_size < 1_000_000
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', text, re.S)[1])
    assert [layer["name"] for layer in data["layers"]] == list(summary["evidence_layers"])
    assert data["affinity"][0]["module"] == "layer2.0_nonlocal"
    # summary.json holds what the page shows, and lists the static class-evidence figure of each module map
    assert {"agreement", "faithfulness", "sanity"} <= set(summary)
    modules = sorted({f"{r['module']}_{r['signal']}".replace(".", "_") for r in summary["agreement"]})
    evidence = sorted(f for f in summary["figures"] if f.startswith("f_evidence_"))
    assert evidence == [f"f_evidence_{m}.png" for m in modules] and len(modules) == 4
    assert all((path.parent / f).is_file() for f in evidence)
    assert all(isinstance(r["flagged"], bool) for r in summary["sanity"]["maps"])


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path) as client:
        yield client


def test_clicking_a_position_changes_the_affinity_view_without_console_errors(page, browser, tmp_path):
    path, _ = page
    for domain in ("Page", "Runtime", "Log"):
        browser(f"{domain}.enable")
    browser("Page.navigate", url=path.resolve().as_uri())
    deadline = time.monotonic() + 30
    while browser.evaluate("document.readyState") != "complete" or not browser.evaluate("!!document.getElementById('depth-name').textContent"):
        assert time.monotonic() < deadline, "the page did not finish drawing"
        time.sleep(0.1)
    before = browser.evaluate("document.getElementById('affinity').toDataURL()")
    caption = browser.evaluate("document.getElementById('affinity-caption').textContent")
    box = browser.evaluate("(() => { const b = document.getElementById('main').getBoundingClientRect();"
                           " return [b.left, b.top, b.width, b.height]; })()")
    x, y = box[0] + 0.15 * box[2], box[1] + 0.2 * box[3]             # far from the centre, where it starts
    for kind in ("mousePressed", "mouseReleased"):
        browser("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
    after = browser.evaluate("document.getElementById('affinity').toDataURL()")
    assert after != before
    assert browser.evaluate("document.getElementById('affinity-caption').textContent") != caption
    # the other controls draw without errors too: the difference view, Ablation-CAM, the last depth
    browser.evaluate("document.querySelector('input[value=difference]').click()")
    browser.evaluate("(() => { const d = document.getElementById('depth'); d.value = d.max;"
                     " d.dispatchEvent(new Event('input')); })()")
    browser.evaluate("document.querySelector('input[value=cam]').click()")
    browser.evaluate("(() => { const s = document.getElementById('depth'); s.value = 1;"
                     " s.dispatchEvent(new Event('input')); })()")
    shot = browser.screenshot(tmp_path / "explorer.png")
    assert not browser.console_errors(), browser.console_errors()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000


def test_the_report_links_each_variants_explorer_and_shows_its_tables(page, tmp_path):
    from attnlab.io.study_files import StudyFolder, StudyPlan
    from attnlab.report.explanations import explanation_section

    path, summary = page
    plan = StudyPlan.from_dict({"variants": [{"name": "cbam"}, {"name": "none"}], "baseline": "none"})
    folder = StudyFolder(tmp_path)
    for name in ("cbam", "none"):
        folder.explain_dir(name).mkdir(parents=True)
        shutil.copy(path.parent / "c_excitation_per_class.png", folder.explain_dir(name) / "c_excitation_per_class.png")
    evidence = next(f for f in summary["figures"] if f.startswith("f_evidence_"))
    shutil.copy(path.parent / evidence, folder.explain_dir("cbam") / evidence)
    shutil.copy(path, folder.explain_dir("cbam") / "explorer.html")
    shutil.copy(path.parent / "summary.json", folder.explain_summary("cbam"))
    text = "\n".join(explanation_section(folder, plan))
    link = folder.explain_dir("cbam").relative_to(tmp_path).as_posix() + "/explorer.html"
    assert f"]({link})" in text and text.count("explorer.html") == 1      # the variant without a page gets no link
    assert "| random ranking |" in text
    flagged = [r["map"] for r in summary["sanity"]["maps"] if r["flagged"]]
    assert text.count("**flagged**") == len(flagged)
    assert "top-10% IoU" in text
    assert f"({folder.explain_dir('cbam').relative_to(tmp_path).as_posix()}/{evidence})" in text   # the static picture
