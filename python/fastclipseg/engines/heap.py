"""Giving memory that a load freed back to the operating system (glibc only; a no-op elsewhere)."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library this process already uses
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS), or no C library to open (Windows)
        return None


def release_freed_memory() -> None:
    """Return the heap's free pages to the system.

    Loading a stage reads its file into buffers and unpacks the weights, then frees the buffers;
    glibc keeps that memory in its heap, counted in the process's RSS, until asked to give it back
    (about 60 MB for a full-size int8 model). Called once after a load, never per run: trimming on
    every free (MALLOC_TRIM_THRESHOLD_=0) made runs 50-80 % slower.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
