"""report.html from report.md: Python-Markdown (tables, fenced code) into one page that works offline.

Offline means the page requests nothing: the CSS is inline, every image is a base64 data URI read
from the run folder, and the Markdown's ways of writing raw HTML or of pointing elsewhere
(inline HTML, autolinks, reference links) are switched off, so a note that happens to hold "<...>"
is shown as text. An inline link ``[text](path)`` stays a link only when `path` is a relative
path to a file inside the run folder (the explorer page of a variant, say), so the link still
resolves when the folder is copied elsewhere; any other target (a URL, a missing file, a path
leaving the folder) is shown as the Markdown text it was written as. An image that is not a file
under the run folder is an error.

Layout: a wide table scrolls inside its own box (the page itself never scrolls sideways, down to
a phone's width), long words wrap, and printing keeps each figure and table row on one page.
"""
from __future__ import annotations

import base64
import html
import xml.etree.ElementTree as etree
from pathlib import Path
from urllib.parse import unquote, urlsplit

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

CSS = """body{font-family:system-ui,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45;overflow-wrap:break-word}
.table-box{overflow-x:auto;margin:0.8em 0}table{border-collapse:collapse;font-size:0.9em}
th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto;border:1px solid #ddd;margin:0.4em 0}
code{background:#f3f3f3;padding:0 3px;overflow-wrap:anywhere}pre{overflow-x:auto}li{margin:0.2em 0}
h2{border-bottom:1px solid #ddd;padding-bottom:0.2em}.partial{border:2px solid #c60;background:#fff4e5;padding:0.5em 0.8em}
@media print{body{max-width:none;margin:0}.table-box{overflow:visible}img,tr,.partial{break-inside:avoid}
h2,h3{break-after:avoid}}"""

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml"}
# Python-Markdown's inline patterns that would write raw HTML or a link that is not checked here
OUTWARD_PATTERNS = ("html", "autolink", "automail", "reference", "short_reference")
# the first paragraph that starts with this marker is framed as a warning (a partial study says so)
WARNING_MARK = "Partial study:"


class _OfflinePage(Treeprocessor):
    """Embed each image as a data URI, keep only links to files inside the run folder, box each
    table so it scrolls by itself, and frame the warning paragraph."""

    def __init__(self, md, root: Path):
        super().__init__(md)
        self.root = root.resolve()

    def run(self, root_element: etree.Element) -> None:
        for img in root_element.iter("img"):
            img.set("src", self._data_uri(img.get("src", "")))
        for parent in list(root_element.iter()):
            for index, child in reversed(list(enumerate(parent))):   # from the end: removals keep the indices
                if child.tag == "a" and self._local_file(child.get("href", "")) is None:
                    self._unlink(parent, index, child)
                elif child.tag == "table":
                    box = etree.Element("div", {"class": "table-box"})
                    parent.remove(child)
                    box.append(child)
                    parent.insert(index, box)
                elif child.tag == "p" and "".join(child.itertext()).startswith(WARNING_MARK):
                    child.set("class", "partial")

    def _local_file(self, target: str):
        """The file `target` names when it is a relative path to a file inside the run folder, else None."""
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
            return None
        path = (self.root / unquote(parts.path)).resolve()
        return path if path.is_file() and path.is_relative_to(self.root) else None

    @staticmethod
    def _unlink(parent: etree.Element, index: int, link: etree.Element) -> None:
        """Replace `link` by the Markdown it was written as: [text](target)."""
        shown = f"[{''.join(link.itertext())}]({link.get('href', '')})" + (link.tail or "")
        parent.remove(link)
        if index == 0:
            parent.text = (parent.text or "") + shown
        else:
            before = parent[index - 1]
            before.tail = (before.tail or "") + shown

    def _data_uri(self, src: str) -> str:
        path = (self.root / src).resolve()
        kind = IMAGE_TYPES.get(path.suffix.lower())
        if kind is None or not path.is_file() or not path.is_relative_to(self.root):
            raise ValueError(f"report image {src!r} is not an image file under {self.root}; expected a "
                             f"relative path to one of {', '.join(IMAGE_TYPES)}")
        return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


class _Offline(Extension):
    def __init__(self, root: Path):
        super().__init__()
        self.root = Path(root)

    def extendMarkdown(self, md) -> None:  # noqa: N802 (Python-Markdown's name)
        md.preprocessors.deregister("html_block")
        for name in OUTWARD_PATTERNS:
            md.inlinePatterns.deregister(name)
        md.treeprocessors.register(_OfflinePage(md, self.root), "offline_page", 5)


def markdown_to_html(text: str, root, title: str) -> str:
    """The whole HTML page of Markdown `text`, images (paths relative to `root`) embedded."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code", _Offline(root)])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


__all__ = ["markdown_to_html"]
