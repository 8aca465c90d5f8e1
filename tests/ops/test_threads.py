"""One FastSegmenter shared by several threads answers each call as it would alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastclipseg import FastSegmenter
from fastclipseg.bench.measure import natural_image

PROMPT_SETS = [["a cat"], ["red dog", "a cat"], ["a", "dog", "a red cat on a dog"], ["dog"]]


def _jobs():
    """(image, prompts) pairs of different sizes and prompt counts, prompts shared across jobs."""
    return [(natural_image(30 + 7 * i, 50 - 3 * i, seed=i), PROMPT_SETS[i % len(PROMPT_SETS)]) for i in range(12)]


def _outputs(result):
    return result.logits, result.masks, [r["rle"] for r in result.mask_records()], result.scores


def _assert_same(got, expected, what: str) -> None:
    for a, b in zip(got, expected):
        if isinstance(a, np.ndarray):
            assert np.array_equal(a, b), what
        else:
            assert a == b, what


def test_four_threads_give_the_sequential_results(tiny_model_dir):
    jobs = _jobs()
    sequential = FastSegmenter.from_pretrained(tiny_model_dir)
    expected = [_outputs(sequential.segment(image, prompts)) for image, prompts in jobs]
    expected_batch = [_outputs(r) for r in sequential.segment_batch([image for image, _ in jobs[:6]], "a cat")]

    shared = FastSegmenter.from_pretrained(tiny_model_dir)  # its prompt cache fills from 4 threads at once
    with ThreadPoolExecutor(max_workers=4) as pool:
        rounds = [pool.map(lambda job: _outputs(shared.segment(*job)), jobs * 3),
                  pool.map(lambda _: [_outputs(r) for r in shared.segment_batch([i for i, _ in jobs[:6]], "a cat")],
                           range(4))]
        singles, batches = (list(r) for r in rounds)
    for n, got in enumerate(singles):
        _assert_same(got, expected[n % len(jobs)], f"segment job {n % len(jobs)}")
    for batch in batches:
        for n, got in enumerate(batch):
            _assert_same(got, expected_batch[n], f"segment_batch image {n}")
