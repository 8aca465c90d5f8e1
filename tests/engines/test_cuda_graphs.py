"""The `cudagraphs` engine and the half-precision stages.

CI and the development machines have no CUDA device, so two kinds of test live here:
- on the CPU: the engine's static buffers, bucket padding, output copies, lazy decoder graphs and
  eager fallbacks, with `capture=False` (the stage is called on the same buffers instead of a graph
  being replayed), and the fp16 stages themselves (PyTorch runs fp16 on the CPU, slowly);
- on CUDA (skipped elsewhere): replayed graphs equal eager results; against transformers on the
  full-size model with the real decoder weights, both CUDA backends (`torch` and `cudagraphs`) are
  within 1e-4 relative in fp32 (TF32 off) and keep >= 99.5 % mask agreement in fp32/fp16/bf16.
"""

from __future__ import annotations

import copy

import pytest
import torch
from fastclipseg import FastSegmenter
from fastclipseg.bench.measure import natural_image
from fastclipseg.engines import create_engine
from fastclipseg.engines.cuda_graphs import (
    MAX_DECODER_GRAPHS,
    PAIR_BUCKETS,
    CudaGraphEngine,
    StaticGraph,
)
from fastclipseg.engines.torch_engine import TorchEngine
from helpers.parity import assert_relative_close, clipseg_tolerance
from helpers.shared import SHARED_DATA
from helpers.tiny_models import TINY_IMAGE_SIZE

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (PyTorch sees none)")

# fp16 on the tiny random model: a bound on the relative logit error only (random weights make
# every rounding visible); the claim that matters is the full-size mask agreement below.
TINY_HALF_TOLERANCE = 0.05
MASK_AGREEMENT = 0.995
BUCKETS = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def tiny_stages(tiny_segmenter):
    return tiny_segmenter.stages


@pytest.fixture(scope="module")
def tiny_pixels(tiny_segmenter):
    return tiny_segmenter.pixel_values([natural_image(40 + 7 * i, 50, seed=i) for i in range(9)])


def test_static_graph_pads_with_the_last_item_and_reuses_its_output_buffer():
    calls = []

    def function(x, y):
        calls.append(x.clone())
        return x * 2 + y

    graph = StaticGraph(function, [torch.zeros(4, 3), torch.zeros(3)], [0, None], capture=False)
    out = graph(torch.arange(6.0).reshape(2, 3), torch.ones(3))
    assert torch.equal(calls[-1], torch.tensor([[0.0, 1, 2], [3, 4, 5], [3, 4, 5], [3, 4, 5]]))
    assert torch.equal(out[:2], torch.tensor([[1.0, 3, 5], [7, 9, 11]]))
    again = graph(torch.ones(4, 3), torch.zeros(3))
    assert again is out and torch.equal(out, torch.full((4, 3), 2.0))  # overwritten: callers must copy


def test_static_graph_capture_needs_cuda():
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        CudaGraphEngine(None, torch.device("cpu"), "fp32", capture=True)  # checked before the stages are read


def test_engine_matches_eager_for_every_batch_split(tiny_segmenter, tiny_stages, tiny_pixels):
    eager = TorchEngine(tiny_stages, torch.device("cpu"), "fp32")
    graphs = CudaGraphEngine(tiny_stages, torch.device("cpu"), "fp32", buckets=BUCKETS, capture=False)
    for count in (1, 3, 5, 8, 9):  # exact buckets, padded, and more than the largest bucket
        pixels = tiny_pixels[:count]
        expected = eager.encode_images(pixels)
        got = graphs.encode_images(pixels)
        assert got.shape == expected.shape
        tolerance = clipseg_tolerance(tiny_segmenter.model.config, TINY_IMAGE_SIZE)  # padded: other shapes
        assert_relative_close(got, expected, tolerance)
        index = torch.arange(count).repeat_interleave(2)
        embeddings = torch.randn(2 * count, tiny_stages.decoder.film_mul.in_features)
        assert_relative_close(graphs.decode(got, embeddings, index), eager.decode(expected, embeddings, index), tolerance)
    assert set(graphs.vision_graphs) == {1, 4, 8}  # 9 = 8 + 1
    assert (8, 16) in graphs.decoder_graphs and (4, 8) in graphs.decoder_graphs


def test_outputs_are_copies_not_the_static_buffers(tiny_stages, tiny_pixels):
    graphs = CudaGraphEngine(tiny_stages, torch.device("cpu"), "fp32", buckets=BUCKETS, capture=False)
    first = graphs.encode_images(tiny_pixels[:2])
    kept = first.clone()
    graphs.encode_images(tiny_pixels[2:4])  # the same bucket: the static output is overwritten
    assert torch.equal(first, kept)


def test_warm_captures_the_buckets_up_to_the_batch_size(tiny_stages):
    graphs = CudaGraphEngine(tiny_stages, torch.device("cpu"), "fp32", buckets=BUCKETS, capture=False)
    graphs.warm(3)
    assert sorted(graphs.vision_graphs) == [1, 2, 4]
    graphs.warm(100)
    assert sorted(graphs.vision_graphs) == list(BUCKETS)


def test_decoder_falls_back_to_eager_past_its_buckets_and_graph_budget(tiny_stages, tiny_pixels):
    graphs = CudaGraphEngine(tiny_stages, torch.device("cpu"), "fp32", buckets=BUCKETS, capture=False)
    activations = graphs.encode_images(tiny_pixels[:1])
    width = tiny_stages.decoder.film_mul.in_features
    many = PAIR_BUCKETS[-1] + 1
    out = graphs.decode(activations, torch.randn(many, width), torch.zeros(many, dtype=torch.long))
    assert out.shape[0] == many and not graphs.decoder_graphs
    for pairs in PAIR_BUCKETS[: MAX_DECODER_GRAPHS + 2]:
        graphs.decode(activations, torch.randn(pairs, width), torch.zeros(pairs, dtype=torch.long))
    assert len(graphs.decoder_graphs) == min(MAX_DECODER_GRAPHS, len(PAIR_BUCKETS))


def test_fp16_stages_on_the_cpu_stay_close_to_fp32(tiny_stages, tiny_pixels):
    eager = TorchEngine(tiny_stages, torch.device("cpu"), "fp32")
    half = TorchEngine(tiny_stages, torch.device("cpu"), "fp16")
    assert next(half.vision.parameters()).dtype == torch.float16
    assert next(half.prompt.parameters()).dtype == torch.float32  # the prompt stage stays fp32
    index = torch.tensor([0, 1, 1])
    embeddings = eager.encode_prompts(torch.randint(1, 50, (3, 6)))
    expected = eager.decode(eager.encode_images(tiny_pixels[:2]), embeddings, index)
    got = half.decode(half.encode_images(tiny_pixels[:2]), embeddings, index)
    assert got.dtype == torch.float32
    assert_relative_close(got, expected, TINY_HALF_TOLERANCE)


def test_cuda_backends_and_fp16_refuse_the_cpu_clearly(tiny_stages):
    with pytest.raises(ValueError, match="backend 'cudagraphs' does not run on cpu"):
        create_engine("cudagraphs", tiny_stages, "cpu", "fp16")
    with pytest.raises(ValueError, match="precision 'fp16' is not available for backend 'torch' on cpu"):
        create_engine("torch", tiny_stages, "cpu", "fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            create_engine("cudagraphs", tiny_stages, "cuda", "fp16")


# -- on CUDA --------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_replayed_graphs_equal_eager_on_cuda(tiny_stages, tiny_pixels, precision):
    stages = copy.deepcopy(tiny_stages)
    device = torch.device("cuda")
    eager = TorchEngine(stages, device, precision)
    graphs = CudaGraphEngine(stages, device, precision, buckets=BUCKETS)
    graphs.warm(8)
    width = stages.decoder.film_mul.in_features
    for count in (1, 3, 8, 9):
        pixels = tiny_pixels[:count].to(device)
        index = torch.arange(count, device=device).repeat_interleave(2)
        embeddings = torch.randn(2 * count, width, device=device)
        expected = eager.decode(eager.encode_images(pixels), embeddings, index)
        # Padded rows are computed but each row depends only on its own input: equal, not close.
        # (A kernel may be chosen per batch size, so a padded bucket is compared with tolerance.)
        got = graphs.decode(graphs.encode_images(pixels), embeddings, index)
        if count in BUCKETS:
            assert torch.equal(got, expected)
        else:
            assert_relative_close(got.cpu(), expected.cpu(), 1e-2 if precision != "fp32" else 1e-5)


@needs_cuda
@pytest.mark.fullsize
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("backend", ["torch", "cudagraphs"])
def test_cuda_backends_against_transformers_fullsize(fullsize_model, backend, precision, monkeypatch):
    from helpers.parity import reference_logits

    # TF32 off before the graphs are captured: fp32 then differs from the CPU reference only in
    # summation order, and is held to tests/test_cuda.py's bound.
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)

    if not (SHARED_DATA / "rd64-uni-refined.pth").is_file():
        pytest.skip("the real decoder weights (../shared/data/rd64-uni-refined.pth) are absent")
    model, processor, reference = fullsize_model
    prompts = [["a cat", "the red car"], ["a dog", "a tree"], ["a person"]]
    pixel_values = reference.pixel_values([natural_image(480, 640, seed=s) for s in range(len(prompts))])
    expected = reference_logits(model, processor.tokenizer, pixel_values, prompts)
    segmenter = FastSegmenter(copy.deepcopy(model), processor, device="cuda", precision=precision,
                              backend=backend, cache=False)
    got = torch.cat(segmenter.predict_logits(pixel_values, prompts))
    if precision == "fp32":
        assert_relative_close(got, expected, 1e-4)
    agreement = ((got > 0) == (expected > 0)).float().mean().item()
    assert agreement >= MASK_AGREEMENT, f"{backend} {precision} mask agreement {agreement:.5f}"
