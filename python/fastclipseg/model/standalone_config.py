"""A model folder's config.json as a CLIPSeg configuration, read without transformers.

`ClipSegConfig` has the attribute names of transformers' `CLIPSegConfig` (with `text_config` and
`vision_config` sub-objects), which is all that fastclipseg and `StandaloneCLIPSeg` read.
transformers' `save_pretrained` leaves out values equal to its defaults, and older configs carry
fewer fields, so absent fields take the defaults below: a snapshot of transformers' own
(`CLIPSegConfig()`, `CLIPSegTextConfig()`, `CLIPSegVisionConfig()` in transformers 5.25; a test
compares them with the installed transformers, so drift is caught).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from .files import REPLACE_MODEL_FILE, ModelLoadError, read_json_object

TEXT_DEFAULTS = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
    "pad_token_id": 1,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
}
VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
}
CLIPSEG_DEFAULTS = {
    "projection_dim": 512,
    "logit_scale_init_value": 2.6592,
    "initializer_factor": 1.0,
    "extract_layers": [3, 6, 9],
    "reduce_dim": 64,
    "decoder_num_attention_heads": 4,
    "decoder_attention_dropout": 0.0,
    "decoder_hidden_act": "quick_gelu",
    "decoder_intermediate_size": 2048,
    "conditional_layer": 0,
    "use_complex_transposed_convolution": False,
}

# Fields the module tree is built from: each must be a positive int.
_SIZES = {
    "text_config": ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "max_position_embeddings"),
    "vision_config": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                      "image_size", "patch_size"),
    "": ("projection_dim", "reduce_dim", "decoder_num_attention_heads", "decoder_intermediate_size"),
}
_FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float64": torch.float64}


class SubConfig(SimpleNamespace):
    """`text_config` or `vision_config`: the JSON object's fields as attributes, over the defaults."""

    model_type: str

    def to_dict(self) -> dict:
        return copy.deepcopy(vars(self))


class ClipSegConfig(SimpleNamespace):
    """config.json of a CLIPSeg model folder, with transformers' attribute names and defaults."""

    model_type = "clipseg"

    @classmethod
    def from_dict(cls, data: dict, source: Path | str = "config.json", fix: str = REPLACE_MODEL_FILE) -> ClipSegConfig:
        """The configuration `data` (a parsed config.json) describes; `ModelLoadError` naming
        `source`, the field and `fix` (what to do) when a value cannot build a model."""
        data = copy.deepcopy(data)
        sub_configs = {}
        for name, defaults, model_type in (("text_config", TEXT_DEFAULTS, "clipseg_text_model"),
                                           ("vision_config", VISION_DEFAULTS, "clipseg_vision_model")):
            given = data.pop(name, None) or {}
            # Configs written by transformers 4 before 4.25 may hold the values in "<name>_dict";
            # transformers then builds the sub-config from that dict alone (over the defaults).
            legacy = data.pop(f"{name}_dict", None)
            if legacy is not None:
                given = legacy
            if not isinstance(given, dict):
                raise ModelLoadError(f"{source}: {name} must be an object, got {type(given).__name__}: {fix}")
            sub_configs[name] = SubConfig(**{**defaults, "model_type": model_type, **given})
        fields = {**CLIPSEG_DEFAULTS, **data}
        fields.pop("model_type", None)
        config = cls(**fields, **sub_configs)
        config._check(source, fix)
        return config

    @classmethod
    def from_json_file(cls, path: Path, fix: str = REPLACE_MODEL_FILE) -> ClipSegConfig:
        return cls.from_dict(read_json_object(path, fix), path, fix)

    def to_dict(self) -> dict:
        data = {name: copy.deepcopy(value) for name, value in vars(self).items()}
        data["text_config"] = self.text_config.to_dict()
        data["vision_config"] = self.vision_config.to_dict()
        data["model_type"] = self.model_type
        return data

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def weights_dtype(self) -> torch.dtype | None:
        """The dtype config.json names ("dtype", or "torch_dtype" before transformers 5), if any:
        transformers 5 loads the weights in it."""
        name = getattr(self, "dtype", None) or getattr(self, "torch_dtype", None)
        return _FLOAT_DTYPES.get(name) if isinstance(name, str) else None

    def _check(self, source: Path | str, fix: str) -> None:
        def fail(message: str):
            raise ModelLoadError(f"{source}: {message}: {fix}")

        for owner, names in _SIZES.items():
            holder = getattr(self, owner) if owner else self
            for name in names:
                value = getattr(holder, name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    fail(f"{owner + '.' if owner else ''}{name} must be a positive integer, got {value!r}")
        for owner in ("text_config", "vision_config"):
            holder = getattr(self, owner)
            if holder.hidden_size % holder.num_attention_heads:
                fail(f"{owner}.hidden_size {holder.hidden_size} is not a multiple of num_attention_heads "
                     f"{holder.num_attention_heads}")
            eps = holder.layer_norm_eps
            if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
                fail(f"{owner}.layer_norm_eps must be a positive number, got {eps!r}")
            if not isinstance(holder.hidden_act, str):
                fail(f"{owner}.hidden_act must be a string, got {holder.hidden_act!r}")
        if self.reduce_dim % self.decoder_num_attention_heads:
            fail(f"reduce_dim {self.reduce_dim} is not a multiple of decoder_num_attention_heads "
                 f"{self.decoder_num_attention_heads}")
        layers = self.extract_layers
        depth = self.vision_config.num_hidden_layers
        if (not isinstance(layers, (list, tuple)) or not layers
                or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < depth for i in layers)):
            fail(f"extract_layers must be a non-empty list of layer indices of the vision tower (0 .. {depth - 1}), "
                 f"got {layers!r}")
        conditional = self.conditional_layer
        if isinstance(conditional, bool) or not isinstance(conditional, int):
            fail(f"conditional_layer must be an integer, got {conditional!r}")
        if not isinstance(self.use_complex_transposed_convolution, bool):
            fail(f"use_complex_transposed_convolution must be true or false, got "
                 f"{self.use_complex_transposed_convolution!r}")
        if self.use_complex_transposed_convolution and self.vision_config.patch_size < 4:
            fail(f"the complex transposed convolution needs vision_config.patch_size >= 4, got "
                 f"{self.vision_config.patch_size}")
        eos = self.text_config.eos_token_id
        if isinstance(eos, bool) or not isinstance(eos, int):
            fail(f"text_config.eos_token_id must be an integer, got {eos!r}")


__all__ = ["CLIPSEG_DEFAULTS", "TEXT_DEFAULTS", "VISION_DEFAULTS", "ClipSegConfig", "SubConfig"]
