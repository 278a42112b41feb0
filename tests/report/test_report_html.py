"""report.html as a reader gets it: a small study with a partial variant, a variant name with
every kind of character a name may hold, a question full of HTML and Markdown characters, and an
explorer page beside the report.

Plain-HTML checks: names and free text are shown as text (no markup injected), the only links are
to files inside the study folder (they resolve from a copy of the folder elsewhere), the outline
has one h1 and no skipped level, every image has alt text, the tables show the numbers of
results.json with report.md's rounding, and a partial study says so. The browser check (headless
Chromium, skipped where it is missing) opens a copy of the folder at a laptop's and a phone's
width: nothing requested from the network, no console error, every image drawn, and the page never
scrolls sideways (a wide table scrolls in its own box). It saves its screenshots under its tmp
folder and, when ATTNLAB_SCREENSHOT_DIR is set, there too."""
import html.parser
import json
import re
import shutil
from pathlib import Path

import pytest
from chromium_devtools import chromium
from test_report import ACCS, _cost, make_run_folder

ODD = "se_+b_x-1.2"       # a variant name with every kind of character a variant name may hold
QUESTION = 'Does <script>alert(1)</script> & "x" <img src=x onerror=alert(2)> [a link](http://example.com) help?'
NOTE = "a note with <b>tags</b> and [a script](javascript:alert(3))"
MARKUP = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "ul", "li", "strong", "em", "code",
          "pre", "div", "table", "thead", "tbody", "tr", "th", "td", "img", "a"}


class _Page(html.parser.HTMLParser):
    """The tags with their attributes, the headings, the text of each paragraph and the cells of each table."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.tags, self.headings, self.paragraphs, self.tables = [], [], [], []
        self._text = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        if tag in ("p", "li", "td", "th", "h1", "h2", "h3"):
            self._text = []

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if self._text is None or tag not in ("p", "li", "td", "th", "h1", "h2", "h3"):
            return
        text, self._text = "".join(self._text), None
        if tag in ("td", "th"):
            self.tables[-1][-1].append(text)
        elif tag.startswith("h"):
            self.headings.append((int(tag[1]), text))
        else:
            self.paragraphs.append(text)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """cbam's third seed has not finished: 11 of the 12 planned runs."""
    accs = {"none": ACCS["none"], ODD: ACCS["se"], "se": ACCS["se"], "cbam": {0: 0.95, 1: 0.965}}
    variants = [{"name": "none", "model": "m", "attention": None, "role": "baseline"},
                {"name": ODD, "model": "m", "attention": "se", "role": "attention"},
                {"name": "se", "model": "m", "attention": "se", "role": "attention"},
                {"name": "cbam", "model": "m", "attention": "cbam", "role": "attention"}]
    costs = {"none": _cost(1000, 20000, 0.001), ODD: _cost(1100, 20100, 0.0015), "se": _cost(1100, 20100, 0.0015),
             "cbam": _cost(1150, 20200, 0.002)}
    root = make_run_folder(tmp_path_factory.mktemp("study"), accs, costs, variants, predictions=False,
                           plan_extra={"description": QUESTION, "notes": [NOTE]})
    return root, _Page((root / "report.html").read_text())


def test_names_and_free_text_are_shown_as_text(study):
    root, page = study
    assert {tag for tag, _ in page.tags} <= MARKUP
    assert all(set(attrs) <= {"lang", "charset", "name", "content", "class", "src", "alt", "href"}
               for _, attrs in page.tags)
    assert f"Question: {QUESTION}" in page.paragraphs
    assert NOTE in page.paragraphs
    rows = [row for table in page.tables for row in table]
    assert sum(row[0] == ODD for row in rows) >= 4          # one cell each, in the setup and the result tables
    assert all(len(row) == len(table[0]) for table in page.tables for row in table)


def test_links_and_images_resolve_inside_a_copy_of_the_folder(study, tmp_path):
    root, page = study
    copy = shutil.copytree(root, tmp_path / "elsewhere" / "study")
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a"]
    assert links == ["explain/se/explorer.html"]
    assert all((copy / link).is_file() for link in links)
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) >= 4 and all(img["src"].startswith("data:image/png;base64,") for img in images)
    assert all(img["alt"].strip() for img in images)


def test_one_h1_and_no_skipped_heading_level(study):
    _, page = study
    levels = [level for level, _ in page.headings]
    assert levels.count(1) == 1 and levels[0] == 1
    assert all(b <= a + 1 for a, b in zip(levels, levels[1:])), levels


def test_the_tables_show_the_numbers_of_results_json_as_report_md_does(study):
    root, page = study
    rows = {r["variant"]: r for r in json.loads((root / "results.json").read_text())["variants"]}
    tables = {table[0][2]: table for table in page.tables}
    for cells in tables["seeds"][1:]:
        r = rows[cells[0]]
        assert cells[2] == str(r["n"])
        assert cells[3] == f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f}"
        assert cells[4] == f"[{100 * r['acc_ci_low']:.2f}, {100 * r['acc_ci_high']:.2f}]"
    paired = tables["diff (% points)"][1:]
    assert {cells[0] for cells in paired} == {ODD, "se", "cbam"}
    for cells in paired:
        r = rows[cells[0]]
        assert cells[2] == f"{100 * r['diff_mean']:+.2f}" and cells[4] == f"{r['p_value']:.3f}"
    md_rows = [ln for ln in (root / "report.md").read_text().splitlines() if ln.startswith("| ") and "---" not in ln]
    html_rows = [row for table in page.tables for row in table]
    assert [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in md_rows] == html_rows


def test_a_partial_study_says_so_first_and_quotes_the_means_it_pairs(study):
    root, page = study
    banner = next(i for i, (tag, attrs) in enumerate(page.tags) if attrs.get("class") == "partial")
    assert page.tags[banner][0] == "p" and not any(tag.startswith("h2") for tag, _ in page.tags[:banner])
    assert any(p.startswith("Partial study: 11 of the 12 planned runs have finished (not yet: seed 2 of cbam)")
               for p in page.paragraphs)
    headline = next(p for p in page.paragraphs if p.startswith("The best attention variant, cbam"))
    base, best = map(float, re.search(r"\(([\d.]+)% to ([\d.]+)% over the 2 seeds both finished", headline).groups())
    step = float(re.search(r"is ([+-][\d.]+) points", headline)[1])
    assert best - base == pytest.approx(step, abs=0.011)


def test_in_a_browser_at_a_laptop_and_a_phone_width(study, tmp_path):
    root, _ = study
    copy = shutil.copytree(root, tmp_path / "copy")
    with chromium(tmp_path) as browser:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser(f"{domain}.enable")
        for width in (1280, 400):
            browser.open(copy / "report.html", width, 900)
            widths = browser.evaluate("[document.documentElement.clientWidth, document.documentElement.scrollWidth]")
            assert widths[1] <= widths[0], f"the page scrolls sideways at {width} px: {widths}"
            boxed = browser.evaluate("[...document.querySelectorAll('table')].every(t => t.parentElement.className"
                                     " === 'table-box' && t.parentElement.getBoundingClientRect().right"
                                     " <= document.documentElement.clientWidth)")
            assert boxed
            assert browser.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
            shot = browser.screenshot(tmp_path / f"report-{width}.png")
            assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        links = browser.evaluate("[...document.links].map(a => a.href)")
        errors = browser.console_errors()
        requested = browser.requested()
    assert links == [(copy / "explain" / "se" / "explorer.html").as_uri()]
    assert not errors, errors
    page = (copy / "report.html").as_uri()
    assert requested and all(url == page or url.startswith("data:") for url in requested), requested
    assert Path(tmp_path / "report-400.png").stat().st_size > 10_000
