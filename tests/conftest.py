"""Shared fixtures: tiny random models built once per test session, and the ../shared data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.shared import SHARED_DATA
from helpers.tiny_models import save_tiny_model


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (it exists on development and CI machines only)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random CLIPSeg saved as a local folder in the transformers layout."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-clipseg"))


@pytest.fixture(scope="session")
def tiny_reference(tiny_model_dir):
    """The transformers model and processor loaded from the tiny folder.

    The processor's PIL backend is asked for by name: it is what fastclipseg's preprocessing
    replicates bit for bit, and transformers would pick its torchvision backend (whose
    antialiased resize differs by a level on some pixels) wherever torchvision is installed.
    """
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    model = CLIPSegForImageSegmentation.from_pretrained(tiny_model_dir).eval()
    return model, CLIPSegProcessor.from_pretrained(tiny_model_dir, backend="pil")


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_model_dir):
    from fastclipseg import FastSegmenter

    return FastSegmenter.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session", autouse=True)
def _private_engine_cache(tmp_path_factory):
    """Compiled engines go to a folder of this test session, never to the user's cache."""
    import os

    previous = os.environ.get("FASTCLIPSEG_CACHE")
    os.environ["FASTCLIPSEG_CACHE"] = str(tmp_path_factory.mktemp("engine-cache"))
    yield
    if previous is None:
        os.environ.pop("FASTCLIPSEG_CACHE", None)
    else:
        os.environ["FASTCLIPSEG_CACHE"] = previous


@pytest.fixture(scope="session")
def fullsize_model():
    """The full-size CIDAS/clipseg-rd64-refined architecture (random CLIP weights), built once per session.

    The real refined decoder and CLIP vocabulary from ../shared/data are used when present, so the
    logits are in a realistic range. Returns (model, processor, fp32 torch FastSegmenter).
    """
    from fastclipseg import FastSegmenter
    from fastclipseg.model.random_model import random_reference_model

    decoder = SHARED_DATA / "rd64-uni-refined.pth"
    vocab = SHARED_DATA / "bpe_simple_vocab_16e6.txt.gz"
    model, processor = random_reference_model(
        decoder_checkpoint=decoder if decoder.is_file() else None,
        bpe_vocab=vocab if vocab.is_file() else None,
    )
    return model, processor, FastSegmenter(model, processor)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Reproducible reductions: the parity tolerances are stated for a fixed thread count.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
