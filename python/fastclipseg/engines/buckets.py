"""Static batch sizes ("buckets") for engines that want a finite set of shapes.

CUDA graphs replay a captured launch sequence for one exact shape, and TensorRT tunes its
kernels for the shapes of an optimisation profile; both do best when a batch of any size is
run as one of a few fixed sizes. A batch of `n` items is therefore split into chunks whose
sizes are buckets (largest first), and the last chunk is padded up to the smallest bucket
that holds it:

    split_into_buckets(37, (1, 2, 4, 8, 16, 32)) == [(32, 32), (5, 8)]

`pad_batch` pads a chunk by repeating its last item, and `unpad` drops the padded rows again.
`pair_buckets` gives the padded sizes of decoder calls, whose (image, prompt) pairs vary more.
Every stage computes each batch item independently of the others (attention runs within an
image, the decoder gathers per pair), so padded rows never change the real rows' results.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch

DEFAULT_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)


def check_buckets(buckets: Sequence[int]) -> tuple[int, ...]:
    """`buckets` as a tuple, after checking that it is a non-empty, strictly increasing list of positive ints."""
    if isinstance(buckets, (str, bytes)) or not isinstance(buckets, Sequence):
        raise TypeError(f"buckets must be a sequence of ints, got {type(buckets).__name__}")
    if len(buckets) == 0:
        raise ValueError("buckets must not be empty")
    for size in buckets:
        # bool is an int subclass; True as a batch size is almost certainly a mistake.
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"every bucket must be an int, got {size!r} ({type(size).__name__})")
        if size < 1:
            raise ValueError(f"every bucket must be a positive batch size, got {size}")
    for previous, size in pairwise(buckets):
        if size == previous:
            raise ValueError(f"buckets must be unique, {size} is listed twice: {tuple(buckets)}")
        if size < previous:
            raise ValueError(f"buckets must be sorted in increasing order, got {tuple(buckets)}")
    return tuple(buckets)


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"a batch size must be an int, got {n!r} ({type(n).__name__})")
    if n < 1:
        raise ValueError(f"a batch size must be at least 1, got {n}")


def bucket_for(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
    """The smallest bucket that holds `n` items; ValueError above the largest (split first)."""
    buckets = check_buckets(buckets)
    _check_count(n)
    for size in buckets:
        if size >= n:
            return size
    raise ValueError(
        f"a batch of {n} is larger than the largest bucket ({buckets[-1]}): split it with split_into_buckets first"
    )


def pair_buckets(max_pairs: int) -> tuple[int, ...]:
    """Powers of two below `max_pairs`, then `max_pairs`: the padded sizes of decoder calls."""
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be at least 1, got {max_pairs}")
    sizes = [1]
    while sizes[-1] * 2 < max_pairs:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_pairs:
        sizes.append(max_pairs)
    return tuple(sizes)


def split_into_buckets(n: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> list[tuple[int, int]]:
    """`(chunk, bucket)` pairs whose chunks add up to `n`, in order.

    Full chunks of the largest bucket first; the rest (if any) is one last chunk, padded up to
    the smallest bucket that holds it. So a batch runs in as few launches as the largest bucket
    allows, and the padding is less than the last chunk itself (`bucket - chunk < chunk` with
    power-of-two buckets), rather than splitting the rest into many small exact launches.
    """
    buckets = check_buckets(buckets)
    _check_count(n)
    largest = buckets[-1]
    chunks = [(largest, largest)] * (n // largest)
    rest = n % largest
    if rest:
        chunks.append((rest, bucket_for(rest, buckets)))
    return chunks


def pad_batch(tensor: torch.Tensor, bucket: int, dim: int = 0) -> tuple[torch.Tensor, int]:
    """`tensor` with dimension `dim` padded up to `bucket` rows, and its real row count `n`.

    The padding repeats the last real item rather than writing zeros: a repeated real input
    keeps every activation inside the range calibration saw, so INT8 scales do not clip and
    fp16 does not overflow on an input the model was never meant to see (an all-zero image is
    far outside the normalised pixel distribution; an all-zero token row is not even a valid
    prompt, and an image index of 0 is valid only by accident). The padded rows' outputs are
    thrown away by `unpad`. A tensor that already has `bucket` rows is returned as it is.
    """
    if tensor.dim() == 0:
        raise ValueError("pad_batch needs a tensor with a batch dimension, got a scalar")
    n = int(tensor.shape[dim])
    if n == 0:
        raise ValueError("cannot pad an empty batch: there is no item to repeat")
    if isinstance(bucket, bool) or not isinstance(bucket, int):
        raise TypeError(f"bucket must be an int, got {bucket!r}")
    if bucket < n:
        raise ValueError(f"a batch of {n} does not fit a bucket of {bucket}: split it first")
    if bucket == n:
        return tensor, n
    shape = list(tensor.shape)
    shape[dim] = bucket - n
    filler = tensor.narrow(dim, n - 1, 1).expand(shape)
    return torch.cat([tensor, filler], dim=dim), n


def unpad(output: torch.Tensor, n: int, dim: int = 0) -> torch.Tensor:
    """The first `n` rows of `output` along `dim` (the real items of a padded batch)."""
    if n < 0 or n > output.shape[dim]:
        raise ValueError(f"cannot keep {n} rows of an output with {output.shape[dim]} along dimension {dim}")
    return output.narrow(dim, 0, n)
