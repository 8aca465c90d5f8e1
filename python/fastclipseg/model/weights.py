"""A model folder's weights into `StandaloneCLIPSeg`, without transformers.

Reads `model.safetensors` (memory-mapped), the shards of `model.safetensors.index.json`, or
`pytorch_model.bin` (`torch.load(weights_only=True)`: tensors only, no code), and assigns them to
a tree built on the meta device, so no random initialisation runs and no copy is made. Unlike
transformers, which fills absent weights with random values and ignores extra ones (logging
both), every missing, extra or mis-shaped tensor is a `ModelLoadError` naming the file: a
checkpoint that does not fit its config.json is a damaged folder, not a model.

transformers 5 applies no key renames to CLIPSeg checkpoints (its "legacy" renames concern
`LayerNorm.gamma/beta` and weight-norm names, which CLIPSeg does not have); the only difference
between checkpoint generations is the `position_ids` buffers that checkpoints written before
transformers 4.31 hold, which are ignored here as transformers ignores them.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from .files import ModelLoadError, first_line, read_json_object
from .standalone import StandaloneCLIPSeg
from .standalone_config import ClipSegConfig

WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_LEGACY_BUFFER = re.compile(r"(^|\.)embeddings\.position_ids$")


def weights_file(folder: Path) -> str:
    """The name of the weights file transformers would read in `folder` (its order of preference)."""
    for name in WEIGHTS_FILES:
        if (folder / name).is_file():
            return name
    return WEIGHTS_FILES[0]


def read_state_dict(folder: Path, fix: str) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weights file (or shards), by name, on the CPU."""
    name = weights_file(folder)
    path = folder / name
    if name == "model.safetensors":
        return _read_safetensors(path, fix)
    if name == "model.safetensors.index.json":
        state: dict[str, torch.Tensor] = {}
        shards = read_json_object(path, fix).get("weight_map", {})
        for shard in sorted(set(shards.values())):
            state.update(_read_safetensors(folder / shard, fix))
        return state
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except MemoryError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as error:
        # torch's message suggests weights_only=False, which would run code from the file: not relayed.
        raise ModelLoadError(f"{path} is not a PyTorch weights file that holds only tensors "
                             f"({type(error).__name__}): {fix}") from error
    if not isinstance(state, dict) or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                              for key, value in state.items()):
        raise ModelLoadError(f"{path} does not hold a plain state dict (tensors by name): {fix}")
    return state


def _read_safetensors(path: Path, fix: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except MemoryError:
        raise
    except Exception as error:  # safetensors raises its own SafetensorError and others for a damaged file
        raise ModelLoadError(f"{path} cannot be read as safetensors ({first_line(error)}): {fix}") from error


def _dtype(config: ClipSegConfig, state: dict[str, torch.Tensor]) -> torch.dtype:
    """transformers 5's dtype="auto": config.json's dtype, else the checkpoint's first floating dtype."""
    named = config.weights_dtype()
    if named is not None:
        return named
    return next((t.dtype for t in state.values() if t.is_floating_point()), torch.get_default_dtype())


def _examples(keys: list[str]) -> str:
    return ", ".join(keys[:3])


def load_standalone_model(config: ClipSegConfig, state: dict[str, torch.Tensor], where: str, weights: str,
                          fix: str) -> StandaloneCLIPSeg:
    """`StandaloneCLIPSeg(config)` holding the tensors of `state` (cast to the model's dtype), in eval mode.

    `where` (the folder), `weights` (the file's name) and `fix` (what to do) go into the errors."""
    with torch.device("meta"):
        model = StandaloneCLIPSeg(config)
    expected = model.state_dict()
    state = {key: tensor for key, tensor in state.items() if not _LEGACY_BUFFER.search(key)}
    mismatched = sorted(key for key, tensor in state.items()
                        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape))
    if mismatched:
        raise ModelLoadError(
            f"{where}: the weights in {weights} do not have the shapes config.json describes ({len(mismatched)} "
            f"tensors, e.g. {_examples(mismatched)}): the two files belong to different models; {fix}")
    missing = sorted(key for key in expected if key not in state)
    if missing:
        raise ModelLoadError(
            f"{where}: {weights} lacks {len(missing)} of the model's weights (e.g. {_examples(missing)}), which "
            f"would be left random: it is not a whole CLIPSeg checkpoint; {fix}")
    unexpected = sorted(key for key in state if key not in expected)
    if unexpected:
        raise ModelLoadError(
            f"{where}: {weights} holds {len(unexpected)} tensors the model config.json describes does not have "
            f"(e.g. {_examples(unexpected)}): the two files belong to different models; {fix}")
    dtype = _dtype(config, state)
    cast = {key: tensor.to(dtype) if tensor.is_floating_point() else tensor for key, tensor in state.items()}
    model.load_state_dict(cast, strict=True, assign=True)
    return model.eval()


__all__ = ["WEIGHTS_FILES", "load_standalone_model", "read_state_dict", "weights_file"]
