"""Model configurations fastclipseg knows by name."""

from __future__ import annotations

from transformers import CLIPSegConfig


def reference_config() -> CLIPSegConfig:
    """The full-size CLIPSeg configuration of ``CIDAS/clipseg-rd64-refined``.

    CLIP ViT-B/16 backbone (vision 12x768, text 12x512, projection 512) with the refined rd64
    decoder (reduce_dim 64, layers 3/6/9, complex transposed convolution). Built locally so that
    benchmarks and the converter never need the model hub.
    """
    vision_config = {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "patch_size": 16,
        "image_size": 224,
        "hidden_act": "quick_gelu",
    }
    text_config = {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_attention_heads": 8,
        "num_hidden_layers": 12,
        "max_position_embeddings": 77,
        "vocab_size": 49408,
        "hidden_act": "quick_gelu",
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    }
    return CLIPSegConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=512,
        reduce_dim=64,
        extract_layers=[3, 6, 9],
        conditional_layer=0,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=2048,
        use_complex_transposed_convolution=True,
    )
