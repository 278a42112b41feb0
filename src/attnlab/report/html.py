"""report.html from report.md: Python-Markdown (tables, fenced code) into one self-contained page.

Self-contained means the page references nothing outside itself: the CSS is inline, every image
is a base64 data URI read from the run folder, and the Markdown's own ways of pointing elsewhere
(raw HTML, links, autolinks) are switched off, so a note that happens to hold "<...>" or
"[text](url)" is shown as text. An image that is not a file under the run folder is an error.
"""
from __future__ import annotations

import base64
import html
import xml.etree.ElementTree as etree
from pathlib import Path

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

CSS = """body{font-family:system-ui,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:0.4em 0}
code{background:#f3f3f3;padding:0 3px}li{margin:0.2em 0}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em}"""

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml"}
# Python-Markdown's inline patterns that would write raw HTML or a link to somewhere else
OUTWARD_PATTERNS = ("html", "autolink", "automail", "link", "reference", "short_reference")


class _EmbedImages(Treeprocessor):
    """Replace each <img src="relative/path"> by the file's bytes as a data URI."""

    def __init__(self, md, root: Path):
        super().__init__(md)
        self.root = root.resolve()

    def run(self, root_element: etree.Element) -> None:
        for img in root_element.iter("img"):
            img.set("src", self._data_uri(img.get("src", "")))

    def _data_uri(self, src: str) -> str:
        path = (self.root / src).resolve()
        kind = IMAGE_TYPES.get(path.suffix.lower())
        if kind is None or not path.is_file() or not path.is_relative_to(self.root):
            raise ValueError(f"report image {src!r} is not an image file under {self.root}; expected a "
                             f"relative path to one of {', '.join(IMAGE_TYPES)}")
        return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


class _SelfContained(Extension):
    def __init__(self, root: Path):
        super().__init__()
        self.root = Path(root)

    def extendMarkdown(self, md) -> None:  # noqa: N802 (Python-Markdown's name)
        md.preprocessors.deregister("html_block")
        for name in OUTWARD_PATTERNS:
            md.inlinePatterns.deregister(name)
        md.treeprocessors.register(_EmbedImages(md, self.root), "embed_images", 5)


def markdown_to_html(text: str, root, title: str) -> str:
    """The whole HTML page of Markdown `text`, images (paths relative to `root`) embedded."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code", _SelfContained(root)])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


__all__ = ["markdown_to_html"]
