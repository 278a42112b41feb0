"""PLACEHOLDER"""
from contextlib import contextmanager
@contextmanager
def capture(model, **kw):
    yield {}
