"""precision="auto" and the int8 decoder's dtype: chosen from the CPU's instruction sets."""

from __future__ import annotations

import pytest
import torch
from fastclipseg import FastSegmenter
from fastclipseg.bench.measure import natural_image
from fastclipseg.engines import (
    artifacts,
    available_precisions,
    choose_precision,
    onnxruntime_installed,
    precision,
    resolve_backend,
)
from fastclipseg.engines.precision import int8_decoder_dtype
from helpers.parity import assert_relative_close

CPU = torch.device("cpu")


def _cpu(monkeypatch, *, amx: bool, vnni: bool, bf16: bool) -> None:
    """Pretend the CPU has (or lacks) these instruction sets; every check reads these names."""
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(precision, "cpu_has_vnni", lambda: vnni)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: bf16)
    import fastclipseg.engines as engines

    monkeypatch.setattr(engines, "cpu_has_native_bf16", lambda: bf16)


@pytest.mark.parametrize(
    "amx,vnni,bf16,expected",
    [
        (True, True, True, "bf16"),  # Intel Xeon with AMX
        (False, True, True, "int8"),  # AMD EPYC: AVX512-BF16 and VNNI, no AMX
        (False, True, False, "int8"),  # VNNI without bf16 (e.g. Cascade Lake)
        (False, False, False, "fp32"),  # AVX2 only: int8 without VNNI is unmeasured
    ],
)
def test_auto_follows_the_cpu(monkeypatch, amx, vnni, bf16, expected):
    _cpu(monkeypatch, amx=amx, vnni=vnni, bf16=bf16)
    choice = choose_precision("auto", CPU)
    assert choice.precision == expected
    assert choice.reason  # the CLI prints it


def test_auto_is_fp32_on_cuda_and_named_precisions_pass_through(monkeypatch):
    _cpu(monkeypatch, amx=True, vnni=True, bf16=True)
    assert choose_precision("auto", torch.device("cuda")).precision == "fp32"
    for name in ("fp32", "bf16", "fp16", "int8"):
        assert choose_precision(name, CPU) == (name, "as asked")


def test_int8_decoder_is_bf16_only_where_native_and_not_in_onnxruntime(monkeypatch):
    _cpu(monkeypatch, amx=False, vnni=True, bf16=True)
    assert int8_decoder_dtype("torch", CPU) == torch.bfloat16
    assert int8_decoder_dtype("torchscript", CPU) == torch.bfloat16
    assert int8_decoder_dtype("onnxruntime", CPU) == torch.float32  # no fast bf16 kernels there
    assert resolve_backend("auto", CPU, "int8") == "torchscript"
    _cpu(monkeypatch, amx=False, vnni=True, bf16=False)
    assert int8_decoder_dtype("torch", CPU) == torch.float32
    assert resolve_backend("auto", CPU, "int8") in ("onnxruntime", "torchscript")  # onnxruntime where installed


def test_int8_cache_entries_differ_by_decoder_dtype(monkeypatch):
    # A cache folder shared by two CPUs must not hand one the other's decoder.
    describe = lambda: artifacts.describe_build("torchscript", "int8", CPU, "w", 352, 77, 2)  # noqa: E731
    _cpu(monkeypatch, amx=False, vnni=True, bf16=True)
    with_bf16 = describe()
    _cpu(monkeypatch, amx=False, vnni=True, bf16=False)
    assert with_bf16["int8_decoder"] == "bfloat16" and describe()["int8_decoder"] == "float32"
    assert "int8_decoder" not in artifacts.describe_build("torchscript", "fp32", CPU, "w", 352, 77, 2)


@pytest.mark.parametrize("bf16", [True, False])
def test_int8_engine_runs_the_decoder_in_the_chosen_dtype(tiny_model_dir, tiny_segmenter, monkeypatch, bf16):
    _cpu(monkeypatch, amx=False, vnni=True, bf16=bf16)
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, backend="torch", precision="int8")
    decoder = segmenter.core.engine.decoder
    assert next(decoder.parameters()).dtype == (torch.bfloat16 if bf16 else torch.float32)
    image = natural_image(48, 64, seed=1)
    ours = segmenter.segment(image, ["a cat", "dog"])
    reference = tiny_segmenter.segment(image, ["a cat", "dog"])
    assert ours.logits.dtype == reference.logits.dtype
    # Tiny random weights: a bound on the relative logit error, as for every int8 path.
    scale = abs(reference.logits).max()
    assert abs(ours.logits - reference.logits).max() <= 0.2 * scale


def test_auto_through_the_api(tiny_model_dir):
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, precision="auto")
    assert segmenter.precision == choose_precision("auto", CPU).precision
    assert segmenter.backend == "torch"  # from_pretrained's default backend


def test_unknown_precision_names_the_choices(tiny_model_dir):
    with pytest.raises(ValueError, match="precisions are auto, fp32, bf16, fp16, int8"):
        FastSegmenter.from_pretrained(tiny_model_dir, precision="int4")


def test_cpu_prompt_stage_takes_the_precision(tiny_model_dir):
    # The text tower was most of an int8 process's memory; its embeddings still come back in fp32.
    int8 = FastSegmenter.from_pretrained(tiny_model_dir, precision="int8")
    prompt = int8.core.engine.prompt
    assert not any(type(module) is torch.nn.Linear for module in prompt.modules())  # all quantised
    assert prompt.token_embedding.rows.dtype == torch.int8
    assert int8.encode_prompts(["a cat"]).dtype == torch.float32
    if precision.cpu_has_native_bf16():
        bf16 = FastSegmenter.from_pretrained(tiny_model_dir, precision="bf16")
        assert {p.dtype for p in bf16.core.engine.prompt.parameters()} == {torch.bfloat16}
        assert bf16.encode_prompts(["a cat"]).dtype == torch.float32


def test_int8_token_table_is_within_half_a_step_of_each_row():
    torch.manual_seed(0)
    table = torch.nn.Embedding(50, 16)
    with torch.no_grad():
        table.weight[3] = 0  # an all-zero row must not divide by zero
        table.weight[7] *= 100  # rows of very different sizes get their own scales
    quantized = precision.Int8Embedding(table)
    ids = torch.arange(50).reshape(5, 10)
    got, expected = quantized(ids), table(ids).detach()
    steps = quantized.scale[ids]
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert ((got - expected).abs() <= steps / 2 + 1e-7).all()
    assert not got[ids == 3].any() and torch.isfinite(got).all()
    assert (quantized.num_embeddings, quantized.embedding_dim) == (50, 16)


def test_auto_takes_the_fastest_precision_a_named_backend_runs(monkeypatch):
    _cpu(monkeypatch, amx=True, vnni=True, bf16=True)
    onnxruntime = ("fp32", "int8")  # no bf16 there
    choice = choose_precision("auto", CPU, onnxruntime)
    assert choice.precision == "int8" and "this backend" in choice.reason
    _cpu(monkeypatch, amx=False, vnni=False, bf16=False)
    assert choose_precision("auto", CPU, onnxruntime).precision == "fp32"


@pytest.mark.skipif(not onnxruntime_installed(), reason="onnxruntime is not installed")
def test_auto_with_a_named_backend_runs(tiny_model_dir):
    # Was a ValueError on a CPU with AMX: auto chose bf16, which onnxruntime does not offer.
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", precision="auto")
    expected = choose_precision("auto", CPU, available_precisions("onnxruntime", "cpu")).precision
    assert segmenter.precision == expected


@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_linear_layers_match_torchs_own_dynamic_quantisation(per_channel):
    import copy

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.GELU(), torch.nn.Linear(40, 8, bias=False)).eval()
    ours = precision.quantize_linear_int8(module, per_channel=per_channel)
    layers = {torch.nn.Linear: per_channel_dynamic_qconfig} if per_channel else {torch.nn.Linear}
    torchs = quantize_dynamic(copy.deepcopy(module), layers, dtype=torch.qint8)
    x = torch.randn(5, 24)
    assert torch.equal(ours(x), torchs(x))
    assert [(layer.in_features, layer.out_features) for layer in (ours[0], ours[2])] == [(24, 40), (40, 8)]
    assert type(module[0]) is torch.nn.Linear  # the original is left as it was


def test_folded_quick_gelu_is_the_same_function_on_a_copy():
    import copy

    from fastclipseg.model.stages import MLP
    from fastclipseg.model.standalone import QuickGELU

    torch.manual_seed(0)
    reference = torch.nn.Module()
    reference.fc1, reference.fc2 = torch.nn.Linear(16, 64), torch.nn.Linear(64, 16)
    reference.activation_fn = QuickGELU()
    stage = torch.nn.Sequential(MLP(reference), MLP(reference, activation=torch.nn.GELU()))
    folded = precision.fold_quick_gelu(copy.deepcopy(stage))
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        assert_relative_close(folded(x), stage(x), 1e-5)
    assert isinstance(folded[0].activation, torch.nn.SiLU)  # one elementwise pass
    assert isinstance(folded[1].activation, torch.nn.GELU)  # another activation is left alone
    assert stage[0].fc1 is reference.fc1 and isinstance(stage[0].activation, QuickGELU)  # the original is untouched
