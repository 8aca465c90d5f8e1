"""Thread counts (`threads=` of the native kernels, a segmenter's `kernel_threads`), checked in one place."""

from __future__ import annotations

import numbers
import operator

import numpy as np


def check_threads(threads: object, name: str = "threads") -> int | None:
    """A thread count: None (all cores) or an int >= 1; a clear error naming `name` for anything else."""
    if threads is None:
        return None
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"{name} must be an int or None (all cores), got {type(threads).__name__}: {threads!r}")
    n = operator.index(threads)
    if n < 1:
        raise ValueError(f"{name} must be >= 1 (or None for all cores), got {n}")
    return n


def native_threads(threads: object, maximum: int) -> int:
    """`threads` as a native kernel takes it: None -> 0 (the kernel's default, all cores), else
    an int >= 1, capped at the kernel's `maximum`; a clear error for anything else."""
    n = check_threads(threads)
    return 0 if n is None else min(n, maximum)
