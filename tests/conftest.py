"""Shared fixtures: tiny random models built once per test session, and the ../shared data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tiny_models import save_tiny_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Reproducible reductions: the parity tolerances are stated for a fixed thread count.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
