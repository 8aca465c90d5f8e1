"""The `threads=` argument of the native kernels, checked once for all of them."""

from __future__ import annotations

import numbers
import operator

import numpy as np


def native_threads(threads: object, maximum: int) -> int:
    """`threads` as a native kernel takes it: None -> 0 (the kernel's default, all cores), else
    an int >= 1, capped at the kernel's `maximum`; a clear error for anything else."""
    if threads is None:
        return 0
    if isinstance(threads, (bool, np.bool_)) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"threads must be an int or None, got {type(threads).__name__}")
    n = operator.index(threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1 (or None for all cores), got {n}")
    return min(n, maximum)
