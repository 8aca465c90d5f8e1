"""What the demo's tests share: a folder of small images for `--images` / `images_dir`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def demo_images(tmp_path_factory) -> Path:
    """Two images (one in a subfolder, so the listing is recursive) and a file that is not one."""
    folder = tmp_path_factory.mktemp("demo-images")
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(folder / "street.png")
    (folder / "more").mkdir()
    Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(folder / "more" / "room.jpg")
    (folder / "notes.txt").write_text("not an image\n")
    return folder
