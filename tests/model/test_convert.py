"""Converter from the original CLIPSeg checkpoint format to the transformers layout.

Needs ../shared/data (the real rd64-uni-refined decoder and CLIP BPE merges); skipped without it.
The CLIP side is checked on a tiny synthetic OpenAI-layout CLIP, against a small re-implementation
of OpenAI's forward pass, because no real CLIP checkpoint is available offline.
"""

from __future__ import annotations

import html
import importlib.util
import inspect
import json
import math
import sys
import unicodedata
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DECODER_PATH = DATA_DIR / "rd64-uni-refined.pth"
BPE_PATH = DATA_DIR / "bpe_simple_vocab_16e6.txt.gz"

pytestmark = pytest.mark.skipif(
    not (DECODER_PATH.is_file() and BPE_PATH.is_file()),
    reason=f"reference data not found in {DATA_DIR} (rd64-uni-refined.pth, bpe_simple_vocab_16e6.txt.gz)",
)

# Let the tests run from a plain checkout where the package is not installed.
if importlib.util.find_spec("fastclipseg") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))

from fastclipseg.model.configs import reference_config  # noqa: E402
from fastclipseg.model.convert import (  # noqa: E402
    KNOWN_UNUSED_DECODER_KEYS,
    convert_original_checkpoint,
    convert_state_dict,
    load_state_dict_file,
)
from fastclipseg.model.tokenizer_files import (  # noqa: E402
    build_vocab,
    bytes_to_unicode,
    load_clip_tokenizer,
    read_bpe_merges,
    write_clip_tokenizer_files,
)
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation  # noqa: E402
from transformers.models.clipseg.modeling_clipseg import CLIPSegDecoder  # noqa: E402

ATOL = 1e-5


# ---------------------------------------------------------------------------------------------
# The original decoder, rebuilt with CLIPDensePredT's attribute names (= checkpoint keys)
# ---------------------------------------------------------------------------------------------


class OriginalDecoder(nn.Module):
    """The decoder half of timojl/clipseg's CLIPDensePredT (cond_layer 0, no extra blocks)."""

    def __init__(self, reduce_dim, proj_dim, width, depth, heads, ff, patch, complex_conv=True):
        super().__init__()
        self.film_mul = nn.Linear(proj_dim, reduce_dim)
        self.film_add = nn.Linear(proj_dim, reduce_dim)
        self.reduce = nn.Linear(width, reduce_dim)  # defined by CLIPDenseBase, never used by forward
        if complex_conv:
            k = patch // 4
            self.trans_conv = nn.Sequential(
                nn.Conv2d(reduce_dim, reduce_dim, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.ConvTranspose2d(reduce_dim, reduce_dim // 2, kernel_size=k, stride=k),
                nn.ReLU(),
                nn.ConvTranspose2d(reduce_dim // 2, 1, kernel_size=k, stride=k),
            )
        else:
            self.trans_conv = nn.ConvTranspose2d(reduce_dim, 1, patch, stride=patch)
        self.reduces = nn.ModuleList([nn.Linear(width, reduce_dim) for _ in range(depth)])
        self.blocks = nn.ModuleList(
            [nn.TransformerEncoderLayer(d_model=reduce_dim, nhead=heads, dim_feedforward=ff) for _ in range(depth)]
        )

    def forward(self, activations, cond):
        """activations: per extracted layer, [tokens, batch, width] (OpenAI's LND order)."""
        a = None
        for i, (activation, block, reduce) in enumerate(zip(activations[::-1], self.blocks, self.reduces)):
            a = reduce(activation) if a is None else reduce(activation) + a
            if i == 0:
                a = self.film_mul(cond) * a + self.film_add(cond)
            a = block(a)
        a = a[1:].permute(1, 2, 0)
        size = int(math.sqrt(a.shape[2]))
        return self.trans_conv(a.view(cond.shape[0], a.shape[1], size, size))


def run_hf_layer(layer, x):
    """One CLIPSegDecoderLayer across transformers versions (4.x wants causal_attention_mask, returns a tuple)."""
    kwargs = {"attention_mask": None}
    if "causal_attention_mask" in inspect.signature(layer.forward).parameters:
        kwargs["causal_attention_mask"] = None
    out = layer(x, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def decoder_part(hf_sd):
    return {k[len("decoder.") :]: v for k, v in hf_sd.items() if k.startswith("decoder.")}


@pytest.fixture(scope="module")
def real_decoder_sd():
    return torch.load(DECODER_PATH, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def real_converted(real_decoder_sd):
    return convert_state_dict(real_decoder_sd)


@pytest.fixture(scope="module")
def real_original_decoder(real_decoder_sd):
    module = OriginalDecoder(64, 512, 768, 3, heads=4, ff=2048, patch=16)
    module.load_state_dict(real_decoder_sd, strict=True)  # proves the rebuilt layout is the released one
    return module.eval()


@pytest.fixture(scope="module")
def real_hf_decoder(real_converted):
    hf_sd, _ = real_converted
    decoder = CLIPSegDecoder(reference_config())
    decoder.load_state_dict(decoder_part(hf_sd), strict=True)
    return decoder.eval()


# ---------------------------------------------------------------------------------------------
# Real rd64-uni-refined decoder
# ---------------------------------------------------------------------------------------------


def test_real_decoder_every_key_accounted_for(real_decoder_sd, real_converted):
    hf_sd, report = real_converted
    assert len(real_decoder_sd) == 54
    assert set(report.mapped) | set(report.dropped) == set(real_decoder_sd)
    assert set(report.dropped) == {"reduce.weight", "reduce.bias"}
    assert all("unused by the original forward pass, dropped" in r for r in report.dropped.values())
    assert set(KNOWN_UNUSED_DECODER_KEYS) == {"reduce.weight", "reduce.bias"}
    # decoder-only: exactly the CLIP tower is left for someone else to provide
    assert report.not_provided and all(k.startswith("clip.") for k in report.not_provided)
    assert set(decoder_part(hf_sd)) == set(CLIPSegDecoder(reference_config()).state_dict())
    assert report.mapped["blocks.1.self_attn.in_proj_weight"] == [
        f"decoder.layers.1.self_attn.{p}_proj.weight" for p in "qkv"
    ]


def test_real_decoder_config_inferred(real_converted):
    config = real_converted[1].config
    ref = reference_config()
    assert config.to_dict() == ref.to_dict()


def test_real_decoder_layers_match_transformer_encoder_layer(real_decoder_sd, real_hf_decoder):
    torch.manual_seed(0)
    x = torch.randn(2, 17, 64)  # batch, tokens, reduce_dim
    for i, hf_layer in enumerate(real_hf_decoder.layers):
        original = nn.TransformerEncoderLayer(
            d_model=64, nhead=4, dim_feedforward=2048, activation="relu", batch_first=True
        ).eval()
        prefix = f"blocks.{i}."
        original.load_state_dict({k[len(prefix) :]: v for k, v in real_decoder_sd.items() if k.startswith(prefix)})
        with torch.no_grad():
            torch.testing.assert_close(run_hf_layer(hf_layer, x), original(x), atol=ATOL, rtol=1e-5)


def test_real_decoder_other_modules_equal(real_decoder_sd, real_hf_decoder):
    hf = real_hf_decoder.state_dict()
    for name in ("film_mul", "film_add", "reduces.0", "reduces.1", "reduces.2"):
        for param in ("weight", "bias"):
            assert torch.equal(hf[f"{name}.{param}"], real_decoder_sd[f"{name}.{param}"])
    for index in (0, 2, 4):
        for param in ("weight", "bias"):
            key = f"{index}.{param}"
            assert torch.equal(hf[f"transposed_convolution.{key}"], real_decoder_sd[f"trans_conv.{key}"])


def test_real_decoder_forward_matches_original(real_original_decoder, real_hf_decoder):
    torch.manual_seed(1)
    batch, tokens = 2, 1 + 4 * 4
    activations = [torch.randn(batch, tokens, 768) for _ in range(3)]  # layers 3, 6, 9
    cond = torch.randn(batch, 512)
    with torch.no_grad():
        expected = real_original_decoder([a.transpose(0, 1) for a in activations], cond)[:, 0]
        got = real_hf_decoder(hidden_states=tuple(activations), conditional_embeddings=cond).logits
    assert got.shape == (batch, 64, 64)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Tiny synthetic CLIP + decoder: full conversion
# ---------------------------------------------------------------------------------------------

TINY = dict(width=32, layers=2, patch=16, grid=2, t_width=32, t_layers=2, context=16, vocab=64, embed=32, heads=2)


def tiny_config() -> CLIPSegConfig:
    return CLIPSegConfig(
        text_config=dict(
            hidden_size=TINY["t_width"], intermediate_size=4 * TINY["t_width"], num_attention_heads=TINY["heads"],
            num_hidden_layers=TINY["t_layers"], max_position_embeddings=TINY["context"], vocab_size=TINY["vocab"],
            hidden_act="quick_gelu", bos_token_id=TINY["vocab"] - 2, eos_token_id=TINY["vocab"] - 1, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=TINY["width"], intermediate_size=4 * TINY["width"], num_attention_heads=TINY["heads"],
            num_hidden_layers=TINY["layers"], patch_size=TINY["patch"], image_size=TINY["patch"] * TINY["grid"],
            hidden_act="quick_gelu",
        ),
        projection_dim=TINY["embed"], reduce_dim=16, extract_layers=[0, 1], conditional_layer=0,
        decoder_num_attention_heads=2, decoder_intermediate_size=32, use_complex_transposed_convolution=True,
    )


def openai_clip_sd(seed=0) -> dict[str, torch.Tensor]:
    """Random weights in the OpenAI ``clip`` package layout (model.py: VisionTransformer + text tower)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    w, tw, e = TINY["width"], TINY["t_width"], TINY["embed"]
    sd = {
        "visual.class_embedding": r(w),
        "visual.conv1.weight": r(w, 3, TINY["patch"], TINY["patch"], scale=0.05),
        "visual.positional_embedding": r(TINY["grid"] ** 2 + 1, w),
        "visual.ln_pre.weight": 1 + r(w), "visual.ln_pre.bias": r(w),
        "visual.ln_post.weight": 1 + r(w), "visual.ln_post.bias": r(w),
        "visual.proj": r(w, e),
        "token_embedding.weight": r(TINY["vocab"], tw),
        "positional_embedding": r(TINY["context"], tw),
        "ln_final.weight": 1 + r(tw), "ln_final.bias": r(tw),
        "text_projection": r(tw, e),
        "logit_scale": torch.tensor(4.6052),
    }
    for prefix, d, n in (("visual.transformer", w, TINY["layers"]), ("transformer", tw, TINY["t_layers"])):
        for i in range(n):
            b = f"{prefix}.resblocks.{i}."
            sd.update({
                b + "attn.in_proj_weight": r(3 * d, d), b + "attn.in_proj_bias": r(3 * d),
                b + "attn.out_proj.weight": r(d, d), b + "attn.out_proj.bias": r(d),
                b + "ln_1.weight": 1 + r(d), b + "ln_1.bias": r(d),
                b + "mlp.c_fc.weight": r(4 * d, d), b + "mlp.c_fc.bias": r(4 * d),
                b + "mlp.c_proj.weight": r(d, 4 * d), b + "mlp.c_proj.bias": r(d),
                b + "ln_2.weight": 1 + r(d), b + "ln_2.bias": r(d),
            })
    return sd


def tiny_decoder_sd(seed=0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    module = OriginalDecoder(16, TINY["embed"], TINY["width"], 2, heads=2, ff=32, patch=TINY["patch"])
    return module.state_dict()


def openai_block(x, sd, prefix, heads, causal):
    """OpenAI ResidualAttentionBlock on [batch, tokens, width]."""
    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], sd[prefix + name + ".weight"], sd[prefix + name + ".bias"])

    d = x.shape[-1]
    attn = nn.MultiheadAttention(d, heads, batch_first=True)
    attn.load_state_dict({k[len(prefix + "attn.") :]: v for k, v in sd.items() if k.startswith(prefix + "attn.")})
    mask = torch.full((x.shape[1], x.shape[1]), float("-inf")).triu(1) if causal else None
    h = ln(x, "ln_1")
    x = x + attn(h, h, h, need_weights=False, attn_mask=mask)[0]
    h = F.linear(ln(x, "ln_2"), sd[prefix + "mlp.c_fc.weight"], sd[prefix + "mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return x + F.linear(h, sd[prefix + "mlp.c_proj.weight"], sd[prefix + "mlp.c_proj.bias"])


def openai_encode_image(sd, pixels):
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=TINY["patch"]).flatten(2).transpose(1, 2)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, x.shape[-1:], sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"])
    for i in range(TINY["layers"]):
        x = openai_block(x, sd, f"visual.transformer.resblocks.{i}.", TINY["heads"], causal=False)
    x = F.layer_norm(x[:, 0], x.shape[-1:], sd["visual.ln_post.weight"], sd["visual.ln_post.bias"])
    return x @ sd["visual.proj"]


def openai_encode_text(sd, ids):
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.shape[1]]
    for i in range(TINY["t_layers"]):
        x = openai_block(x, sd, f"transformer.resblocks.{i}.", TINY["heads"], causal=True)
    x = F.layer_norm(x, x.shape[-1:], sd["ln_final.weight"], sd["ln_final.bias"])
    return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ sd["text_projection"]


def load_tiny_model(hf_sd):
    model = CLIPSegForImageSegmentation(tiny_config())
    model.load_state_dict(hf_sd, strict=True)  # raises on any missing / unexpected key
    return model.eval()


def test_tiny_separate_clip_full_conversion():
    clip_sd, dec_sd = openai_clip_sd(), tiny_decoder_sd()
    hf_sd, report = convert_state_dict(dec_sd, clip_sd, config=tiny_config())
    assert report.not_provided == []
    assert set(report.dropped) == {"reduce.weight", "reduce.bias"}
    assert set(report.mapped) | set(report.dropped) == set(clip_sd) | set(dec_sd)
    model = load_tiny_model(hf_sd)
    state = model.state_dict()

    w = TINY["width"]
    in_proj = clip_sd["visual.transformer.resblocks.1.attn.in_proj_weight"]
    for i, name in enumerate("qkv"):
        layer = "clip.vision_model.encoder.layers.1.self_attn."
        assert torch.equal(state[f"{layer}{name}_proj.weight"], in_proj[i * w : (i + 1) * w])
        bias = clip_sd["transformer.resblocks.0.attn.in_proj_bias"][i * w : (i + 1) * w]
        assert torch.equal(state[f"clip.text_model.encoder.layers.0.self_attn.{name}_proj.bias"], bias)
    assert torch.equal(state["clip.visual_projection.weight"], clip_sd["visual.proj"].T)
    assert torch.equal(state["clip.text_projection.weight"], clip_sd["text_projection"].T)
    vision_positions = state["clip.vision_model.embeddings.position_embedding.weight"]
    assert torch.equal(vision_positions, clip_sd["visual.positional_embedding"])
    assert torch.equal(state["clip.text_model.embeddings.position_embedding.weight"], clip_sd["positional_embedding"])
    assert torch.equal(state["clip.logit_scale"], clip_sd["logit_scale"])

    # The mapped towers compute what OpenAI's CLIP computes.
    torch.manual_seed(2)
    pixels = torch.randn(2, 3, 32, 32)
    ids = torch.tensor([[62, 5, 9, 63, 0, 0], [62, 7, 63, 0, 0, 0]])  # bos .. eos (highest id) .. pad
    with torch.no_grad():
        image = model.clip.visual_projection(model.clip.vision_model(pixel_values=pixels).pooler_output)
        text = model.clip.text_projection(model.clip.text_model(input_ids=ids).pooler_output)
        torch.testing.assert_close(image, openai_encode_image(clip_sd, pixels), atol=ATOL, rtol=1e-5)
        torch.testing.assert_close(text, openai_encode_text(clip_sd, ids), atol=ATOL, rtol=1e-5)


def test_tiny_combined_checkpoint_matches_separate():
    clip_sd, dec_sd = openai_clip_sd(), tiny_decoder_sd()
    combined = dict(dec_sd)
    combined.update({"clip_model." + k: v for k, v in clip_sd.items()})
    # CLIPDenseBase sets self.model = self.clip_model.visual, so a full state dict repeats the visual tower.
    combined.update({"model." + k[len("visual.") :]: v for k, v in clip_sd.items() if k.startswith("visual.")})
    hf_combined, report = convert_state_dict(combined, config=tiny_config())
    hf_separate, _ = convert_state_dict(dec_sd, clip_sd, config=tiny_config())
    assert hf_combined.keys() == hf_separate.keys()
    assert all(torch.equal(hf_combined[k], hf_separate[k]) for k in hf_combined)
    assert "clip_model.visual.proj" in report.mapped
    assert "duplicate of clip_model.visual" in report.dropped["model.proj"]
    assert set(report.mapped) | set(report.dropped) == set(combined)
    load_tiny_model(hf_combined)


def test_openai_metadata_scalars_dropped_and_checked():
    clip_sd = openai_clip_sd()
    clip_sd.update(input_resolution=torch.tensor(32), context_length=torch.tensor(16), vocab_size=torch.tensor(64))
    _, report = convert_state_dict(tiny_decoder_sd(), clip_sd, config=tiny_config())
    assert {"input_resolution", "context_length", "vocab_size"} <= set(report.dropped)
    clip_sd["context_length"] = torch.tensor(77)
    with pytest.raises(ValueError, match="context_length"):
        convert_state_dict(tiny_decoder_sd(), clip_sd, config=tiny_config())


def test_unknown_key_is_rejected_by_name():
    dec_sd = tiny_decoder_sd()
    dec_sd["extra_blocks.0.linear1.weight"] = torch.zeros(32, 16)
    with pytest.raises(ValueError, match=r"extra_blocks\.0\.linear1\.weight"):
        convert_state_dict(dec_sd, openai_clip_sd(), config=tiny_config())
    clip_sd = openai_clip_sd()
    clip_sd["visual.mystery"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"visual\.mystery"):
        convert_state_dict(tiny_decoder_sd(), clip_sd, config=tiny_config())


def test_shape_mismatch_is_rejected():
    # reduce_dim in the config disagrees with film_mul.weight
    config = tiny_config()
    config.reduce_dim = 8
    with pytest.raises(ValueError, match=r"reduce_dim = 8.*film_mul\.weight"):
        convert_state_dict(tiny_decoder_sd(), openai_clip_sd(), config=config)
    # a single tensor of the wrong shape
    clip_sd = openai_clip_sd()
    clip_sd["visual.ln_pre.bias"] = torch.zeros(31)
    with pytest.raises(ValueError, match=r"pre_layrnorm\.bias \(from visual\.ln_pre\.bias\)"):
        convert_state_dict(tiny_decoder_sd(), clip_sd, config=tiny_config())
    # simple vs complex transposed convolution
    config = tiny_config()
    config.use_complex_transposed_convolution = False
    with pytest.raises(ValueError, match="use_complex_transposed_convolution"):
        convert_state_dict(tiny_decoder_sd(), openai_clip_sd(), config=config)
    # number of extract layers
    config = tiny_config()
    config.extract_layers = [0, 1, 1]
    with pytest.raises(ValueError, match=r"num_extract_layers = 3.*reduces\.N implies 2"):
        convert_state_dict(tiny_decoder_sd(), openai_clip_sd(), config=config)


def test_clip_passed_twice_is_rejected():
    combined = dict(tiny_decoder_sd())
    combined.update({"clip_model." + k: v for k, v in openai_clip_sd().items()})
    with pytest.raises(ValueError, match="do not pass a separate CLIP"):
        convert_state_dict(combined, openai_clip_sd(), config=tiny_config())


# ---------------------------------------------------------------------------------------------
# Files: loading, end-to-end conversion
# ---------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.* are deprecated; OpenAI's file is one
def test_torchscript_needs_explicit_permission(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 3)), str(path))
    with pytest.raises(ValueError, match="allow_torchscript"):
        load_state_dict_file(path)
    assert set(load_state_dict_file(path, allow_torchscript=True)) == {"weight", "bias"}
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_state_dict_file(tmp_path / "nope.pth")


def save_tiny_files(tmp_path):
    decoder, clip = tmp_path / "rd16-tiny.pth", tmp_path / "clip-tiny.pth"
    torch.save(tiny_decoder_sd(), decoder)
    torch.save(openai_clip_sd(), clip)
    return decoder, clip


def test_tiny_end_to_end_folder(tmp_path):
    from transformers import CLIPSegProcessor

    decoder, clip = save_tiny_files(tmp_path)
    out = convert_original_checkpoint(
        decoder, tmp_path / "out", clip_path=clip, vocab_path=BPE_PATH, config=tiny_config()
    )
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "preprocessor_config.json"} <= names
    assert "processor_config.json" in names or "tokenizer_config.json" in names
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # temp folder renamed away

    model = CLIPSegForImageSegmentation.from_pretrained(out, local_files_only=True)
    expected, _ = convert_state_dict(tiny_decoder_sd(), openai_clip_sd(), config=tiny_config())
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    assert json.loads((out / "conversion_report.json").read_text())["random_clip_weights"] is False

    processor = CLIPSegProcessor.from_pretrained(out, local_files_only=True)
    assert processor.tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]
    assert processor.tokenizer.model_max_length == TINY["context"]
    image = torch.zeros(3, 100, 60, dtype=torch.uint8).numpy().transpose(1, 2, 0)
    assert tuple(processor(images=image, return_tensors="pt").pixel_values.shape) == (1, 3, 352, 352)


def test_decoder_only_refuses_without_clip(tmp_path):
    decoder, _ = save_tiny_files(tmp_path)
    with pytest.raises(ValueError, match="allow_random_clip"):
        convert_original_checkpoint(decoder, tmp_path / "out", vocab_path=BPE_PATH, config=tiny_config())
    assert not (tmp_path / "out").exists()


def test_failed_write_leaves_no_folder(tmp_path, monkeypatch):
    import fastclipseg.model.convert as convert

    def broken_save(model, folder):
        (folder / "partial.bin").parent.mkdir(parents=True, exist_ok=True)
        (folder / "partial.bin").write_bytes(b"x")
        raise OSError("disk full")

    decoder, clip = save_tiny_files(tmp_path)
    monkeypatch.setattr(convert, "_save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        convert_original_checkpoint(decoder, tmp_path / "out", clip_path=clip, config=tiny_config())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip-tiny.pth", "rd16-tiny.pth"]


def test_existing_output_is_not_overwritten_by_default(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert_original_checkpoint(DECODER_PATH, tmp_path / "out", allow_random_clip=True)


def test_overwrite_replaces_folder_atomically(tmp_path):
    decoder, clip = save_tiny_files(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.warns(UserWarning, match="no vocab_path"):
        convert_original_checkpoint(decoder, out, clip_path=clip, config=tiny_config(), overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip-tiny.pth", "out", "rd16-tiny.pth"]


@pytest.mark.fullsize
def test_real_decoder_end_to_end_with_random_clip(tmp_path, real_decoder_sd, real_converted):
    from transformers import CLIPSegProcessor

    with pytest.warns(UserWarning, match="RANDOM"):
        out = convert_original_checkpoint(
            DECODER_PATH, tmp_path / "rd64", vocab_path=BPE_PATH, allow_random_clip=True
        )
    model = CLIPSegForImageSegmentation.from_pretrained(out, local_files_only=True)
    assert model.config.fastclipseg_random_clip is True
    state = model.state_dict()
    hf_sd, _ = real_converted
    for key, tensor in decoder_part(hf_sd).items():
        assert torch.equal(state["decoder." + key], tensor), key
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["random_clip_weights"] is True
    assert set(report["dropped"]) == {"reduce.weight", "reduce.bias"}
    processor = CLIPSegProcessor.from_pretrained(out, local_files_only=True)
    assert processor.image_processor.size == {"height": 352, "width": 352}


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

# OpenAI clip/simple_tokenizer.py's pre-tokenizer pattern (used with re.IGNORECASE there).
OPENAI_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class ReferenceSimpleTokenizer:
    """OpenAI's SimpleTokenizer.encode, built straight from the .gz (ftfy replaced by NFC)."""

    def __init__(self, bpe_path):
        import regex

        merges = read_bpe_merges(bpe_path)
        self.encoder = build_vocab(merges)
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.pattern = regex.compile(OPENAI_PATTERN, regex.IGNORECASE)

    def bpe(self, token):
        word = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = [(word[i], word[i + 1]) for i in range(len(word) - 1)]
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(self, text):
        text = unicodedata.normalize("NFC", html.unescape(html.unescape(text)).strip())
        text = " ".join(text.split()).lower()
        ids = []
        for token in self.pattern.findall(text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids += [self.encoder[piece] for piece in self.bpe(token)]
        return [self.encoder["<|startoftext|>"]] + ids + [self.encoder["<|endoftext|>"]]


TEXTS = [
    "a photo of a cat",
    "a cat",
    "Café naïve, crème brûlée à Zürich: ÄÖÜ ß",
    "日本語のテキスト、猫と犬",
    "한국어 고양이",
    "🐱 cat emoji 🚀🔥 👩‍👩‍👧",
    "it's the dog's   ball!!  (2024) #1 -- 3.14",
    "Ελληνικά και русский текст",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    write_clip_tokenizer_files(BPE_PATH, folder)
    return folder


def test_tokenizer_files_match_simple_tokenizer(tokenizer_dir):
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    merges = (tokenizer_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) == 1 + 48894

    tokenizer = load_clip_tokenizer(tokenizer_dir)
    assert len(tokenizer) == 49408
    assert tokenizer("a cat").input_ids == [49406, 320, 2368, 49407]
    reference = ReferenceSimpleTokenizer(BPE_PATH)
    for text in TEXTS:
        assert tokenizer(text).input_ids == reference.encode(text), text


def test_tokenizer_files_match_shipped_hf_files(tokenizer_dir):
    """clipseg-shapes/ carries HuggingFace's CLIP vocab.json/merges.txt: ours must be the same."""
    shipped = DATA_DIR / "clipseg-shapes"
    if not (shipped / "vocab.json").is_file() or not (shipped / "merges.txt").is_file():
        pytest.skip(f"no HuggingFace CLIP tokenizer files in {shipped}")
    ours = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    assert ours == json.loads((shipped / "vocab.json").read_text(encoding="utf-8"))
    ours_merges = (tokenizer_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert ours_merges[1:] == (shipped / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
