"""Keep glibc from handing large tensor buffers back to the kernel after every op.

glibc serves allocations above its mmap threshold (at most 32 MiB by default) with a fresh
``mmap`` and returns them with ``munmap`` on free. A MiniLM-L6 training step at 64 x 256 tokens
allocates and frees hundreds of such buffers (activations, attention probabilities, gradients), so
every step pays page faults to zero memory it just released: measured on a 2-core Xeon, half of
the CPU time was kernel time and a bf16 forward+backward took 10 s; with the thresholds below it
took 5.7 s (``scripts/bench_malloc.py``). Intel's PyTorch CPU guides recommend jemalloc or
tcmalloc for the same reason; ``mallopt`` gets most of the benefit with nothing to install.

The cost: memory a job frees stays in the process (reused by its next step) instead of going back
to the OS. Set ``RERANKFORGE_TUNE_MALLOC=0`` to keep glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameter numbers from <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

#: allocations below this come from the heap, so freed buffers are reused without page faults
MMAP_THRESHOLD = 1 << 30
#: free heap memory kept before glibc trims it back to the OS
TRIM_THRESHOLD = (1 << 31) - 1
#: extra heap requested per growth, so a step's first allocations do not grow the heap piecemeal
TOP_PAD = 1 << 28

_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True when they are in effect.

    A no-op (False) off Linux/glibc or with ``RERANKFORGE_TUNE_MALLOC=0``.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("RERANKFORGE_TUNE_MALLOC", "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
    _tuned = ok
    return ok
