"""Deployment: a model written as an ONNX file or a `torch.export` program and checked against the
eager model (`export`); the per-model conformance checks behind docs/conformance.md
(`conformance`)."""
from .export import FORMATS, ExportError, ExportResult, export

__all__ = ["FORMATS", "ExportError", "ExportResult", "export"]
