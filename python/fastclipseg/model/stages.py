"""The CLIPSeg network as three stages: vision, prompt and decoder.

Each stage is a small `nn.Module` with a plain tensor-in, tensor-out `forward`, so the compiled
engines can trace or export it on its own. The stages share their parameters with the
`transformers.CLIPSegForImageSegmentation` they are built from (no copy); their forward code is
written here, because the reference computes what CLIPSeg does not need:

- the vision tower stops at the deepest layer the decoder reads (layer 10 of 12 for the real
  config) and never computes the pooled head;
- prompts are encoded once, not once per (image, prompt) pair;
- the decoder runs its prompt-independent part (the `reduces` projections, and any layers before
  the FiLM conditioning) once per image and gathers it for each (image, prompt) pair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # annotations only: loading an export runs the stages' engines without transformers
    from transformers import CLIPSegForImageSegmentation


class Attention(nn.Module):
    """Multi-head self-attention over the weights of a transformers `CLIPSegAttention`."""

    def __init__(self, reference: nn.Module) -> None:
        super().__init__()
        self.num_heads = reference.num_heads
        self.q_proj = reference.q_proj
        self.k_proj = reference.k_proj
        self.v_proj = reference.v_proj
        self.out_proj = reference.out_proj

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        batch, tokens, width = x.shape
        shape = (batch, tokens, self.num_heads, width // self.num_heads)
        q = self.q_proj(x).view(shape).transpose(1, 2)
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))


class MLP(nn.Module):
    def __init__(self, reference: nn.Module, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.fc1 = reference.fc1
        self.fc2 = reference.fc2
        self.activation = activation if activation is not None else reference.activation_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class PreNormBlock(nn.Module):
    """A CLIP transformer block (layer norm before attention and MLP)."""

    def __init__(self, reference: nn.Module, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.layer_norm1 = reference.layer_norm1
        self.attn = Attention(reference.self_attn)
        self.layer_norm2 = reference.layer_norm2
        self.mlp = MLP(reference.mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.layer_norm1(x), causal=self.causal)
        return x + self.mlp(self.layer_norm2(x))


class PostNormBlock(nn.Module):
    """A CLIPSeg decoder block (layer norm after attention and MLP, ReLU MLP)."""

    def __init__(self, reference: nn.Module) -> None:
        super().__init__()
        self.attn = Attention(reference.self_attn)
        self.layer_norm1 = reference.layer_norm1
        # transformers builds the decoder blocks with hidden_act="relu" whatever the config says.
        self.mlp = MLP(reference.mlp)
        self.layer_norm2 = reference.layer_norm2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm1(x + self.attn(x))
        return self.layer_norm2(x + self.mlp(x))


class VisionStage(nn.Module):
    """Pixels `(B, 3, S, S)` -> activations `(L, B, T, D)` of the layers in `extract_layers`.

    `L = len(extract_layers)`, `T = (S / patch)^2 + 1` tokens (485 for 352x352 pixels and 16-pixel
    patches). Only the layers up to the deepest extracted one are run, unless `depth` asks for
    more (the image-prompt encoder runs them all); `embed` is the tower's input, before any layer.
    """

    def __init__(self, model: CLIPSegForImageSegmentation, image_size: int, depth: int | None = None) -> None:
        super().__init__()
        vision = model.clip.vision_model
        embeddings = vision.embeddings
        self.image_size = image_size
        self.patch_embedding = embeddings.patch_embedding
        self.class_embedding = embeddings.class_embedding
        self.pre_layernorm = vision.pre_layrnorm
        self.extract_layers = [int(i) for i in model.config.extract_layers]
        depth = max(self.extract_layers) + 1 if depth is None else depth
        self.layers = nn.ModuleList(PreNormBlock(layer) for layer in vision.encoder.layers[:depth])
        # The position embeddings depend only on the input size, so the reference's own
        # interpolation is run once here instead of on every forward pass.
        grid = image_size // embeddings.patch_size
        with torch.no_grad():
            probe = embeddings.position_embedding.weight.new_empty(1, grid * grid + 1, embeddings.embed_dim)
            positions = embeddings.interpolate_pos_encoding(probe, image_size, image_size)
        self.register_buffer("position_embedding", positions.detach().clone(), persistent=False)

    def embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pixels -> the `(B, T, D)` tokens that enter the first layer."""
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1) + self.position_embedding
        return self.pre_layernorm(x)

    def zero_activations(self, images: int) -> torch.Tensor:
        """Zeros with the shape and dtype of `forward`'s output for `images` images, without running it."""
        tokens, width = self.position_embedding.shape[-2:]
        # The residual stream (and so every output) has the dtype of the embeddings it starts from.
        return self.class_embedding.new_zeros(len(self.extract_layers), images, tokens, width)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.embed(pixel_values)
        outputs: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.layers):
            x = layer(x)
            outputs[index] = x
        return torch.stack([outputs[i] for i in self.extract_layers])


class PromptStage(nn.Module):
    """Token ids `(K, N)` (right-padded) -> conditional embeddings `(K, P)`.

    The text tower is causal, so the state at the end-of-text token never sees the padding after
    it: an embedding does not depend on what else was in its batch, which is what makes a cache
    keyed by prompt text exact.
    """

    def __init__(self, model: CLIPSegForImageSegmentation) -> None:
        super().__init__()
        text = model.clip.text_model
        self.token_embedding = text.embeddings.token_embedding
        self.position_embedding = text.embeddings.position_embedding
        self.layers = nn.ModuleList(PreNormBlock(layer, causal=True) for layer in text.encoder.layers)
        self.final_layer_norm = text.final_layer_norm
        self.text_projection = model.clip.text_projection
        self.eos_token_id = int(text.eos_token_id)
        self.max_tokens = int(self.position_embedding.num_embeddings)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        tokens = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.position_embedding.weight[:tokens]
        for layer in self.layers:
            x = layer(x)
        x = self.final_layer_norm(x)
        if self.eos_token_id == 2:
            # Configs from before transformers PR #24773 carry eos_token_id=2; the reference then
            # pools at the highest token id, which is end-of-text in the CLIP vocabulary.
            eos_position = input_ids.argmax(dim=-1)
        else:
            eos_position = (input_ids == self.eos_token_id).int().argmax(dim=-1)
        pooled = x[torch.arange(x.shape[0], device=x.device), eos_position]
        return self.text_projection(pooled)


class DecoderStage(nn.Module):
    """Activations `(L, B, T, D)`, embeddings `(K, P)`, image index `(K,)` -> logits `(K, H, W)`.

    `image_index[k]` says which of the B images prompt k belongs to. `prepare` holds everything
    that does not depend on the prompt and runs once per image; `decode` runs once per pair.
    """

    def __init__(self, model: CLIPSegForImageSegmentation, image_size: int) -> None:
        super().__init__()
        decoder = model.decoder
        # The patch grid is fixed by the input size; a Python int (not a shape read at run time)
        # keeps the traced and exported graphs free of shape arithmetic.
        self.grid = image_size // int(model.config.vision_config.patch_size)
        self.conditional_layer = int(model.config.conditional_layer)
        depth = len(decoder.layers)
        if not 0 <= self.conditional_layer < depth:
            raise ValueError(
                f"conditional_layer={self.conditional_layer} is outside the decoder's {depth} layers: "
                "the prompt would never reach the mask"
            )
        self.film_mul = decoder.film_mul
        self.film_add = decoder.film_add
        self.reduces = decoder.reduces
        self.layers = nn.ModuleList(PostNormBlock(layer) for layer in decoder.layers)
        self.transposed_convolution = decoder.transposed_convolution

    def prepare(self, activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image part: `(B, T, R)` input of the FiLM layer, `(L', B, T, R)` later reductions."""
        # The decoder reads the deepest activation first.
        deepest_first = activations.flip(0)
        state = self.reduces[0](deepest_first[0])
        for i in range(self.conditional_layer):
            state = self.layers[i](state)
            state = self.reduces[i + 1](deepest_first[i + 1]) + state
        later = [self.reduces[i](deepest_first[i]) for i in range(self.conditional_layer + 1, len(self.layers))]
        if later:
            return state, torch.stack(later)
        return state, state.new_empty(0, *state.shape)

    def decode(
        self,
        film_input: torch.Tensor,
        later_reductions: torch.Tensor,
        conditional_embeddings: torch.Tensor,
        image_index: torch.Tensor,
    ) -> torch.Tensor:
        """Per-pair part, from `prepare`'s outputs."""
        x = film_input.index_select(0, image_index)
        conditional_embeddings = conditional_embeddings.to(x.dtype)
        x = self.film_mul(conditional_embeddings)[:, None, :] * x + self.film_add(conditional_embeddings)[:, None, :]
        x = self.layers[self.conditional_layer](x)
        for offset in range(later_reductions.shape[0]):
            x = later_reductions[offset].index_select(0, image_index) + x
            x = self.layers[self.conditional_layer + 1 + offset](x)
        x = x[:, 1:, :].transpose(1, 2)
        x = x.reshape(x.shape[0], x.shape[1], self.grid, self.grid)
        return self.transposed_convolution(x).squeeze(1)

    def forward(
        self, activations: torch.Tensor, conditional_embeddings: torch.Tensor, image_index: torch.Tensor
    ) -> torch.Tensor:
        film_input, later = self.prepare(activations)
        return self.decode(film_input, later, conditional_embeddings, image_index)


class Stages(nn.Module):
    """The three stages of one model, sharing its parameters."""

    def __init__(self, model: CLIPSegForImageSegmentation, image_size: int) -> None:
        super().__init__()
        self.vision = VisionStage(model, image_size)
        self.prompt = PromptStage(model)
        self.decoder = DecoderStage(model, image_size)
