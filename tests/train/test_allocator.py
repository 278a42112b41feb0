"""train.process.keep_freed_memory: glibc keeps freed blocks, so a training step stops page-faulting.
Each check runs in a fresh interpreter (the setting is per process and cannot be undone)."""
import os
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch, attnlab
from attnlab.train.process import keep_freed_memory
torch.set_num_threads(1)
model = attnlab.create_model("resnet20", num_classes=10)
x = torch.randn(32, 3, 32, 32)            # activations of 0.5-2 MiB: above glibc's mmap threshold
def faults_per_step():
    for _ in range(2):
        model(x).sum().backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        model(x).sum().backward()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4
first = faults_per_step()
applied = keep_freed_memory()
print(applied, first, faults_per_step())
"""


def _probe(**env):
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert proc.returncode == 0, proc.stderr
    applied, before, after = proc.stdout.split()
    return applied == "True", float(before), float(after)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_removes_the_page_faults_of_a_step():
    applied, before, after = _probe()
    assert applied
    assert before > 200            # every step re-faults its large tensors by default
    assert after < before / 5      # the heap now keeps and reuses them


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_environment_switch_leaves_malloc_alone():
    applied, before, after = _probe(ATTNLAB_KEEP_FREED_MEMORY="0")
    assert not applied
    assert after > 200
