"""The server process's heap: one pool for every loaded model, handed back after swaps.

ONNX Runtime's own CPU memory arena belongs to one session: a hot swap loads a second
session whose arena grows to serving size beside the first, and an arena never shrinks,
so RSS steps up with swaps. The server instead turns the per-session arena off and lets
glibc's heap, which every session shares, do the pooling:

- ``tune_allocator`` (at process start) fixes glibc's mmap threshold high, so a model
  run's large temporaries (attention scores, activations: megabytes each) come from the
  heap and are reused on the next run instead of being mapped and unmapped every time
  (which can cost as much as the run itself), and fixes the trim threshold high, so
  ``free`` does not give pages back between runs;
- it also caps glibc's heaps at ``HEAPS`` (one per thread by default, up to 8 per core,
  each keeping its own peak): the model runs' threads share them;
- ``trim_heap`` gives every free page back after a retired model's session is freed, so
  a swap to a smaller model does not keep the larger one's memory.

Without a trim, RSS settles at the largest working set the serving threads have needed
at once (bounded: batches are bounded by server.max_batch_size and max_batch_run_ms), and
stays there.

On a system without glibc both are no-ops and return False.
"""

from __future__ import annotations

import ctypes
import logging
from functools import cache

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
HEAPS = 2
HEAP_THRESHOLD_BYTES = 1 << 30
"""Allocations below 1 GiB come from the heap, and free memory stays in it up to 1 GiB
until the next trim."""


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_tuned = False


def heap_pools_runs() -> bool:
    """Whether tune_allocator has set this process's heap up to pool model-run memory
    (the ONNX Runtime backend then turns its per-session arena off; elsewhere, in a
    benchmark or a worker, it keeps the arena, which is as fast)."""
    return _tuned


def tune_allocator() -> bool:
    """Sets the heap options above; call once, at process start, before any thread or
    model exists."""
    global _tuned
    libc = _libc()
    if libc is None:
        return False
    ok = all(
        libc.mallopt(option, value)
        for option, value in (
            (M_MMAP_THRESHOLD, HEAP_THRESHOLD_BYTES),
            (M_TRIM_THRESHOLD, HEAP_THRESHOLD_BYTES),
            (M_ARENA_MAX, HEAPS),
        )
    )
    if not ok:
        log.warning("glibc refused the heap settings; model runs keep ONNX Runtime's arena")
    _tuned = ok
    return ok


def trim_heap() -> bool:
    """Hands every free heap page back to the OS (glibc's malloc_trim)."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
