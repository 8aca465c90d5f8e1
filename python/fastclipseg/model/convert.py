"""Convert original CLIPSeg checkpoints (github.com/timojl/clipseg) to the transformers layout.

The original ``CLIPDensePredT`` keeps OpenAI's ``clip`` package model under ``clip_model.`` and its
decoder at the top level (``film_mul``, ``reduces.N``, ``blocks.N`` as ``nn.TransformerEncoderLayer``,
``trans_conv``). The released decoder files (``rd64-uni*.pth``) hold the decoder only; the CLIP
ViT-B/16 weights then come from a separate OpenAI-layout state dict.

Every input key is either mapped, or dropped for a stated reason, or rejected: nothing is left
over silently.

What was verified against the original source (timojl/clipseg, ``models/clipseg.py``):

* ``CLIPDenseBase.__init__`` defines ``self.reduce = nn.Linear(768, reduce_dim)``, but
  ``CLIPDensePredT.forward`` only reads ``self.reduces[i]`` (plural); ``self.reduce`` is read only by
  ``CLIPDenseBaseline.forward``, a different model. So ``reduce.*`` is dead weight for CLIPSeg.
* ``CLIPDenseBase.__init__`` sets ``self.model = self.clip_model.visual``; a full-model state dict
  therefore holds every visual tensor twice, as ``clip_model.visual.*`` and ``model.*``.
* ``blocks`` are ``nn.TransformerEncoderLayer(d_model=reduce_dim, nhead=n_heads)``: post-norm, ReLU,
  dim_feedforward 2048, in_proj rows ordered q, k, v -- which is what ``CLIPSegDecoderLayer`` computes.
* ``complex_trans_conv`` builds ``trans_conv`` as Sequential(Conv2d 3x3, ReLU, ConvTranspose2d k=p/4,
  ReLU, ConvTranspose2d k=p/4), so the weights sit at indices 0, 2, 4; otherwise ``trans_conv`` is a
  single ConvTranspose2d with kernel = patch size.
"""

from __future__ import annotations

import copy
import inspect
import json
import re
import shutil
import uuid
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
import transformers
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor

from .configs import reference_config
from .tokenizer_files import load_clip_tokenizer, write_clip_tokenizer_files

# How error messages name the caller's options: the Python API's keywords, or the command line's
# flags (`fastclipseg convert` passes CLI_OPTION_NAMES), so that each user reads the names they typed.
PYTHON_OPTION_NAMES = {"clip": "clip_path", "random_clip": "allow_random_clip=True",
                       "torchscript": "allow_torchscript=True", "vocab": "vocab_path", "overwrite": "overwrite=True"}
CLI_OPTION_NAMES = {"clip": "--clip", "random_clip": "--allow-random-clip", "torchscript": "--allow-torchscript",
                    "vocab": "--vocab", "overwrite": "--force"}

StateDict = Mapping[str, torch.Tensor]

COMBINED_CLIP_PREFIX = "clip_model."
VISUAL_ALIAS_PREFIX = "model."  # CLIPDenseBase: self.model = self.clip_model.visual
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")

KNOWN_UNUSED_DECODER_KEYS = {
    "reduce.weight": "unused by the original forward pass, dropped "
    "(CLIPDensePredT.forward reads reduces.N only; transformers has no place for it)",
    "reduce.bias": "unused by the original forward pass, dropped "
    "(CLIPDensePredT.forward reads reduces.N only; transformers has no place for it)",
}
ALIAS_REASON = "duplicate of clip_model.visual.* (the original sets self.model = self.clip_model.visual), dropped"
METADATA_REASON = "OpenAI JIT metadata scalar, not a weight (implied by tensor shapes; checked), dropped"

# Image preprocessing of the released CLIPSeg models (CIDAS/clipseg-rd64-refined).
IMAGE_SIZE = 352
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


# ---------------------------------------------------------------------------------------------
# Key mapping rules
# ---------------------------------------------------------------------------------------------

COPY, TRANSPOSE, SPLIT_QKV = "copy", "transpose", "split_qkv"


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern
    target: str  # re.Match.expand template; split rules put "{qkv}" where q/k/v goes
    transform: str = COPY


def _rules(specs: list[tuple]) -> list[_Rule]:
    return [_Rule(re.compile(spec[0]), *spec[1:]) for spec in specs]


DECODER_RULES = _rules(
    [
        (r"film_(mul|add)\.(weight|bias)", r"decoder.film_\1.\2"),
        (r"reduces\.(\d+)\.(weight|bias)", r"decoder.reduces.\1.\2"),
        (r"trans_conv\.(weight|bias)", r"decoder.transposed_convolution.\1"),
        (r"trans_conv\.([024])\.(weight|bias)", r"decoder.transposed_convolution.\1.\2"),
        (r"blocks\.(\d+)\.self_attn\.in_proj_(weight|bias)", r"decoder.layers.\1.self_attn.{qkv}_proj.\2", SPLIT_QKV),
        (r"blocks\.(\d+)\.self_attn\.out_proj\.(weight|bias)", r"decoder.layers.\1.self_attn.out_proj.\2"),
        (r"blocks\.(\d+)\.linear([12])\.(weight|bias)", r"decoder.layers.\1.mlp.fc\2.\3"),
        (r"blocks\.(\d+)\.norm([12])\.(weight|bias)", r"decoder.layers.\1.layer_norm\2.\3"),
    ]
)


def _resblock_specs(src: str, dst: str) -> list[tuple]:
    """OpenAI ResidualAttentionBlock -> transformers CLIPSegEncoderLayer, for one tower."""
    src = re.escape(src) + r"\.resblocks\.(\d+)\."
    dst = dst + r".encoder.layers.\1."
    return [
        (src + r"attn\.in_proj_(weight|bias)", dst + r"self_attn.{qkv}_proj.\2", SPLIT_QKV),
        (src + r"attn\.out_proj\.(weight|bias)", dst + r"self_attn.out_proj.\2"),
        (src + r"ln_([12])\.(weight|bias)", dst + r"layer_norm\2.\3"),
        (src + r"mlp\.c_fc\.(weight|bias)", dst + r"mlp.fc1.\2"),
        (src + r"mlp\.c_proj\.(weight|bias)", dst + r"mlp.fc2.\2"),
    ]


CLIP_RULES = _rules(
    _resblock_specs("visual.transformer", "clip.vision_model")
    + _resblock_specs("transformer", "clip.text_model")
    + [
        (r"visual\.conv1\.weight", "clip.vision_model.embeddings.patch_embedding.weight"),
        (r"visual\.class_embedding", "clip.vision_model.embeddings.class_embedding"),
        (r"visual\.positional_embedding", "clip.vision_model.embeddings.position_embedding.weight"),
        (r"visual\.ln_pre\.(weight|bias)", r"clip.vision_model.pre_layrnorm.\1"),
        (r"visual\.ln_post\.(weight|bias)", r"clip.vision_model.post_layernorm.\1"),
        # OpenAI stores projections as x @ proj; nn.Linear wants the transpose.
        (r"visual\.proj", "clip.visual_projection.weight", TRANSPOSE),
        (r"token_embedding\.weight", "clip.text_model.embeddings.token_embedding.weight"),
        (r"positional_embedding", "clip.text_model.embeddings.position_embedding.weight"),
        (r"ln_final\.(weight|bias)", r"clip.text_model.final_layer_norm.\1"),
        (r"text_projection", "clip.text_projection.weight", TRANSPOSE),
        (r"logit_scale", "clip.logit_scale"),
    ]
)


def _apply_rule(rule: _Rule, match: re.Match, key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    target = match.expand(rule.target)
    if rule.transform == TRANSPOSE:
        if tensor.ndim != 2:
            raise ValueError(f"{key}: expected a 2-D projection matrix, got shape {tuple(tensor.shape)}")
        # contiguous copies: safetensors refuses tensors that share storage
        return {target: tensor.t().contiguous()}
    if rule.transform == SPLIT_QKV:
        rows = tensor.shape[0]
        square = tensor.ndim == 1 or tensor.shape[1] * 3 == rows
        if rows % 3 or not square:
            shape = tuple(tensor.shape)
            raise ValueError(f"{key}: expected an in_proj tensor with 3*d rows (q, k, v), got shape {shape}")
        q, k, v = tensor.chunk(3, dim=0)  # nn.MultiheadAttention stacks in_proj as [q; k; v]
        return {target.replace("{qkv}", name): part.clone() for name, part in zip("qkv", (q, k, v))}
    return {target: tensor}


def _map_key(key: str, tensor: torch.Tensor, rules: list[_Rule]) -> dict[str, torch.Tensor] | None:
    for rule in rules:
        match = rule.pattern.fullmatch(key)
        if match:
            return _apply_rule(rule, match, key, tensor)
    return None


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


@dataclass
class ConversionReport:
    """What happened to every key.

    mapped: original key -> the transformers key(s) it became (3 for a split in_proj).
    dropped: original key -> why it was dropped.
    not_provided: transformers keys of the target model that no input supplied (for a
        decoder-only conversion: every ``clip.*`` key).
    config: the configuration the keys were checked against (given, or inferred from shapes).
    """

    mapped: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    not_provided: list[str] = field(default_factory=list)
    config: CLIPSegConfig | None = None

    def summary(self) -> str:
        counts = f"mapped {len(self.mapped)} keys, dropped {len(self.dropped)}, not provided {len(self.not_provided)}"
        lines = [counts]
        lines += [f"  dropped {key}: {reason}" for key, reason in sorted(self.dropped.items())]
        clip_missing = [k for k in self.not_provided if k.startswith("clip.")]
        other_missing = [k for k in self.not_provided if not k.startswith("clip.")]
        if clip_missing:
            lines.append(f"  not provided: {len(clip_missing)} clip.* keys")
        lines += [f"  not provided: {key}" for key in other_missing]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"mapped": self.mapped, "dropped": self.dropped, "not_provided": self.not_provided}


# ---------------------------------------------------------------------------------------------
# Splitting the inputs into decoder / CLIP parts
# ---------------------------------------------------------------------------------------------


@dataclass
class _Sources:
    decoder: dict[str, torch.Tensor]  # bare decoder keys
    clip: dict[str, torch.Tensor]  # bare OpenAI-layout keys
    clip_names: dict[str, str]  # bare OpenAI key -> the key as the caller gave it (for reports)
    dropped: dict[str, str]


def _check_tensors(sd: Mapping[str, Any], what: str) -> None:
    if not isinstance(sd, Mapping):
        raise ValueError(f"{what} must be a state dict (a mapping of names to tensors), got {type(sd).__name__}")
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{what} has non-tensor entries: {bad[:10]}")


def _split_sources(decoder_sd: StateDict, clip_sd: StateDict | None) -> _Sources:
    _check_tensors(decoder_sd, "decoder state dict")
    decoder = {k: v for k, v in decoder_sd.items() if not k.startswith((COMBINED_CLIP_PREFIX, VISUAL_ALIAS_PREFIX))}
    prefix_len = len(COMBINED_CLIP_PREFIX)
    combined_clip = {k[prefix_len:]: v for k, v in decoder_sd.items() if k.startswith(COMBINED_CLIP_PREFIX)}
    aliases = {k: v for k, v in decoder_sd.items() if k.startswith(VISUAL_ALIAS_PREFIX)}

    if combined_clip and clip_sd is not None:
        raise ValueError(
            f"the decoder state dict already holds CLIP weights under '{COMBINED_CLIP_PREFIX}'; "
            "do not pass a separate CLIP state dict as well"
        )
    if clip_sd is not None:
        _check_tensors(clip_sd, "CLIP state dict")
        clip, clip_names = dict(clip_sd), {k: k for k in clip_sd}
    else:
        clip, clip_names = combined_clip, {k: COMBINED_CLIP_PREFIX + k for k in combined_clip}

    dropped = {key: KNOWN_UNUSED_DECODER_KEYS[key] for key in decoder if key in KNOWN_UNUSED_DECODER_KEYS}
    dropped.update(_check_visual_aliases(aliases, combined_clip))
    for key in OPENAI_METADATA_KEYS:
        if key in clip:
            dropped[clip_names[key]] = METADATA_REASON
    return _Sources(decoder, clip, clip_names, dropped)


def _check_visual_aliases(aliases: StateDict, combined_clip: StateDict) -> dict[str, str]:
    """``model.X`` must be an exact copy of ``clip_model.visual.X``; then it can be dropped."""
    dropped = {}
    for key, tensor in aliases.items():
        twin = "visual." + key[len(VISUAL_ALIAS_PREFIX) :]
        if twin not in combined_clip:
            raise ValueError(
                f"{key} looks like an alias of {COMBINED_CLIP_PREFIX}{twin} (self.model = self.clip_model.visual) "
                f"but {COMBINED_CLIP_PREFIX}{twin} is not in the checkpoint"
            )
        other = combined_clip[twin]
        if other.shape != tensor.shape or not torch.equal(other, tensor):
            raise ValueError(f"{key} differs from {COMBINED_CLIP_PREFIX}{twin}; they should be the same tensor")
        dropped[key] = ALIAS_REASON
    return dropped


# ---------------------------------------------------------------------------------------------
# Configuration: what the tensor shapes imply
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fact:
    field: str  # config attribute path ("vision_config.hidden_size") or a derived name
    value: Any
    source: str  # the checkpoint key(s) it was read from


# Fields the config does not store directly; they can be checked but not inferred.
_DERIVED_FIELDS = {"num_extract_layers": lambda c: len(c.extract_layers)}


def _get_field(config: CLIPSegConfig, name: str) -> Any:
    if name in _DERIVED_FIELDS:
        return _DERIVED_FIELDS[name](config)
    obj = config
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _set_field(config: CLIPSegConfig, name: str, value: Any) -> None:
    *parents, last = name.split(".")
    obj = config
    for part in parents:
        obj = getattr(obj, part)
    setattr(obj, last, value)


def _layer_count(keys: list[str], pattern: str) -> int:
    """Number of layers = highest index + 1 among keys like ``<pattern>.N.``."""
    found = {int(m.group(1)) for k in keys if (m := re.match(re.escape(pattern) + r"\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


# (checkpoint key, shape dimension, config field it equals)
_DECODER_SHAPE_FACTS = [
    ("film_mul.weight", 0, "reduce_dim"),
    ("film_mul.weight", 1, "projection_dim"),
    ("reduces.0.weight", 1, "vision_config.hidden_size"),
    ("blocks.0.linear1.weight", 0, "decoder_intermediate_size"),
    ("trans_conv.weight", -1, "vision_config.patch_size"),  # simple: one ConvTranspose2d, kernel = patch
]
_CLIP_SHAPE_FACTS = [
    ("visual.conv1.weight", 0, "vision_config.hidden_size"),
    ("visual.conv1.weight", -1, "vision_config.patch_size"),
    ("visual.transformer.resblocks.0.mlp.c_fc.weight", 0, "vision_config.intermediate_size"),
    ("visual.proj", 1, "projection_dim"),
    ("text_projection", 1, "projection_dim"),
    ("ln_final.weight", 0, "text_config.hidden_size"),
    ("transformer.resblocks.0.mlp.c_fc.weight", 0, "text_config.intermediate_size"),
    ("token_embedding.weight", 0, "text_config.vocab_size"),
    ("positional_embedding", 0, "text_config.max_position_embeddings"),
]
# OpenAI JIT metadata scalars and the field each must agree with.
_CLIP_SCALAR_FACTS = {
    "input_resolution": "vision_config.image_size",
    "context_length": "text_config.max_position_embeddings",
    "vocab_size": "text_config.vocab_size",
}


def _shape_facts(sd: StateDict, table: list[tuple[str, int, str]], names: Mapping[str, str]) -> list[_Fact]:
    return [_Fact(name, int(sd[key].shape[dim]), names.get(key, key)) for key, dim, name in table if key in sd]


def _decoder_facts(dec: StateDict) -> list[_Fact]:
    facts = _shape_facts(dec, _DECODER_SHAPE_FACTS, {})
    for prefix in ("reduces", "blocks"):
        if n := _layer_count(list(dec), prefix):
            facts.append(_Fact("num_extract_layers", n, f"{prefix}.N"))
    if "trans_conv.weight" in dec:
        facts.append(_Fact("use_complex_transposed_convolution", False, "trans_conv.weight"))
    elif "trans_conv.0.weight" in dec:  # conv 3x3, then two ConvTranspose2d with kernel patch / 4
        facts.append(_Fact("use_complex_transposed_convolution", True, "trans_conv.0.weight"))
        if "trans_conv.2.weight" in dec:
            kernel = dec["trans_conv.2.weight"].shape[-1]
            facts.append(_Fact("vision_config.patch_size", kernel * 4, "trans_conv.2.weight"))
    return facts


def _clip_facts(clip: StateDict, names: Mapping[str, str]) -> list[_Fact]:
    facts = _shape_facts(clip, _CLIP_SHAPE_FACTS, names)
    shown_prefix = next((names[k][: len(names[k]) - len(k)] for k in names), "")  # "" or "clip_model."
    for prefix, name in (("visual.transformer.resblocks", "vision"), ("transformer.resblocks", "text")):
        if n := _layer_count(list(clip), prefix):
            facts.append(_Fact(f"{name}_config.num_hidden_layers", n, f"{shown_prefix}{prefix}.N"))
    if "visual.conv1.weight" in clip and "visual.positional_embedding" in clip:
        grid = round((clip["visual.positional_embedding"].shape[0] - 1) ** 0.5)  # +1: the class token
        image_size = grid * clip["visual.conv1.weight"].shape[-1]
        facts.append(_Fact("vision_config.image_size", image_size, names["visual.positional_embedding"]))
    for key, name in _CLIP_SCALAR_FACTS.items():
        if key in clip:
            facts.append(_Fact(name, int(clip[key].item()), names.get(key, key)))
    return facts


def _describe(fact: _Fact) -> str:
    return f"{fact.source} implies {fact.field} = {fact.value}"


def _check_heads(config: CLIPSegConfig) -> None:
    pairs = [
        ("vision_config", config.vision_config.hidden_size, config.vision_config.num_attention_heads),
        ("text_config", config.text_config.hidden_size, config.text_config.num_attention_heads),
        ("decoder (reduce_dim / decoder_num_attention_heads)", config.reduce_dim, config.decoder_num_attention_heads),
    ]
    bad = [
        f"{name}: width {width} is not divisible by {heads} heads"
        for name, width, heads in pairs
        if width % heads
    ]
    if bad:
        raise ValueError("invalid attention head count: " + "; ".join(bad))


def _infer_config(facts: list[_Fact], base: CLIPSegConfig | None = None) -> CLIPSegConfig:
    """The base config (default: :func:`reference_config`) with every shape-implied field set.

    Head counts are not visible in shapes: a tower whose width differs from the base gets
    OpenAI CLIP's rule (width // 64). Extract-layer indices are not visible either, so a
    checkpoint with a different number of them needs an explicit config.
    """
    base = base if base is not None else reference_config()
    config = copy.deepcopy(base)
    for name, group in _group_facts(facts).items():
        values = {f.value for f in group}
        if len(values) > 1:
            raise ValueError(f"the checkpoint contradicts itself about {name}: " + "; ".join(map(_describe, group)))
        value = values.pop()
        if name in _DERIVED_FIELDS:
            if _DERIVED_FIELDS[name](config) != value:
                raise ValueError(
                    f"{_describe(group[0])} but the base config has extract_layers={config.extract_layers}; "
                    "the layer indices cannot be inferred, pass a config"
                )
            continue
        _set_field(config, name, value)
    for tower in ("vision_config", "text_config"):
        sub, base_sub = getattr(config, tower), getattr(base, tower)
        if sub.hidden_size != base_sub.hidden_size:
            if sub.hidden_size % 64:
                raise ValueError(
                    f"cannot infer {tower}.num_attention_heads for width {sub.hidden_size} "
                    "(OpenAI CLIP uses width // 64); pass a config"
                )
            sub.num_attention_heads = sub.hidden_size // 64
    _check_heads(config)
    return config


def _validate_config(config: CLIPSegConfig, facts: list[_Fact]) -> None:
    """ValueError listing every config field that disagrees with the checkpoint's shapes."""
    mismatches = []
    for fact in facts:
        actual = _get_field(config, fact.field)
        if actual != fact.value:
            mismatches.append(f"config {fact.field} = {actual}, but {fact.source} implies {fact.value}")
    if mismatches:
        raise ValueError("config does not match the checkpoint: " + "; ".join(mismatches))
    _check_heads(config)


def _group_facts(facts: list[_Fact]) -> dict[str, list[_Fact]]:
    grouped: dict[str, list[_Fact]] = {}
    for fact in facts:
        grouped.setdefault(fact.field, []).append(fact)
    return grouped


def expected_shapes(config: CLIPSegConfig) -> dict[str, tuple[int, ...]]:
    """State-dict shapes of ``CLIPSegForImageSegmentation(config)``, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = CLIPSegForImageSegmentation(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------------------------


def convert_state_dict(
    decoder_sd: StateDict,
    clip_sd: StateDict | None = None,
    config: CLIPSegConfig | None = None,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map original CLIPSeg weights to ``CLIPSegForImageSegmentation`` keys.

    ``decoder_sd`` is either a decoder-only dict (``rd64-uni*.pth``) or a combined one holding the
    OpenAI CLIP under ``clip_model.`` (``clip_plus_rd64-uni.pth``); ``clip_sd`` is an OpenAI-layout
    CLIP state dict for the decoder-only case. ``config`` is checked against the shapes; without
    one it is inferred from them (starting from the CIDAS/clipseg-rd64-refined config).

    Raises ValueError for any key that is neither mapped nor a known-unused one, for a config that
    disagrees with the shapes, and for a converted tensor whose shape the model does not expect.
    Tensors keep their dtype (OpenAI's JIT weights are fp16); ``load_state_dict`` casts on copy.
    """
    sources = _split_sources(decoder_sd, clip_sd)
    hf: dict[str, torch.Tensor] = {}
    report = ConversionReport(dropped=dict(sources.dropped))
    unknown: list[str] = []

    def map_all(items: dict[str, torch.Tensor], rules: list[_Rule], names: Mapping[str, str]) -> None:
        for key, tensor in items.items():
            name = names.get(key, key)
            if name in report.dropped:
                continue
            converted = _map_key(key, tensor, rules)
            if converted is None:
                unknown.append(name)
                continue
            hf.update(converted)
            report.mapped[name] = list(converted)

    map_all(sources.decoder, DECODER_RULES, {})
    map_all(sources.clip, CLIP_RULES, sources.clip_names)
    if unknown:
        raise UnknownKeysError(unknown, clip_given=bool(sources.clip), none_known=not report.mapped)

    facts = _decoder_facts(sources.decoder) + _clip_facts(sources.clip, sources.clip_names)
    if config is None:
        config = _infer_config(facts)
    else:
        _validate_config(config, facts)
    report.config = config
    report.not_provided = _check_against_model(hf, config, report)
    return hf, report


class UnknownKeysError(ValueError):
    """Checkpoint keys with no place in the CLIPSeg layout. When they look like OpenAI CLIP keys
    given as the decoder, the message says to pass them as the CLIP weights, by `clip_option`: the
    name the caller knows that option by (`convert_original_checkpoint` sets its own)."""

    def __init__(self, unknown: list[str], clip_given: bool, none_known: bool = False) -> None:
        names = sorted(unknown)
        shown = ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "")
        self.message = f"{len(names)} checkpoint key(s) have no place in the transformers CLIPSeg layout: {shown}"
        if none_known:
            self.message += (" (no key at all is a CLIPSeg key: this is not an original CLIPSeg checkpoint such as "
                             "rd64-uni.pth, rd64-uni-refined.pth or clip_plus_rd64-uni.pth)")
        self.looks_like_clip = not clip_given and any(
            rule.pattern.fullmatch(key) for key in unknown for rule in CLIP_RULES)
        self.clip_option = "clip_sd"
        super().__init__(self.message)

    def __str__(self) -> str:
        if not self.looks_like_clip:
            return self.message
        return f"{self.message} (these look like OpenAI CLIP keys: pass that file as {self.clip_option})"


def _check_against_model(hf: StateDict, config: CLIPSegConfig, report: ConversionReport) -> list[str]:
    """Every converted tensor must fit the model; returns the model keys nobody provided."""
    expected = expected_shapes(config)
    origin = {new: old for old, news in report.mapped.items() for new in news}
    no_place = sorted(f"{k} (from {origin[k]})" for k in hf if k not in expected)
    wrong = sorted(
        f"{k} (from {origin[k]}): checkpoint {tuple(t.shape)}, config expects {expected[k]}"
        for k, t in hf.items()
        if k in expected and tuple(t.shape) != expected[k]
    )
    problems = []
    if no_place:
        problems.append(f"keys the configured model has no place for: {no_place}")
    if wrong:
        problems.append("shape mismatches: " + "; ".join(wrong))
    if problems:
        raise ValueError("converted checkpoint does not fit the config: " + "; ".join(problems))
    return sorted(k for k in expected if k not in hf)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        # torch.jit.save writes <name>/constants.pkl; torch.save never does.
        return any(name == "constants.pkl" or name.endswith("/constants.pkl") for name in archive.namelist())


# What torch.save writes: a zip archive holding <name>/data.pkl (torch >= 1.6), or before that a
# bare pickle, which starts with the pickle protocol opcode.
_PICKLE_START = b"\x80"
_ZIP_START = b"PK\x03\x04"
_CHECKPOINT_KINDS = "a torch.save file of a state dict (e.g. rd64-uni-refined.pth, or OpenAI CLIP weights)"


def _not_a_checkpoint(path: Path, why: str) -> ValueError:
    return ValueError(f"{path} is not a PyTorch checkpoint ({why}); pass {_CHECKPOINT_KINDS}")


def _check_checkpoint_framing(path: Path) -> None:
    """Tell a file that is no checkpoint at all apart from one torch should read (its errors for
    the former name no file and advise `weights_only=False`, which is wrong and unsafe here)."""
    with open(path, "rb") as file:
        start = file.read(4)
    if not start:
        raise _not_a_checkpoint(path, "the file is empty")
    if start.startswith(_ZIP_START):
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is a damaged or truncated zip archive (no central directory), so not a readable "
                             "PyTorch checkpoint: copy or download it again")
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            raise _not_a_checkpoint(path, "a zip archive without the data.pkl that torch.save writes")
    elif not start.startswith(_PICKLE_START):
        raise _not_a_checkpoint(path, "neither a torch.save zip archive nor a pickle")


def _load_error(path: Path, error: Exception) -> ValueError:
    """A message for torch.load's failure without torch's advice to load with weights_only=False."""
    text = str(error)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return ValueError(
            f"{path} holds Python objects besides tensors ({unsupported.group(1)}); fastclipseg reads weights only and "
            "never runs code from a file. Save a plain state dict instead: torch.save(model.state_dict(), 'weights.pth')"
        )
    if "Weights only load failed" in text or "weights_only" in text:
        return _not_a_checkpoint(path, "a pickle that holds no plain tensors")
    return ValueError(f"{path} is a damaged or truncated PyTorch checkpoint ({type(error).__name__}: "
                      f"{str(error).strip().splitlines()[0] if text.strip() else 'no detail'}): copy or download it again")


def load_state_dict_file(path: str | Path, allow_torchscript: bool = False,
                         option_names: Mapping[str, str] = PYTHON_OPTION_NAMES) -> dict[str, torch.Tensor]:
    """Load a state dict with ``torch.load(weights_only=True)``: no arbitrary unpickling.

    OpenAI's ``ViT-B-16.pt`` is a TorchScript archive; loading one means running the code inside
    it, so it is refused unless ``allow_torchscript=True`` (then ``torch.jit.load(...).state_dict()``).
    A file that is not a checkpoint, a damaged one, and one that holds anything but named tensors
    are `ValueError`s naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a checkpoint file; pass {_CHECKPOINT_KINDS} (a model folder is "
                         "already converted: pass it to --model / from_pretrained)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    _check_checkpoint_framing(path)
    if _is_torchscript_archive(path):
        if not allow_torchscript:
            raise ValueError(
                f"{path} is a TorchScript archive; loading it runs code from the file. "
                f"Pass {option_names['torchscript']} if you trust it (e.g. OpenAI's ViT-B-16.pt)."
            )
        try:
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        except RuntimeError as error:
            raise _load_error(path, error) from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for unsafe / corrupt pickles
        raise _load_error(path, error) from None  # torch's message (and its advice) stays out of the chain
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict (a mapping of names to tensors)")
    bad = [str(key) for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if bad:
        nested = next((key for key in bad if isinstance(loaded[key], Mapping)), None)
        hint = (f"; it looks like a training checkpoint: save its {nested!r} entry on its own, e.g. "
                f"torch.save(checkpoint[{nested!r}], 'weights.pth')" if nested is not None else "")
        raise ValueError(f"{path} is not a plain state dict: {len(bad)} entries are not tensors ({', '.join(bad[:5])})"
                         + hint)
    return dict(loaded)


def build_image_processor(pil_backend: bool = False):
    """The released models' image preprocessing: 352x352 bilinear, rescale to [0, 1], ImageNet mean/std.

    `pil_backend=True` asks for transformers' PIL implementation (`ViTImageProcessorPil`), the one
    fastclipseg's preprocessing equals bit for bit; the default `ViTImageProcessor` (what the
    released model folders name) is the torchvision implementation where torchvision is installed,
    whose antialiased resize differs from Pillow's by a level on some pixels.
    """
    cls = transformers.ViTImageProcessor
    if pil_backend:
        cls = getattr(transformers, "ViTImageProcessorPil", cls)  # older transformers: PIL only
    return cls(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=2,  # PIL.Image.BILINEAR
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


def build_processor(tokenizer, pil_backend: bool = False):
    """CLIPSegProcessor = :func:`build_image_processor` + the given CLIP tokenizer."""
    return CLIPSegProcessor(image_processor=build_image_processor(pil_backend), tokenizer=tokenizer)


def _missing_clip_decision(report: ConversionReport, allow_random_clip: bool,
                           option_names: Mapping[str, str]) -> list[str]:
    """Refuse incomplete conversions; returns the clip.* keys that will stay random."""
    missing_clip = [k for k in report.not_provided if k.startswith("clip.")]
    missing_other = [k for k in report.not_provided if not k.startswith("clip.")]
    if missing_other:
        raise ValueError(f"the decoder checkpoint lacks {len(missing_other)} key(s): {missing_other}")
    if not missing_clip:
        return []
    clip_given = any(k.startswith("clip.") for news in report.mapped.values() for k in news)
    if clip_given:
        raise ValueError(f"the CLIP weights are incomplete, {len(missing_clip)} key(s) missing: {missing_clip[:20]}")
    if not allow_random_clip:
        raise ValueError(
            f"decoder-only checkpoint and no CLIP weights: pass {option_names['clip']} (an OpenAI CLIP ViT-B/16 "
            f"state dict), or {option_names['random_clip']} to write a model with RANDOM CLIP weights "
            "(benchmarks/tests only)"
        )
    warnings.warn(
        f"writing a CLIPSeg model whose {len(missing_clip)} CLIP tensors are RANDOM: its masks are meaningless; "
        "use it for benchmarks and tests only",
        UserWarning,
        stacklevel=3,
    )
    return missing_clip


def _load_into_model(hf: StateDict, config: CLIPSegConfig, random_keys: list[str]) -> CLIPSegForImageSegmentation:
    model = CLIPSegForImageSegmentation(config)
    if not random_keys:
        model.load_state_dict(hf, strict=True)
        return model.eval()
    result = model.load_state_dict(hf, strict=False)
    if result.unexpected_keys or sorted(result.missing_keys) != sorted(random_keys):
        raise ValueError(
            f"loading left unexpected keys {result.unexpected_keys} / missing keys other than CLIP "
            f"{sorted(set(result.missing_keys) - set(random_keys))}"
        )
    return model.eval()


def _save_model(model: CLIPSegForImageSegmentation, folder: Path) -> None:
    # transformers 5 always writes safetensors and dropped the flag; 4.x needs it spelled out.
    accepts_flag = "safe_serialization" in inspect.signature(model.save_pretrained).parameters
    kwargs = {"safe_serialization": True} if accepts_flag else {}
    model.save_pretrained(str(folder), **kwargs)
    if not (folder / "model.safetensors").is_file():
        raise RuntimeError(f"save_pretrained did not write {folder / 'model.safetensors'}")


def _write_folder(folder: Path, model, vocab_path: Path | None, report: ConversionReport, meta: dict,
                  option_names: Mapping[str, str]) -> None:
    _save_model(model, folder)
    if vocab_path is not None:
        write_clip_tokenizer_files(vocab_path, folder)
        tokenizer = load_clip_tokenizer(folder, model_max_length=model.config.text_config.max_position_embeddings)
        processor = build_processor(tokenizer)
        processor.save_pretrained(str(folder))
        # transformers 5 embeds the image processor in processor_config.json; 4.x reads this file.
        processor.image_processor.save_pretrained(str(folder))
    else:
        warnings.warn(
            f"no {option_names['vocab']}: the converted folder has no tokenizer, so it will not load as a model "
            f"until one is added; pass bpe_simple_vocab_16e6.txt.gz as {option_names['vocab']}",
            UserWarning,
            stacklevel=4,  # the caller of convert_original_checkpoint
        )
        build_image_processor().save_pretrained(str(folder))
    summary = {**meta, **report.to_json()}
    (folder / "conversion_report.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")


def convert_original_checkpoint(
    decoder_path: str | Path,
    out_dir: str | Path,
    clip_path: str | Path | None = None,
    vocab_path: str | Path | None = None,
    config: CLIPSegConfig | None = None,
    *,
    allow_random_clip: bool = False,
    allow_torchscript: bool = False,
    overwrite: bool = False,
    option_names: Mapping[str, str] = PYTHON_OPTION_NAMES,
) -> Path:
    """Convert an original CLIPSeg checkpoint into a transformers folder; returns ``out_dir``.

    The folder holds config.json, model.safetensors, the CLIP tokenizer (from ``vocab_path``,
    OpenAI's ``bpe_simple_vocab_16e6.txt.gz``), the processor configs and conversion_report.json.
    It is written to a temporary sibling and renamed at the end, so a failure leaves no
    half-written output. A decoder-only checkpoint needs ``clip_path``, or ``allow_random_clip=True``
    for a benchmark/test model with random CLIP weights (warned about, and recorded in config.json
    as ``fastclipseg_random_clip``). ``allow_torchscript`` permits a TorchScript CLIP file such as
    OpenAI's ``ViT-B-16.pt``; loading one executes code from it. ``option_names``: how error
    messages name these options (`CLI_OPTION_NAMES` for the command line's flags).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(
            f"output folder already exists: {out_dir} (pass {option_names['overwrite']} to replace it)")
    vocab = Path(vocab_path) if vocab_path is not None else None
    if vocab is not None and not vocab.is_file():
        raise FileNotFoundError(f"BPE vocabulary not found: {vocab}")

    decoder_sd = load_state_dict_file(decoder_path, allow_torchscript=False, option_names=option_names)
    clip_sd = load_state_dict_file(clip_path, allow_torchscript, option_names) if clip_path is not None else None
    try:
        try:
            hf, report = convert_state_dict(decoder_sd, clip_sd, config=config)
        except UnknownKeysError as error:
            error.clip_option = option_names["clip"]
            raise
        random_keys = _missing_clip_decision(report, allow_random_clip, option_names)
        config = copy.deepcopy(report.config)
        config.fastclipseg_random_clip = bool(random_keys)  # saved in config.json so loaders can tell
        model = _load_into_model(hf, config, random_keys)
    except ValueError as error:
        # The checks above know keys and shapes, not files: name the files here.
        sources = f"{decoder_path}" + (f" with the CLIP weights {clip_path}" if clip_path is not None else "")
        raise ValueError(f"cannot convert {sources}: {error}") from error

    meta = {
        "decoder": Path(decoder_path).name,
        "clip": Path(clip_path).name if clip_path is not None else None,
        "random_clip_weights": bool(random_keys),
    }
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _write_folder(tmp, model, vocab, report, meta, option_names)
        _replace_folder(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing target is swapped out first, then deleted."""
    if not target.exists():
        new.rename(target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    target.rename(old)
    try:
        new.rename(target)
    except OSError:
        old.rename(target)
        raise
    shutil.rmtree(old)
