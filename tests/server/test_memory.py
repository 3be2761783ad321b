"""The server's heap settings (server/memory.py), in a process of their own."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

SCRIPT = """
import numpy as np
from server.memory import trim_heap, tune_allocator

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

assert tune_allocator()
base = rss_mb()
blocks = [np.ones(8 << 20, dtype=np.uint8) for _ in range(8)]  # 64 MB of 8 MB blocks
del blocks
kept = rss_mb() - base
assert trim_heap()
after = rss_mb() - base
print(f"{kept:.0f} {after:.0f}")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc on Linux")
def test_run_memory_stays_in_the_heap_until_a_trim() -> None:
    """Freed model-run-sized blocks stay in the heap for the next run (not unmapped and
    mapped again each time), and a trim gives them back."""
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    kept, after = map(float, out.split())
    assert kept >= 60, f"freed blocks were handed back at once ({kept:.0f} MB kept)"
    assert after <= 10, f"the trim left {after:.0f} MB"
