"""Issue 19, first measurement: the vision stage (the network's 76 GFLOP per image) compiled by
torch.export + AOTInductor, in fp32, bf16 (autocast at export) and static int8 (PT2E with torchao's
X86InductorQuantizer: per-channel int8 weights, activations calibrated on 8 natural images), against
TorchScript fp32 and today's fastest CPU int8 (ONNX Runtime, dynamic int8 linear layers), in one run
on the full-size model, one 352x352 image, `--threads` threads.

It measures candidates for an `aoti` backend; nothing here is a backend yet. For each compiled
stage it also reports the mask agreement with fp32 (logits > 0 on the model's grid, after the
fp32 decoder with the real refined weights; 6 natural images x 4 prompts). Needs torchao for the
int8 row (`pip install torchao`; skipped with a note otherwise). Compile times are reported: they
are what a first run would pay.

    python benchmarks/bench_pt2e.py [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path

import torch
from _common import VisionMaskCheck, build_fullsize_model, vision_bench_arguments, write_vision_result
from fastclipseg import FastSegmenter
from fastclipseg.bench.measure import interleaved_median_seconds
from fastclipseg.engines import cpu_has_native_bf16, create_engine


def relative_error(got, reference) -> float:
    got = got if isinstance(got, (list, tuple)) else [got]
    reference = reference if isinstance(reference, (list, tuple)) else [reference]
    return max(float((g.float() - r.float()).abs().max() / r.float().abs().max()) for g, r in zip(got, reference))


def aoti_package(program: torch.export.ExportedProgram, folder: Path, name: str):
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(folder / f"{name}.pt2"))
    return torch._inductor.aoti_load_package(path)


def main() -> None:
    args = vision_bench_arguments(__doc__)
    model, processor, _ = build_fullsize_model()
    segmenter = FastSegmenter(model, processor)  # torch fp32: the reference
    vision = segmenter.stages.vision
    check = VisionMaskCheck(segmenter)
    pixels, mask_agreement = check.pixels, check.agreement

    image = pixels(100)
    folder = Path(tempfile.mkdtemp())
    rows: dict[str, dict] = {}
    runners: dict[str, object] = {}  # timed at the end, in turns
    with torch.inference_mode():
        reference = vision(image)
        started = time.perf_counter()
        scripted = torch.jit.freeze(torch.jit.trace(vision, image).eval())
        rows["torchscript fp32"] = {"compile_s": time.perf_counter() - started, "rel_error": 0.0}
        runners["torchscript fp32"] = lambda: scripted(image)
    if cpu_has_native_bf16():  # today's `auto` bf16, the row AOTInductor bf16 would replace
        started = time.perf_counter()
        bf16 = create_engine("torchscript", segmenter.stages, "cpu", "bf16")
        encode_bf16 = lambda px: bf16.encode_images(px).float()  # noqa: E731 - the reference's fp32 decoder reads it
        with torch.inference_mode():
            rows["torchscript bf16"] = {"compile_s": time.perf_counter() - started,
                                        "rel_error": relative_error(encode_bf16(image), reference)}
        rows["torchscript bf16"]["mask_agreement"] = mask_agreement(encode_bf16)
        runners["torchscript bf16"] = lambda: bf16.encode_images(image)
    for precision in ("fp32", "bf16"):
        started = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            compiled = aoti_package(torch.export.export(vision, (image,)), folder, f"vision-{precision}")
        compile_s = time.perf_counter() - started
        with torch.inference_mode():
            error = relative_error(compiled(image), reference)
            rows[f"aoti {precision}"] = {"compile_s": compile_s, "rel_error": error}
        rows[f"aoti {precision}"]["mask_agreement"] = mask_agreement(compiled)
        runners[f"aoti {precision}"] = lambda stage=compiled: stage(image)
    if importlib.util.find_spec("onnxruntime") is not None:
        started = time.perf_counter()
        engine = create_engine("onnxruntime", segmenter.stages, "cpu", "int8", threads=args.threads)
        compile_s = time.perf_counter() - started
        with torch.inference_mode():
            rows["onnxruntime int8 (dynamic)"] = {
                "compile_s": compile_s, "rel_error": relative_error(engine.encode_images(image), reference),
                "mask_agreement": mask_agreement(engine.encode_images)}
        runners["onnxruntime int8 (dynamic)"] = lambda: engine.encode_images(image)
    if importlib.util.find_spec("torchao") is None:
        rows["aoti int8 (pt2e static)"] = {"skipped": "torchao is not installed"}
    else:
        import torch._inductor.config as inductor_config
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        started = time.perf_counter()
        with torch.no_grad():
            quantizer = x86.X86InductorQuantizer()
            quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
            prepared = prepare_pt2e(torch.export.export(vision, (image,)).module(), quantizer)
            for seed in range(8):
                prepared(pixels(seed))
            converted = convert_pt2e(prepared)
            inductor_config.freezing = True  # int8 weights prepacked for oneDNN
            compiled = aoti_package(torch.export.export(converted, (image,)), folder, "vision-int8")
        compile_s = time.perf_counter() - started
        with torch.inference_mode():
            rows["aoti int8 (pt2e static)"] = {"compile_s": compile_s,
                                               "rel_error": relative_error(compiled(image), reference)}
        rows["aoti int8 (pt2e static)"]["mask_agreement"] = mask_agreement(compiled)
        runners["aoti int8 (pt2e static)"] = lambda stage=compiled: stage(image)
    with torch.inference_mode():
        for name, seconds in interleaved_median_seconds(runners, args.repeats).items():
            rows[name]["run_s"] = seconds
    base = rows["torchscript fp32"]["run_s"]
    for name, row in rows.items():
        if "run_s" in row:
            row["speedup_vs_torchscript_fp32"] = base / row["run_s"]
            print(f"{name:26s} run {row['run_s'] * 1e3:7.1f} ms  x{row['speedup_vs_torchscript_fp32']:.2f}  "
                  f"compile {row['compile_s']:5.1f} s  max error {row['rel_error']:.1e} of the largest activation"
                  + (f", masks {row['mask_agreement']:.2%} as fp32" if "mask_agreement" in row else ""))
        else:
            print(f"{name:26s} {row['skipped']}")
    path = write_vision_result("bench_pt2e", args.threads, rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
