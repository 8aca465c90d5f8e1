"""Dense feature heads: the last CLIP vision block changed so that every patch token lands in CLIP's
joint image-text space (MaskCLIP, ClearCLIP), training-free.

`compute_dense_features` continues the vision tower from a hidden state that fastclipseg's vision
stage already computed. It runs in eager fp32 torch with the transformers model's weights on
every backend: no engine compiles it, and an export does not hold the layers it needs.

The methods, for the last block's input `x` (tokens including CLS), written with the
transformers names (`ln1` = layer_norm1, `ln2` = layer_norm2, `mlp`, the attention's `q_proj`,
`k_proj`, `v_proj`, `out_proj` and `scale` = head_dim ** -0.5; `post_ln` = the vision tower's
post_layernorm, `proj` = the CLIP model's visual_projection, no bias):

- "maskclip" (Zhou, Loy, Dai, "Extract Free Dense Labels from CLIP", ECCV 2022; code
  github.com/chongzhou96/MaskCLIP, read from its mirror volgachen/MaskCLIP:
  `mmseg/models/backbones/vit.py` `TransformerEncoderLayer.forward(x, return_qkv=True)` and
  `VisionTransformer.forward` (final_norm applied to v), `mmseg/models/decode_heads/maskclip_head.py`
  `MaskClipHead.forward` / `cls_seg`, config `configs/_base_/models/maskclip_vit16.py`): the
  value path with no query-key attention, KEEPING the residual and the feed-forward:

      v = x + out_proj(v_proj(ln1(x)))
      v = v + mlp(ln2(v))
      f = proj(post_ln(v))[patches];  f = f / |f|

- "clearclip" (Lan et al., "ClearCLIP: Decomposing CLIP Representations for Dense
  Vision-Language Inference", ECCV 2024; code github.com/mc-lan/ClearCLIP,
  `open_clip/transformer.py` `VisionTransformer.forward(model_type='ClearCLIP',
  ignore_residual=True, last_n_layers=1)` and `custom_attn`): per head h, query-query attention
  with the usual scale over all tokens (CLS included), WITHOUT the residual and WITHOUT the
  feed-forward:

      y = ln1(x);  q = q_proj(y);  v = v_proj(y)          (split into heads)
      o_h = softmax(q_h q_h^T * scale) v_h
      a = out_proj(concat_h o_h)
      f = proj(post_ln(a))[patches];  f = f / |f|
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import CLIPSegForImageSegmentation


METHODS = ("maskclip", "clearclip")


def check_method(method: object) -> str:
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}, got {method!r}")
    return method


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    weight = norm.weight.float() if norm.weight is not None else None
    bias = norm.bias.float() if norm.bias is not None else None
    return F.layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)


def _linear(x: torch.Tensor, linear: torch.nn.Linear) -> torch.Tensor:
    return F.linear(x, linear.weight.float(), linear.bias.float() if linear.bias is not None else None)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, width = x.shape
    return x.view(batch, tokens, heads, width // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _mlp(x: torch.Tensor, mlp) -> torch.Tensor:
    return _linear(mlp.activation_fn(_linear(x, mlp.fc1)), mlp.fc2)


def _block(x: torch.Tensor, layer) -> torch.Tensor:
    """An unmodified CLIP encoder layer (pre-norm attention and MLP, both with residuals)."""
    attn = layer.self_attn
    y = _layer_norm(x, layer.layer_norm1)
    q, k, v = (_heads(_linear(y, p), attn.num_heads) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    x = x + _linear(_merge_heads(F.scaled_dot_product_attention(q, k, v, scale=attn.scale)), attn.out_proj)
    return x + _mlp(_layer_norm(x, layer.layer_norm2), layer.mlp)


def _maskclip_block(x: torch.Tensor, layer) -> torch.Tensor:
    # chongzhou96/MaskCLIP mmseg/models/backbones/vit.py, TransformerEncoderLayer.forward(return_qkv=True):
    #   y = norm1(x); q, k, v = out_proj(in_proj(y) split in three); v += x; v = ffn(norm2(v), identity=v)
    attn = layer.self_attn
    v = x + _linear(_linear(_layer_norm(x, layer.layer_norm1), attn.v_proj), attn.out_proj)
    return v + _mlp(_layer_norm(v, layer.layer_norm2), layer.mlp)


def _clearclip_block(x: torch.Tensor, layer) -> torch.Tensor:
    # mc-lan/ClearCLIP open_clip/transformer.py, custom_attn(model_type='ClearCLIP') with
    # ignore_residual=True: output = custom_attn(blk.attn, blk.ln_1(x)); no residual, no MLP.
    #   qq_attn = bmm(q, q^T) * head_dim ** -0.5 (per head); softmax(-1); bmm(attn, v); out_proj
    attn = layer.self_attn
    y = _layer_norm(x, layer.layer_norm1)
    q = _heads(_linear(y, attn.q_proj), attn.num_heads)
    v = _heads(_linear(y, attn.v_proj), attn.num_heads)
    out = F.scaled_dot_product_attention(q, q, v, scale=attn.scale)  # softmax(q q^T * scale) v
    return _linear(_merge_heads(out), attn.out_proj)


_LAST_BLOCK = {"maskclip": _maskclip_block, "clearclip": _clearclip_block}


def compute_dense_features(
    model: CLIPSegForImageSegmentation, hidden_state: torch.Tensor, method: str, layer: int | None = None
) -> torch.Tensor:
    """`(B, h, w, D)` L2-normalised patch embeddings (fp32, on the model's device).

    `hidden_state`: `(B, 1 + h*w, width)`, the hidden state that enters encoder layer `layer`
    (transformers' `hidden_states[layer]` with `output_hidden_states=True`; default
    `max(extract_layers) + 1`, the deepest activation fastclipseg's vision stage returns). Layers
    `layer .. n-2` run unchanged, layer `n-1` (the last) as `method` says, then the tower's
    `post_layernorm` and the CLIP model's `visual_projection` apply to each patch token (the CLS
    token is dropped). The grid must be square (CLIPSeg's input is).
    """
    check_method(method)
    vision = model.clip.vision_model
    layers = vision.encoder.layers
    if layer is None:
        layer = max(int(i) for i in model.config.extract_layers) + 1
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(layers):
        raise ValueError(
            f"layer must be the index of an encoder layer (0 .. {len(layers) - 1}) that the hidden state enters, "
            f"got {layer!r}: the last layer ({len(layers) - 1}) is the one {method} modifies, so it must not have run"
        )
    if hidden_state.ndim != 3 or hidden_state.shape[-1] != vision.config.hidden_size:
        raise ValueError(
            f"hidden_state must be (B, tokens, {vision.config.hidden_size}), got {tuple(hidden_state.shape)}"
        )
    patches = hidden_state.shape[1] - 1
    side = math.isqrt(patches)
    if side * side != patches or patches == 0:
        raise ValueError(f"hidden_state has {patches} patch tokens (plus CLS): not a square grid")
    device = vision.post_layernorm.weight.device
    with torch.inference_mode():
        x = hidden_state.to(device=device, dtype=torch.float32)
        for block in layers[layer:-1]:
            x = _block(x, block)
        x = _LAST_BLOCK[method](x, layers[-1])
        x = _layer_norm(x[:, 1:], vision.post_layernorm)
        x = F.linear(x, model.clip.visual_projection.weight.float())
        x = F.normalize(x, dim=-1)
    return x.reshape(x.shape[0], side, side, x.shape[-1])


__all__ = ["METHODS", "check_method", "compute_dense_features"]
