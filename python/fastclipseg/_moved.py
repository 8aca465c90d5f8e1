"""Deprecation shims for the modules that moved when the package was regrouped (issue 15).

`import fastclipseg.image_prompts` (and every other old path in `MOVED`) still works: it warns
with a `DeprecationWarning` naming the new place and gives the new module itself, so old and new
names are the same objects. One table and one import hook rather than a file per old name, so
the package's folders hold only what is really there.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

MOVED = {
    "fastclipseg.imaging": "fastclipseg.ops.validation",
    "fastclipseg.preprocess": "fastclipseg.ops.image_processor",
    "fastclipseg.rle": "fastclipseg.ops.rle",
    "fastclipseg.gpu": "fastclipseg.ops.device",
    "fastclipseg.gpu.preprocess": "fastclipseg.ops.device.preprocess",
    "fastclipseg.gpu.postprocess": "fastclipseg.ops.device.postprocess",
    "fastclipseg.gpu.upload": "fastclipseg.ops.device.upload",
    "fastclipseg.gpu.processing": "fastclipseg.ops.device.processing",
    "fastclipseg.export_processor": "fastclipseg.model.export_processor",
    "fastclipseg.expressions": "fastclipseg.prompts.expressions",
    "fastclipseg.image_prompts": "fastclipseg.prompts.image_prompts",
    "fastclipseg.refine": "fastclipseg.session",
    "fastclipseg.sources": "fastclipseg.streams.sources",
    "fastclipseg.pipeline": "fastclipseg.streams.pipeline",
    "fastclipseg.smoothing": "fastclipseg.streams.smoothing",
    "fastclipseg.runs": "fastclipseg.streams.runs",
    "fastclipseg.io": "fastclipseg.streams.writers",
    "fastclipseg.jobs": "fastclipseg.streams.jobs",
    "fastclipseg.benchmarking": "fastclipseg.bench.measure",
    "fastclipseg.flops": "fastclipseg.bench.flops",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name of `MOVED` and loads it as the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname == "fastclipseg.gpu")

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}: import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        pass  # the module at its new place has run already


def install() -> None:
    """Add the finder once (idempotent: reloading the package does not add a second)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        # First in line: an old name under a moved package ("fastclipseg.gpu.processing") would
        # otherwise be found by the path finder in the new package's folder and run a second time.
        sys.meta_path.insert(0, _MovedModuleFinder())
