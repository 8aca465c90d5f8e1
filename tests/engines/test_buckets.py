"""Static batch buckets: choosing, splitting, padding and unpadding."""

from __future__ import annotations

import pytest
import torch
from fastclipseg.engines.buckets import (
    DEFAULT_BUCKETS,
    bucket_for,
    check_buckets,
    pad_batch,
    pair_buckets,
    split_into_buckets,
    unpad,
)

BUCKET_SETS = [DEFAULT_BUCKETS, (1,), (3,), (2, 3, 5), (4, 8, 12), (1, 16)]


def test_default_buckets_are_valid():
    assert check_buckets(DEFAULT_BUCKETS) == (1, 2, 4, 8, 16, 32, 64)
    assert check_buckets([1, 5, 9]) == (1, 5, 9)


@pytest.mark.parametrize(
    "buckets, error, message",
    [
        ((), ValueError, "empty"),
        ((2, 1), ValueError, "sorted"),
        ((1, 2, 2), ValueError, "unique"),
        ((0, 1), ValueError, "positive"),
        ((-4,), ValueError, "positive"),
        ((1, 2.0), TypeError, "int"),
        ((True, 2), TypeError, "int"),
        ("124", TypeError, "sequence"),
        (8, TypeError, "sequence"),
    ],
)
def test_check_buckets_rejects(buckets, error, message):
    with pytest.raises(error, match=message):
        check_buckets(buckets)


@pytest.mark.parametrize("buckets", BUCKET_SETS)
def test_bucket_for_is_the_smallest_that_holds_n(buckets):
    for n in range(1, buckets[-1] + 1):
        expected = min(b for b in buckets if b >= n)
        assert bucket_for(n, buckets) == expected
    with pytest.raises(ValueError, match="split_into_buckets"):
        bucket_for(buckets[-1] + 1, buckets)


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "3"])
def test_bucket_for_rejects_bad_counts(n):
    with pytest.raises((ValueError, TypeError)):
        bucket_for(n)


@pytest.mark.parametrize("buckets", BUCKET_SETS)
def test_split_covers_every_n_exactly(buckets):
    largest = buckets[-1]
    for n in range(1, 5 * largest + 3):
        chunks = split_into_buckets(n, buckets)
        assert sum(chunk for chunk, _ in chunks) == n
        assert all(bucket in buckets for _, bucket in chunks)
        # Every chunk but the last is a full largest bucket; the last is padded to its own bucket.
        assert all(chunk == bucket == largest for chunk, bucket in chunks[:-1])
        last, bucket = chunks[-1]
        assert bucket == bucket_for(last, buckets)
        assert len(chunks) == -(-n // largest)  # as few launches as the largest bucket allows


def test_split_examples():
    assert split_into_buckets(1) == [(1, 1)]
    assert split_into_buckets(5) == [(5, 8)]
    assert split_into_buckets(64) == [(64, 64)]
    assert split_into_buckets(65) == [(64, 64), (1, 1)]
    assert split_into_buckets(37, (8, 32)) == [(32, 32), (5, 8)]
    assert split_into_buckets(200) == [(64, 64)] * 3 + [(8, 8)]
    assert split_into_buckets(2, (3,)) == [(2, 3)]


def test_split_rejects_bad_input():
    with pytest.raises(ValueError):
        split_into_buckets(0)
    with pytest.raises(ValueError, match="sorted"):
        split_into_buckets(3, (4, 2))


def test_pad_batch_repeats_the_last_item():
    batch = torch.arange(3 * 2 * 2, dtype=torch.float32).reshape(3, 2, 2)
    padded, n = pad_batch(batch, 8)
    assert n == 3 and padded.shape == (8, 2, 2)
    assert torch.equal(padded[:3], batch)
    for row in range(3, 8):
        assert torch.equal(padded[row], batch[-1])
    assert torch.equal(unpad(padded, n), batch)


def test_pad_batch_keeps_dtype_device_and_exact_batches():
    index = torch.tensor([0, 2, 1])
    padded, n = pad_batch(index, 4)
    assert padded.dtype == torch.int64 and padded.tolist() == [0, 2, 1, 1] and n == 3
    same, n = pad_batch(index, 3)
    assert same is index and n == 3
    half, _ = pad_batch(torch.ones(1, 4, dtype=torch.float16), 2)
    assert half.dtype == torch.float16 and half.shape == (2, 4)


def test_pad_batch_errors():
    with pytest.raises(ValueError, match="split"):
        pad_batch(torch.zeros(5, 2), 4)
    with pytest.raises(ValueError, match="empty"):
        pad_batch(torch.zeros(0, 2), 4)
    with pytest.raises(ValueError, match="scalar"):
        pad_batch(torch.tensor(1.0), 4)
    with pytest.raises(TypeError):
        pad_batch(torch.zeros(2, 2), 4.0)


def test_pad_batch_along_another_dimension():
    activations = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # images along dimension 1
    padded, n = pad_batch(activations, 5, dim=1)
    assert n == 3 and padded.shape == (2, 5, 4) and padded.is_contiguous()
    assert torch.equal(padded[:, :3], activations)
    assert torch.equal(padded[:, 3], activations[:, 2]) and torch.equal(padded[:, 4], activations[:, 2])
    assert torch.equal(unpad(padded, n, dim=1), activations)
    with pytest.raises(ValueError, match="split"):
        pad_batch(activations, 2, dim=1)


def test_pair_buckets():
    assert pair_buckets(1) == (1,)
    assert pair_buckets(8) == (1, 2, 4, 8)
    assert pair_buckets(24) == (1, 2, 4, 8, 16, 24)
    assert check_buckets(pair_buckets(1024)) == tuple(2**i for i in range(11))
    with pytest.raises(ValueError):
        pair_buckets(0)


def test_unpad_along_another_dimension():
    activations = torch.randn(3, 8, 5, 4)  # (L, B, T, D): images along dimension 1
    kept = unpad(activations, 5, dim=1)
    assert kept.shape == (3, 5, 5, 4) and torch.equal(kept, activations[:, :5])
    with pytest.raises(ValueError):
        unpad(activations, 9, dim=1)
    with pytest.raises(ValueError):
        unpad(activations, -1)


def test_padded_rows_do_not_change_real_rows():
    # What the engines rely on: a row's output depends on that row only.
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.GELU(), torch.nn.LayerNorm(6))
    batch = torch.randn(5, 6)
    padded, n = pad_batch(batch, 8)
    with torch.no_grad():
        torch.testing.assert_close(unpad(layer(padded), n), layer(batch))
