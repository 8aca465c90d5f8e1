"""Connected components of a mask, backed by native kernels (`fastclipseg._core`).

- `label(mask, connectivity=8)`: ``(labels, count)``, an ``(h, w)`` int32 array with 0 for the
  background and 1..count for the components, numbered in raster order of their first pixel, as
  ``scipy.ndimage.label`` numbers them (``structure=np.ones((3, 3))`` for 8-connectivity, its
  default cross for 4); one labelling pass and one relabelling pass, GIL released.
- `measure(labels, count)`: ``(area, bbox)``, each component's pixel count and COCO
  ``[x, y, width, height]`` box, in one pass.
- `encode(labels, count)`: each component's COCO RLE (as `fastclipseg.ops.rle.encode` of its
  mask), in one column-major pass rather than one full-size comparison per component.

Why native: scipy is not a dependency of the package (only of its tests), and the kernels are
what the C++ API offers too (``fastclipseg/instances.hpp``).
"""

from __future__ import annotations

import numpy as np

from .. import _core

CONNECTIVITIES = (4, 8)


def label(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """``(labels, count)`` of the connected components of a 2-D bool or uint8 mask (nonzero is
    foreground). `connectivity`: 4 (pixels that share an edge) or 8 (an edge or a corner)."""
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    labels, count = _core.instances_label(mask, int(connectivity))
    return labels, int(count)


def measure(labels: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(area, bbox)`` of components 1..count of an int32 labelling: ``(count,)`` uint64 areas and
    ``(count, 4)`` uint32 COCO boxes ``[x, y, width, height]`` (all zero for a number no pixel has)."""
    area, bbox = _core.instances_measure(labels, int(count))
    return area, bbox


def encode(labels: np.ndarray, count: int) -> list[dict]:
    """The COCO RLE ``{"size": [h, w], "counts": str}`` of components 1..count of an int32
    labelling (entry i is component i + 1), each equal to `fastclipseg.ops.rle.encode` of
    ``labels == i + 1``."""
    height, width = labels.shape
    return [{"size": [int(height), int(width)], "counts": counts}
            for counts in _core.instances_encode(labels, int(count))]
