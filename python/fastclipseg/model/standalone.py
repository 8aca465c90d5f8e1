"""CLIPSeg's parameter tree without transformers: `StandaloneCLIPSeg`.

Importing transformers costs seconds (it pulls in torch.distributed and torch._dynamo), and
fastclipseg runs its own forward code anyway (`stages.py`, `image_prompt_encoder.py`,
`dense_heads.py`): from the transformers model it needs only the modules that hold the weights,
their sizes, the activation functions and the config. `StandaloneCLIPSeg` builds that tree with
transformers' module and attribute names, so its `state_dict()` has exactly the keys, shapes and
dtypes of `CLIPSegForImageSegmentation(config).state_dict()` (tests check it) and a checkpoint of
one loads into the other.

Forward code lives here only where fastclipseg or its users call a submodule directly: the
activation functions, the vision tower (`vision_model(pixels, output_hidden_states=True)`, as the
dense-feature checks use it) and the layers it runs. There is no text-to-mask `forward`: the
stages compute that.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .standalone_config import ClipSegConfig, SubConfig


class UnsupportedModelError(ValueError):
    """config.json asks for something this tree does not build (an activation function); the
    loader then falls back to transformers."""


class QuickGELU(nn.Module):
    """transformers' `QuickGELUActivation`, CLIP's activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class GELU(nn.Module):
    """transformers' `GELUActivation` ("gelu") and `GELUTanh` ("gelu_pytorch_tanh")."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


class NewGELU(nn.Module):
    """transformers' `NewGELUActivation` ("gelu_new", OpenAI GPT's tanh formula)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class SiLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


# The names of transformers' ACT2FN that CLIP-family configs use, computed as transformers does.
ACTIVATIONS = {
    "quick_gelu": QuickGELU,
    "gelu": GELU,
    "gelu_pytorch_tanh": lambda: GELU("tanh"),
    "gelu_new": NewGELU,
    "relu": nn.ReLU,
    "silu": SiLU,
    "swish": nn.SiLU,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UnsupportedModelError(f"activation {name!r} is not one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Attention(nn.Module):
    """`CLIPSegAttention`: multi-head self-attention."""

    def __init__(self, config: SubConfig) -> None:
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        batch, tokens, _ = x.shape
        shape = (batch, tokens, self.num_heads, self.head_dim)
        q, k, v = (projection(x).view(shape).transpose(1, 2) for projection in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=self.scale)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, self.embed_dim))


class MLP(nn.Module):
    """`CLIPSegMLP`."""

    def __init__(self, config: SubConfig) -> None:
        super().__init__()
        self.config = config
        self.activation_fn = activation(config.hidden_act)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class EncoderLayer(nn.Module):
    """`CLIPSegEncoderLayer`: layer norm before attention and before the MLP."""

    def __init__(self, config: SubConfig) -> None:
        super().__init__()
        self.embed_dim = config.hidden_size
        self.self_attn = Attention(config)
        self.layer_norm1 = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.mlp = MLP(config)
        self.layer_norm2 = nn.LayerNorm(self.embed_dim, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), causal=causal)
        return x + self.mlp(self.layer_norm2(x))


class DecoderLayer(EncoderLayer):
    """`CLIPSegDecoderLayer`: the same weights, layer norm after attention and after the MLP."""

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = self.layer_norm1(x + self.self_attn(x, causal=causal))
        return self.layer_norm2(x + self.mlp(x))


class Encoder(nn.Module):
    def __init__(self, config: SubConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))


def _embedding(count: int, dim: int) -> nn.Embedding:
    # Uninitialised: nn.Embedding's own normal_() on the meta device imports torch._dynamo (a second).
    return nn.Embedding(count, dim, _weight=torch.empty(count, dim))


def _position_ids(count: int) -> torch.Tensor:
    # Explicitly on the CPU: the tree is built on the meta device and the weights assigned later,
    # but this non-persistent buffer is in no checkpoint.
    return torch.arange(count, device="cpu").expand((1, -1))


class VisionEmbeddings(nn.Module):
    """`CLIPSegVisionEmbeddings`: patches, class token and (interpolated) position embeddings."""

    def __init__(self, config: SubConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.class_embedding = nn.Parameter(torch.empty(self.embed_dim))
        self.patch_embedding = nn.Conv2d(config.num_channels, self.embed_dim, kernel_size=self.patch_size,
                                         stride=self.patch_size, bias=False)
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.num_positions = self.num_patches + 1
        self.position_embedding = _embedding(self.num_positions, self.embed_dim)
        self.register_buffer("position_ids", _position_ids(self.num_positions), persistent=False)

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The position embeddings for a `height x width` input: the trained grid, resized bicubically
        when the input has another number of patches (transformers' arithmetic, step for step)."""
        num_patches = embeddings.shape[1] - 1
        position_embedding = self.position_embedding.weight.unsqueeze(0)
        num_positions = position_embedding.shape[1] - 1
        if not torch.jit.is_tracing() and num_patches == num_positions and height == width:
            return self.position_embedding(self.position_ids)
        class_pos_embed = position_embedding[:, :1]
        patch_pos_embed = position_embedding[:, 1:]
        dim = embeddings.shape[-1]
        side = int(num_positions**0.5)
        patch_pos_embed = patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patch_pos_embed = F.interpolate(patch_pos_embed, size=(height // self.patch_size, width // self.patch_size),
                                        mode="bicubic", align_corners=False)
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
        return torch.cat((class_pos_embed, patch_pos_embed), dim=1)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = True) -> torch.Tensor:
        batch, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height != self.image_size or width != self.image_size):
            raise ValueError(f"Input image size ({height}*{width}) doesn't match model "
                             f"({self.image_size}*{self.image_size}).")
        patches = self.patch_embedding(pixel_values.to(dtype=self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        embeddings = torch.cat([self.class_embedding.expand(batch, 1, -1), patches], dim=1)
        if interpolate_pos_encoding:
            return embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        return embeddings + self.position_embedding(self.position_ids)


@dataclass
class VisionOutput:
    """What transformers' vision tower returns, by the same names."""

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


class VisionModel(nn.Module):
    """`CLIPSegVisionModel`: the CLIP ViT tower."""

    def __init__(self, config: SubConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = VisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # sic, as transformers
        self.encoder = Encoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False,
                interpolate_pos_encoding: bool = True) -> VisionOutput:
        """All layers; `hidden_states` (with `output_hidden_states`) are the input of each layer
        and the last output, as transformers' `hidden_states`."""
        x = self.pre_layrnorm(self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding))
        states = [x]
        for layer in self.encoder.layers:
            x = layer(x)
            states.append(x)
        return VisionOutput(x, self.post_layernorm(x[:, 0, :]), tuple(states) if output_hidden_states else None)


class TextEmbeddings(nn.Module):
    def __init__(self, config: SubConfig) -> None:
        super().__init__()
        self.token_embedding = _embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = _embedding(config.max_position_embeddings, config.hidden_size)
        self.register_buffer("position_ids", _position_ids(config.max_position_embeddings), persistent=False)


class TextModel(nn.Module):
    """`CLIPSegTextModel`: the CLIP text tower (the prompt stage runs it)."""

    def __init__(self, config: SubConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = TextEmbeddings(config)
        self.encoder = Encoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.eos_token_id = config.eos_token_id


class ClipModel(nn.Module):
    """`CLIPSegModel`: both towers and their projections into the joint space."""

    def __init__(self, config: ClipSegConfig) -> None:
        super().__init__()
        self.config = config
        self.projection_dim = config.projection_dim
        self.text_embed_dim = config.text_config.hidden_size
        self.vision_embed_dim = config.vision_config.hidden_size
        self.text_model = TextModel(config.text_config)
        self.vision_model = VisionModel(config.vision_config)
        self.visual_projection = nn.Linear(self.vision_embed_dim, self.projection_dim, bias=False)
        self.text_projection = nn.Linear(self.text_embed_dim, self.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))


class Decoder(nn.Module):
    """`CLIPSegDecoder`: FiLM, the reductions, the decoder layers and the transposed convolution."""

    def __init__(self, config: ClipSegConfig) -> None:
        super().__init__()
        self.conditional_layer = config.conditional_layer
        self.film_mul = nn.Linear(config.projection_dim, config.reduce_dim)
        self.film_add = nn.Linear(config.projection_dim, config.reduce_dim)
        patch, reduce = config.vision_config.patch_size, config.reduce_dim
        if config.use_complex_transposed_convolution:
            kernel = patch // 4
            self.transposed_convolution = nn.Sequential(
                nn.Conv2d(reduce, reduce, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(reduce, reduce // 2, kernel_size=kernel, stride=kernel),
                nn.ReLU(),
                nn.ConvTranspose2d(reduce // 2, 1, kernel_size=kernel, stride=kernel),
            )
        else:
            self.transposed_convolution = nn.ConvTranspose2d(reduce, 1, patch, stride=patch)
        depth = len(config.extract_layers)
        self.reduces = nn.ModuleList(nn.Linear(config.vision_config.hidden_size, reduce) for _ in range(depth))
        # transformers builds the decoder layers from the vision config with these changes (and
        # ReLU, whatever decoder_hidden_act says).
        layer_config = SubConfig(**{**config.vision_config.to_dict(), "hidden_size": reduce,
                                    "num_attention_heads": config.decoder_num_attention_heads,
                                    "intermediate_size": config.decoder_intermediate_size, "hidden_act": "relu"})
        self.layers = nn.ModuleList(DecoderLayer(layer_config) for _ in range(depth))


class StandaloneCLIPSeg(nn.Module):
    """The modules and weights of `transformers.CLIPSegForImageSegmentation`, built from a
    `ClipSegConfig` without transformers (`clip`, `decoder`, `config`, `extract_layers`).

    Build it on the meta device and assign a checkpoint's tensors (`fastclipseg.model.weights`),
    or on the CPU for random (uninitialised) weights of the right shapes."""

    def __init__(self, config: ClipSegConfig) -> None:
        super().__init__()
        self.config = config
        self.clip = ClipModel(config)
        self.extract_layers = list(config.extract_layers)
        self.decoder = Decoder(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.clip.logit_scale.dtype

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device


def is_clipseg_model(model: object) -> bool:
    """Whether `model` is a CLIPSeg model fastclipseg can run: a `StandaloneCLIPSeg` or a
    transformers `CLIPSegForImageSegmentation` (checked without importing transformers: a process
    that has not imported it holds no transformers model)."""
    if isinstance(model, StandaloneCLIPSeg):
        return True
    transformers = sys.modules.get("transformers")
    reference = getattr(transformers, "CLIPSegForImageSegmentation", None) if transformers is not None else None
    return reference is not None and isinstance(model, reference)


__all__ = ["StandaloneCLIPSeg", "UnsupportedModelError", "VisionOutput", "is_clipseg_model"]
