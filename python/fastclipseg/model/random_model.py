"""Full-size CLIPSeg models with random weights, for benchmarks and tests (no hub needed).

Speed does not depend on weight values, so a random model in the real `CIDAS/clipseg-rd64-refined`
shape times like the real one; loading the real refined decoder weights (the original
`rd64-uni-refined.pth`) on top puts the logits in a realistic range.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPTokenizer

from .configs import reference_config
from .convert import build_processor, convert_state_dict, load_state_dict_file
from .tokenizer_files import (
    BOS_TOKEN,
    EOS_TOKEN,
    bytes_to_unicode,
    clip_tokenizer_from_bpe,
)


def byte_level_tokenizer(merges: Sequence[tuple[str, str]] = ()) -> CLIPTokenizer:
    """A CLIP-style tokenizer over bytes (plus optional `merges`), for when the real vocabulary is absent.

    Ids stay below 520 + len(merges), so it fits any text tower with a vocabulary at least that big.
    """
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return CLIPTokenizer(vocab=vocab, merges=list(merges))


def random_reference_model(
    config: CLIPSegConfig | None = None,
    decoder_checkpoint: str | Path | None = None,
    bpe_vocab: str | Path | None = None,
    seed: int = 0,
):
    """`(model, processor)`: random CLIP in the given config (default: the real one), eval mode.

    `decoder_checkpoint`: an original-format decoder file (e.g. rd64-uni-refined.pth) whose
    weights replace the random decoder. `bpe_vocab`: OpenAI's bpe_simple_vocab_16e6.txt.gz for the
    real tokenizer; without it a byte-level tokenizer is used. The processor is transformers' PIL
    implementation, whose pixel values fastclipseg's preprocessing equals, so a comparison from
    uint8 images is of equal answers whether or not torchvision is installed.
    """
    torch.manual_seed(seed)
    config = config or reference_config()
    model = CLIPSegForImageSegmentation(config).eval()
    if decoder_checkpoint is not None:
        weights, _ = convert_state_dict(load_state_dict_file(decoder_checkpoint), config=config)
        decoder = {k: v for k, v in weights.items() if k.startswith("decoder.")}
        missing = [k for k in model.state_dict() if k.startswith("decoder.") and k not in decoder]
        if missing:
            raise ValueError(f"{decoder_checkpoint} lacks decoder weights: {missing}")
        model.load_state_dict(decoder, strict=False)
    if bpe_vocab is not None:
        with tempfile.TemporaryDirectory() as folder:
            tokenizer = clip_tokenizer_from_bpe(bpe_vocab, folder)
    else:
        tokenizer = byte_level_tokenizer()
    return model, build_processor(tokenizer, pil_backend=True)
