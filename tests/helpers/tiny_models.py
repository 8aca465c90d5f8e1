"""Tiny random CLIPSeg models and a tiny CLIP tokenizer, built inside the test session (no hub)."""

from __future__ import annotations

from pathlib import Path

import torch
from fastclipseg.model.random_model import byte_level_tokenizer
from transformers import (
    CLIPSegConfig,
    CLIPSegForImageSegmentation,
    CLIPSegProcessor,
    ViTImageProcessorPil,
)

# Processor size of the tiny models: 64x64 pixels with 16-pixel patches is a 4x4 grid, while the
# vision config's image_size=32 (a 2x2 grid) makes the position embeddings interpolate, as the
# real model's do (224 -> 352).
TINY_IMAGE_SIZE = 64


def tiny_tokenizer():
    """A byte-level CLIP tokenizer with a handful of merges (~520 tokens)."""
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("r", "e"), ("re", "d</w>")]
    return byte_level_tokenizer(merges)


def tiny_config(
    extract_layers: tuple[int, ...] = (0, 1, 2),
    conditional_layer: int = 0,
    vocab_size: int = 600,
    complex_conv: bool = True,
) -> CLIPSegConfig:
    depth = max(extract_layers) + 2  # one layer beyond the deepest read, which the stages must skip
    return CLIPSegConfig(
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=77, vocab_size=vocab_size, bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=depth,
            patch_size=16, image_size=32,
        ),
        projection_dim=24,
        reduce_dim=16,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=32,
        extract_layers=list(extract_layers),
        conditional_layer=conditional_layer,
        use_complex_transposed_convolution=complex_conv,
    )


def tiny_processor(image_size: int = TINY_IMAGE_SIZE) -> CLIPSegProcessor:
    tokenizer = tiny_tokenizer()
    image_processor = ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=2,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_model(config: CLIPSegConfig | None = None, seed: int = 0) -> CLIPSegForImageSegmentation:
    torch.manual_seed(seed)
    config = config or tiny_config()
    model = CLIPSegForImageSegmentation(config).eval()
    # The default initialisation leaves the decoder's output nearly constant; wider weights give
    # logits that vary across pixels and prompts, so parity checks compare something.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("decoder.") and parameter.ndim > 1:
                parameter.normal_(0.0, 0.3)
    return model


def save_tiny_model(directory: Path, config: CLIPSegConfig | None = None) -> Path:
    processor = tiny_processor()
    config = config or tiny_config(vocab_size=len(processor.tokenizer))
    model = tiny_model(config)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
