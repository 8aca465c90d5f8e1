"""Native pre- and post-processing around the network (thin typed wrappers over `fastclipseg._core`).

- `preprocess(images, size, mean, std, ...)`: uint8 frames -> ``(N, 3, S, S)`` network input,
  bit-identical to the transformers CLIPSeg image processor; `resize` gives the resized pixels.
- `postprocess(logits, size, threshold, ...)`: logits -> masks, probabilities, COCO RLE, areas,
  boxes and scores in one pass; `upsample` gives the upsampled logits alone.

The functions shadow their submodules' names here (``fastclipseg.ops.preprocess`` is the function);
reach a submodule itself with ``importlib.import_module("fastclipseg.ops.preprocess")``.
"""

from __future__ import annotations

from .postprocess import Postprocessed, postprocess, upsample
from .preprocess import preprocess, resize

__all__ = ["Postprocessed", "postprocess", "preprocess", "resize", "upsample"]
