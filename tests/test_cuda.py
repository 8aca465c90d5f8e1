"""The torch engine on a CUDA device (fp32) against the CPU transformers reference.

Skipped where PyTorch sees no CUDA device (CI and the development machines have none); run on a
GPU machine with `python -m pytest tests/test_cuda.py`. fp32 on the GPU runs other kernels than
on the CPU (TF32 is switched off here, so only summation order differs): the bound is 1e-4 of the
largest reference logit, the fp32 tolerance issue 4 states for compiled backends.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from fastclipseg import FastSegmenter
from fastclipseg.bench.measure import natural_image
from fastclipseg.model.random_model import random_reference_model
from helpers.parity import assert_relative_close, reference_logits
from helpers.shared import SHARED_DATA

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (PyTorch sees none)")

GPU_FP32_TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def _no_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_tiny_model_on_cuda_matches_cpu(tiny_model_dir):
    cpu = FastSegmenter.from_pretrained(tiny_model_dir)
    gpu = FastSegmenter.from_pretrained(tiny_model_dir, device="cuda")
    assert next(gpu.stages.parameters()).device.type == "cuda"
    image = natural_image(90, 120, seed=4)
    expected = cpu.segment(image, ["a cat", "red dog"])
    got = gpu.segment(image, ["a cat", "red dog"])
    assert isinstance(got.logits, np.ndarray) and got.logits.dtype == np.float32
    assert_relative_close(torch.from_numpy(got.logits), torch.from_numpy(expected.logits), GPU_FP32_TOLERANCE)
    assert got.masks.shape == (2, 90, 120)


@pytest.mark.fullsize
def test_fullsize_on_cuda_matches_transformers_on_cpu():
    decoder = SHARED_DATA / "rd64-uni-refined.pth"
    vocab = SHARED_DATA / "bpe_simple_vocab_16e6.txt.gz"
    model, processor = random_reference_model(
        decoder_checkpoint=decoder if decoder.is_file() else None, bpe_vocab=vocab if vocab.is_file() else None
    )
    prompts_per_image = [["a cat", "the red car"], ["a tree"]]
    cpu_segmenter = FastSegmenter(model, processor)
    pixel_values = cpu_segmenter.pixel_values([natural_image(240, 320, seed=i) for i in range(2)])
    expected = reference_logits(model, processor.tokenizer, pixel_values, prompts_per_image)

    # The engine moves the stages (which share the model's parameters) to the device: use a copy.
    gpu_segmenter = FastSegmenter(copy.deepcopy(model), processor, device="cuda")
    got = torch.cat(gpu_segmenter.predict_logits(pixel_values, prompts_per_image))
    assert got.device.type == "cpu"
    assert_relative_close(got, expected, GPU_FP32_TOLERANCE)
    agreement = ((got > 0) == (expected > 0)).float().mean().item()
    assert agreement >= 0.999, f"mask agreement {agreement:.5f}"


def test_export_from_a_cuda_segmenter_leaves_its_weights_on_the_gpu(tiny_model_dir, tmp_path):
    # Compiling traces on the CPU; the segmenter's own (shared) weights must go back to the GPU.
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, device="cuda")
    segmenter.export(tmp_path / "export", backend="torchscript")
    assert next(segmenter.stages.parameters()).device.type == "cuda"
    assert segmenter.segment(natural_image(20, 30), "a cat").masks.shape == (1, 20, 30)
