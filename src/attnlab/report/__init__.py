"""The effect report of a compare run: `build_report(run_dir) -> Path` (report.html)."""
from .builder import build_report

__all__ = ["build_report"]
