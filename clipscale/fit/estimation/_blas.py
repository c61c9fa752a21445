"""Run tiny optimisations with single-threaded BLAS (threadpoolctl).

scipy's L-BFGS-B calls LAPACK on 6x6 matrices every iteration; a multi-threaded OpenBLAS wakes its
thread pool for each call, which on a loaded 2-core machine made one fit 10x slower (3 ms per
iteration instead of 0.3 ms, measured). The ThreadpoolController is built once (it scans the loaded
libraries, ~ms) and reused, so entering the limit per fit costs microseconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache

from threadpoolctl import ThreadpoolController


@cache
def _controller() -> ThreadpoolController:
    return ThreadpoolController()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread inside the block; the previous limits are restored on exit."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
