"""The attention package is the bottom layer: it imports nothing of attnlab outside itself (but the
shared argument checks of attnlab.checks), not
even inside a function, so that a mechanism can be read, tested and reused on its own."""
from __future__ import annotations

import ast
from pathlib import Path

import attnlab.attention

PACKAGE = Path(attnlab.attention.__file__).parent


def attnlab_imports(path: Path) -> list[str]:
    """Every module of attnlab that `path` imports, anywhere in the file, as a dotted name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against attnlab.attention
                base = ["attnlab", "attention"][: max(2 - (node.level - 1), 0)]
                found.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module and node.module.split(".")[0] == "attnlab":
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "attnlab"]
    return found


def test_attention_imports_nothing_of_attnlab_outside_attention():
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 10
    outside = {f"{path.name}: {name}" for path in files for name in attnlab_imports(path)
               if name not in ("attnlab.attention", "attnlab.checks") and not name.startswith("attnlab.attention.")}
    assert outside == set()


def test_the_import_check_sees_relative_imports_from_above(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from ..models.resnet import PreActBottleneck\nfrom .base import x\n")
    assert sorted(attnlab_imports(sample)) == ["attnlab.attention.base", "attnlab.models.resnet"]
