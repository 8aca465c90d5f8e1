"""Issue 19: ways to quantise the vision stage with ONNX Runtime, timed in turns in one run.

The full-size model's vision stage (one 352x352 image, `--threads` threads) exported once to
ONNX in fp32, then quantised each way:

- dynamic, per-tensor weights: what `backend="onnxruntime", precision="int8"` builds;
- dynamic, per-channel weights;
- dynamic after ONNX Runtime's `quant_pre_process` (shape inference and graph optimisation),
  which its docs recommend and which the backend used to run (4 s of every build);
- dynamic with the attention's activation-by-activation MatMuls quantised too (`MatMulConstBOnly`
  off);
- static, per-channel weights, activations calibrated on 8 natural images, as QDQ nodes and as
  QOperator (fused integer operators) graphs.

For each it reports the median time, the mask agreement with fp32 (logits > 0 on the model's
grid, after the fp32 decoder with the real refined weights, 6 natural images x 4 prompts) and
the quantisation time. TorchScript fp32 and bf16 (where the CPU has native bf16) give the scale.

    python benchmarks/bench_ort_int8.py [--threads 2] [--repeats 7]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from _common import VisionMaskCheck, build_fullsize_model, vision_bench_arguments, write_vision_result
from fastclipseg import FastSegmenter
from fastclipseg.bench.measure import interleaved_median_seconds
from fastclipseg.engines import cpu_has_native_bf16, create_engine


def main() -> None:
    args = vision_bench_arguments(__doc__)
    from fastclipseg.engines.onnx_engine import OnnxRuntimeEngine
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model, processor, _ = build_fullsize_model()
    segmenter = FastSegmenter(model, processor)  # torch fp32: the reference
    check = VisionMaskCheck(segmenter)
    pixels, mask_agreement = check.pixels, check.agreement

    folder = Path(tempfile.mkdtemp(prefix="fastclipseg-ort-int8-"))
    fp32_engine = create_engine("onnxruntime", segmenter.stages, "cpu", "fp32", cache_dir=folder / "cache")
    fp32_path = next((folder / "cache").rglob("vision.onnx"))
    del fp32_engine

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"pixel_values": pixels(seed).numpy()} for seed in range(8)])

        def get_next(self):
            return next(self.batches, None)

    def pre_processed(path: Path) -> Path:
        quant_pre_process(str(fp32_path), str(path))
        return path

    dynamic = {"weight_type": QuantType.QInt8, "op_types_to_quantize": ["MatMul", "Gemm"]}
    static = {"calibration_data_reader": None, "per_channel": True, "activation_type": QuantType.QUInt8,
              "weight_type": QuantType.QInt8, "op_types_to_quantize": ["MatMul", "Gemm"]}
    variants = {
        "dynamic, per-tensor (the backend's int8)": lambda out: quantize_dynamic(fp32_path, out, **dynamic),
        "dynamic, per-channel": lambda out: quantize_dynamic(fp32_path, out, per_channel=True, **dynamic),
        "dynamic, after quant_pre_process": lambda out: quantize_dynamic(
            pre_processed(out.with_suffix(".pre.onnx")), out, **dynamic),
        "dynamic, attention MatMuls too": lambda out: quantize_dynamic(
            fp32_path, out, extra_options={"MatMulConstBOnly": False}, **dynamic),
        "static QDQ, per-channel, 8 images": lambda out: quantize_static(
            fp32_path, out, **{**static, "calibration_data_reader": Calibration()}, quant_format=QuantFormat.QDQ),
        "static QOperator, per-channel, 8 images": lambda out: quantize_static(
            fp32_path, out, **{**static, "calibration_data_reader": Calibration()}, quant_format=QuantFormat.QOperator),
    }

    image = pixels(100)
    rows: dict[str, dict] = {}
    runners = {}
    with torch.inference_mode():
        scripted = torch.jit.freeze(torch.jit.trace(segmenter.stages.vision, image).eval())
    runners["torchscript fp32"] = lambda: scripted(image)
    rows["torchscript fp32"] = {"mask_agreement": 1.0}
    if cpu_has_native_bf16():
        bf16 = FastSegmenter(model, processor, backend="torchscript", precision="bf16", cache=False)
        runners["torchscript bf16"] = lambda: bf16.core.engine.encode_images(image)
        # Its bf16 activations go through the reference's fp32 decoder, like every row here.
        rows["torchscript bf16"] = {"mask_agreement": mask_agreement(lambda px: bf16.core.engine.encode_images(px).float())}
    for index, (name, quantize) in enumerate(variants.items()):
        out = folder / f"variant-{index}.onnx"
        started = time.perf_counter()
        quantize(out)
        quantize_s = time.perf_counter() - started
        engine = OnnxRuntimeEngine({"vision": out}, "int8", threads=args.threads)
        rows[name] = {"quantize_s": quantize_s, "mask_agreement": mask_agreement(engine.encode_images),
                      "bytes": out.stat().st_size}
        runners[name] = lambda engine=engine: engine.encode_images(image)
        print(f"built {name} in {quantize_s:.1f} s", flush=True)
    with torch.inference_mode():
        for name, seconds in interleaved_median_seconds(runners, args.repeats).items():
            rows[name]["run_s"] = seconds
    base = rows["dynamic, per-tensor (the backend's int8)"]["run_s"]
    for name, row in rows.items():
        row["vs_backend_int8"] = base / row["run_s"]
        extra = f"  quantise {row['quantize_s']:4.1f} s" if "quantize_s" in row else ""
        print(f"{name:42s} {row['run_s'] * 1e3:7.1f} ms  x{row['vs_backend_int8']:.2f} of the backend's int8  "
              f"masks {row['mask_agreement']:.3%} as fp32{extra}")
    path = write_vision_result("bench_ort_int8", args.threads, rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
