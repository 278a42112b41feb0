"""How the report writes numbers and tables: one place for every format, so that each table
shows accuracy in % and a missing value as "n/a"."""
from __future__ import annotations

import math
from typing import Sequence


def finite(v) -> bool:
    """True for an int or float that is finite (not bool, None, NaN or infinite)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def num(v, fmt: str = "{:.3g}") -> str:
    """`v` formatted, or "n/a" when it is missing or not finite."""
    return fmt.format(v) if finite(v) else "n/a"


def pct(v, digits: int = 2) -> str:
    """An accuracy or probability in [0, 1] as a percentage without the sign: 0.9935 -> '99.35'."""
    return num(100 * v if finite(v) else v, f"{{:.{digits}f}}")


def points(v, digits: int = 2) -> str:
    """A difference of accuracies in percentage points with its sign: 0.004 -> '+0.40'."""
    return num(100 * v if finite(v) else v, f"{{:+.{digits}f}}")


def interval(low, high, fmt=pct, digits: int = 2) -> str:
    """'[low, high]' with `fmt` applied to both bounds, "n/a" when either is missing."""
    if not (finite(low) and finite(high)):
        return "n/a"
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def ms(seconds, digits: int = 2) -> str:
    """Seconds shown in milliseconds."""
    return num(1e3 * seconds if finite(seconds) else seconds, f"{{:.{digits}f}}")


def ratio(v) -> str:
    """A ratio to the baseline: '1.05x'."""
    return num(v, "{:.2f}x")


def human(n, unit: str = "") -> str:
    """A count with a k / M / G suffix: 75002 -> '75k'."""
    if not finite(n):
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"


def md_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A Markdown table (a '|' inside a cell is escaped, '\\|', so it shows as itself)."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(out)


def listing(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


__all__ = ["finite", "num", "pct", "points", "interval", "ms", "ratio", "human", "md_table", "listing"]
