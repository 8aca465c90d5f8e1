"""The `fastclipseg` command line."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from tqdm import tqdm
from typer.core import TyperGroup

try:  # typer >= 0.2x carries its own copy of click; older releases use click itself
    from typer._click import exceptions as _click_errors
except ImportError:
    from click import exceptions as _click_errors

from .model import DEFAULT_MODEL
from .ops.edges import DEFAULT_EDGES as EDGE_DEFAULTS
from .ops.validation import DEFAULT_MAX_PIXELS, check_batch_size, check_max_pixels


class _OneLineErrors(TyperGroup):
    """Usage errors (a bad option value, a missing argument) as one `error: ...` line with exit
    status 2, like every other failure of this command line, instead of click's framed panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                **extra)
        except _click_errors.ClickException as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # click >= 8.2: the help text, as click prints it
                error.show()
                sys.exit(error.exit_code)
            context = getattr(error, "ctx", None)
            hint = f" (see {context.command_path} --help)" if isinstance(error, _click_errors.UsageError) and context else ""
            message = " ".join(error.format_message().split())  # one line, however click wrapped it
            typer.echo(f"error: {message}{hint}", err=True)
            sys.exit(error.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    help="Fast text-prompted image segmentation with CLIPSeg.",
    no_args_is_help=True,
    # click's plain help: paragraphs reflowed to the terminal, `--overlay / --no-overlay` flags, and no
    # rich import on every start.
    rich_markup_mode=None,
    context_settings={"max_content_width": 100},
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _prepare_out_dir(out: Path) -> None:
    """Fail before any work if the output folder cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".fastclipseg-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        _fail(f"cannot write to output folder {out}: {error.strerror or error}")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"fastclipseg {__version__}")
        raise typer.Exit()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not the stream of the first
    call (a replaced stderr, e.g. a test runner's, would otherwise be written after it closed)."""

    def emit(self, record) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"warning: {message}", err=True)


def _quiet_libraries() -> None:
    """What a command prints is for its user: warnings as one `warning: ...` line; libraries'
    deprecation notices (meant for developers) hidden unless asked for with -W / PYTHONWARNINGS;
    transformers' info logs hidden; progress bars only on a terminal (HuggingFace's too)."""
    warnings.showwarning = _show_warning
    if not sys.warnoptions:
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Fast text-prompted image segmentation with CLIPSeg."""
    _quiet_libraries()
    # The library logs what takes time (compiling a backend, loading it from the cache) at INFO.
    logger = logging.getLogger("fastclipseg")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


BACKEND_HELP = ("Backend: torch (eager reference), torchscript, onnxruntime, aoti (torch.export + AOTInductor; its first "
                "start compiles C++ for about a minute), cudagraphs or tensorrt (CUDA), or auto (the fastest for the device and "
                "precision).")
PRECISION_HELP = ("Precision: fp32 (exact), bf16 (CPUs with AVX512-BF16/AMX, or CUDA), fp16 (CUDA), int8 (int8 linear "
                  "layers in the vision and text towers; on CUDA through tensorrt, with --calibration), or auto (the fastest measured "
                  "for this CPU that --backend runs: bf16 with AMX, int8 with VNNI, else fp32; fp32 on CUDA).")
CACHE_DIR_HELP = "Folder for compiled backends (default: $FASTCLIPSEG_CACHE or the user cache folder)."


# Options shared by segment, video and batch (typer reads these objects; sharing them keeps one text).
DEVICE_OPTION = typer.Option("cpu", "--device", metavar="DEVICE", help="Torch device to run on, e.g. cpu or cuda.")
PRECISION_OPTION = typer.Option(None, "--precision", metavar="NAME", help=PRECISION_HELP + " Default: auto, or an export's own.")
CACHE_DIR_OPTION = typer.Option(None, "--cache-dir", metavar="FOLDER", help=CACHE_DIR_HELP)
CACHE_OPTION = typer.Option(True, "--cache/--no-cache", help="Keep compiled backends on disk and reuse them (--no-cache: compile afresh, keep nothing).")
THRESHOLD_OPTION = typer.Option(0.5, "--threshold", "-t", metavar="P", help="Probability above which a pixel is in the mask, in [0, 1].")
CALIBRATION_OPTION = typer.Option(None, "--calibration", metavar="FOLDER", help="Folder of images like yours to calibrate --backend tensorrt --precision int8 on.")
THREADS_OPTION = typer.Option(None, "--threads", metavar="N", help="CPU threads for the network and the native kernels (default: all cores).")
INSTANCES_OPTION = typer.Option(False, "--instances/--no-instances", help='List each mask\'s objects (connected components, 8-connected) under "instances" in each record: score, stability, area, bbox, RLE.')
MIN_AREA_OPTION = typer.Option(0, "--min-area", metavar="N", help="With --instances: leave out objects smaller than N pixels.")
STREAM_COCO_OPTION = typer.Option(None, "--coco", metavar="FILE", help="Also write a COCO results file (pycocotools' loadRes reads it) once the run is complete, from OUT/masks.jsonl (so a resumed run's earlier items count): one detection per non-empty mask, or per object with --instances; image_id is the image's position among the collected images (batch) or the frame number + 1 (video), category_id the prompt's, from 1.")
EDGES_OPTION = typer.Option(False, "--edges/--no-edges", help="Masks that follow the image's edges: the fast guided filter of the probabilities, guided by the image, instead of bilinear upsampling (README: \"Masks that follow edges\").")
EDGE_RADIUS_OPTION = typer.Option(None, "--edge-radius", metavar="R", help=f"With --edges: the filter's box radius, in cells of its grid (default {EDGE_DEFAULTS.radius}).")
EDGE_SUBSAMPLE_OPTION = typer.Option(None, "--edge-subsample", metavar="S", help=f"With --edges: the filter's grid is the model's 352x352 divided by S (default {EDGE_DEFAULTS.subsample}).")
EDGE_EPS_OPTION = typer.Option(None, "--edge-eps", metavar="E", help=f"With --edges: regularisation, > 0; smaller follows fainter edges (default {EDGE_DEFAULTS.eps:g}).")
EDGE_GUIDE_OPTION = typer.Option(None, "--edge-guide", metavar="GUIDE", help=f"With --edges: colour or grey (grey is cheaper but misses edges between colours of one brightness; default {EDGE_DEFAULTS.guide}).")
MODEL_HELP = "Hub id, local model folder (transformers layout), or a folder written by `fastclipseg export`."
MODEL_OPTION = typer.Option(DEFAULT_MODEL, "--model", "-m", metavar="MODEL", help=MODEL_HELP)


@app.command()
def segment(
    images: list[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files to segment (any format Pillow reads)."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", metavar="PROMPT", help='A text prompt or a prompt expression, e.g. "(a dog OR a cat) AND NOT a collar {+5}" (AND, OR, NOT in capitals; {+N}/{-N} dilate/erode by N pixels, {t=0.3} a per-term threshold); repeat for several prompts.'),
    model: str = MODEL_OPTION,
    out: Path = typer.Option(Path("fastclipseg-out"), "--out", "-o", metavar="FOLDER", help="Output folder (created if missing)."),
    threshold: float = THRESHOLD_OPTION,
    overlay: bool = typer.Option(False, "--overlay/--no-overlay", help="Also write <stem>_overlay.png: each mask in its own colour with its contour, and a legend of prompts and scores."),
    heatmap: bool = typer.Option(False, "--heatmap/--no-heatmap", help="Also write <stem>_heatmap.png: the probabilities (the highest over the prompts) as a heat-map over the image."),
    instances: bool = INSTANCES_OPTION,
    min_area: int = MIN_AREA_OPTION,
    edges: bool = EDGES_OPTION,
    edge_radius: Optional[int] = EDGE_RADIUS_OPTION,
    edge_eps: Optional[float] = EDGE_EPS_OPTION,
    edge_guide: Optional[str] = EDGE_GUIDE_OPTION,
    edge_subsample: Optional[int] = EDGE_SUBSAMPLE_OPTION,
    coco: Optional[Path] = typer.Option(None, "--coco", metavar="FILE", help="Also write a COCO results file (pycocotools' loadRes reads it): one detection per non-empty mask, or per object with --instances; image_id is the image's position among IMAGE... and category_id the prompt's, both from 1."),
    device: str = DEVICE_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", metavar="N", help="Refuse images with more pixels than this."),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", metavar="NAME", help=BACKEND_HELP + " Default: torch, or an export's own."),
    precision: Optional[str] = PRECISION_OPTION,
    cache_dir: Optional[Path] = CACHE_DIR_OPTION,
    cache: bool = CACHE_OPTION,
    calibration: Optional[Path] = CALIBRATION_OPTION,
) -> None:
    """Segment IMAGES with each PROMPT.

    For each image writes <stem>.json into --out (image size; per prompt: prompt, score,
    stability, area, bbox as COCO [x, y, width, height], COCO RLE; its JSON Schema is
    fastclipseg/schemas/segment.schema.json) and one <stem>_<k>_<prompt>.png mask per prompt
    (255 inside), and prints one line per image. An image that cannot be read gets a one-line
    error and the others are still processed; the exit status is then 1. With --coco, the COCO
    results file is written once all images are done.
    """
    from .ops.validation import check_threshold, normalize_prompts
    from .prompts.resolve import resolve_prompts

    try:
        prompts = normalize_prompts(prompt, "--prompt")
        threshold = check_threshold(threshold)
        resolve_prompts(prompts, name="--prompt")  # parses every expression: a syntax error stops here, once
    except (TypeError, ValueError) as error:
        _fail(str(error))
    _check_max_pixels(max_pixels)
    _check_engine_options(device, backend, precision)
    _check_threads(threads)
    _check_min_area(min_area)
    edge_options = _edge_options(edges, edge_radius, edge_eps, edge_guide, edge_subsample)
    _check_coco_path(coco)
    _prepare_out_dir(out)
    # Imported here so that --help and argument errors answer without loading torch.
    from .ops.validation import load_image
    from .results import record_detections
    from .streams import writers as outputs

    segmenter = _load_segmenter(model, device=device, backend=backend, precision=precision, cache_dir=cache_dir,
                                cache=cache, max_pixels=max_pixels, calibration=calibration, threads=threads)

    failures = 0
    detections: list[dict] = []
    stems = outputs.unique_stems(images)
    for image_id, path in enumerate(tqdm(images, desc="segmenting", unit="image", disable=None, file=sys.stderr), 1):
        try:
            rgb = load_image(path, max_pixels)
            result = segmenter.segment(rgb, prompts, threshold=threshold, edges=edge_options)
        except (OSError, ValueError, TypeError) as error:
            failures += 1
            tqdm.write(f"error: {error}", file=sys.stderr)
            continue
        result.source = str(path)
        stem = stems[str(path)]
        masks = result.masks  # first: the summary below then comes from the same native pass
        record = result.to_dict()
        if instances:
            for mask_record, objects in zip(record["masks"], result.instance_records(min_area)):
                mask_record["instances"] = objects
        if coco is not None:
            detections.extend(record_detections(record, image_id, instances))
        try:
            outputs.write_mask_pngs(out, stem, record["masks"], masks)
            if overlay:
                record["overlay_png"] = f"{stem}_overlay.png"
                outputs.write_overlay_png(out / record["overlay_png"], rgb, masks, record["masks"])
            if heatmap:
                record["heatmap_png"] = f"{stem}_heatmap.png"
                outputs.write_heatmap_png(out / record["heatmap_png"], rgb, result.probs, result.prompts)
            outputs.write_json(out / f"{stem}.json", record)
        except OSError as error:
            # E.g. a full disk or a directory where a file should go: this image's outputs, not the run, fail.
            failures += 1
            tqdm.write(f"error: {path}: cannot write its outputs to {out} ({error.strerror or error})", file=sys.stderr)
            continue
        height, width = result.image_size
        parts = [f"{e['prompt']!r} score {e['score']:.2f} area {100 * e['area'] / (height * width):.1f}%" for e in record["masks"]]
        tqdm.write(f"{path}: {width}x{height}, " + "; ".join(parts))
    if coco is not None:
        _write_coco(coco, detections)
    if failures:
        typer.echo(f"{failures} of {len(images)} images failed", err=True)
        raise typer.Exit(1)


def _check_engine_options(device: str, backend: Optional[str], precision: Optional[str]) -> None:
    """Names the engine does not know, refused before the model loads (combinations are checked as it loads)."""
    from .engines import BACKEND_CHOICES, PRECISION_CHOICES, parse_device

    if backend is not None and backend not in BACKEND_CHOICES:
        _fail(f"unknown --backend {backend!r}: choose from {', '.join(BACKEND_CHOICES)}")
    if precision is not None and precision not in PRECISION_CHOICES:
        _fail(f"unknown --precision {precision!r}: choose from {', '.join(PRECISION_CHOICES)}")
    try:
        parse_device(device)
    except ValueError as error:
        _fail(f"--device: {error}")


def _check_min_area(min_area: int) -> None:
    if min_area < 0:
        _fail(f"--min-area must be >= 0 (pixels), got {min_area}")


def _check_coco_path(coco: Optional[Path]) -> None:
    if coco is not None and coco.is_dir():
        _fail(f"--coco {coco} is a folder: name the results file to write, e.g. {coco / 'results.json'}")


def _write_coco(coco: Path, detections: list[dict]) -> None:
    """The --coco results file, written atomically; a write that fails is exit status 2."""
    from .streams import writers as outputs

    try:
        outputs.write_json(coco, detections)
    except OSError as error:
        _fail(f"cannot write --coco {coco} ({error.strerror or error})")
    typer.echo(f"{coco}: {len(detections)} detections", err=True)


def _write_run_coco(coco: Path, run, image_id_of, instances: bool) -> None:
    """The COCO results file of a complete batch or video run, from its masks.jsonl."""
    from .results import record_detections
    from .streams.runs import read_complete_lines

    _write_coco(coco, [detection for record in read_complete_lines(run.masks_path)
                       for detection in record_detections(record, image_id_of(record), instances)])


def _edge_options(edges: bool, radius: Optional[int], eps: Optional[float], guide: Optional[str],
                  subsample: Optional[int]):
    """The `Edges` of --edges and its parameters (None without --edges), or a clear error."""
    given = {"--edge-radius": radius, "--edge-eps": eps, "--edge-guide": guide, "--edge-subsample": subsample}
    if not edges:
        named = [name for name, value in given.items() if value is not None]
        if named:
            _fail(f"{named[0]} needs --edges")
        return None
    chosen = {"radius": radius, "eps": eps, "guide": guide, "subsample": subsample}
    try:
        return dataclasses.replace(EDGE_DEFAULTS, **{key: value for key, value in chosen.items() if value is not None})
    except (TypeError, ValueError) as error:
        _fail("--" + str(error).replace("edges radius", "edge-radius").replace("edges eps", "edge-eps")
              .replace("edges guide", "edge-guide").replace("edges subsample", "edge-subsample"))


def _edge_settings(edge_options) -> dict:
    """What run.json records of --edges: nothing without it, so earlier runs still resume."""
    return {"edges": edge_options.to_dict()} if edge_options is not None else {}


def _instance_settings(instances: bool, min_area: int) -> dict:
    """What run.json records of --instances: nothing without it, so earlier runs still resume."""
    return {"instances": {"min_area": min_area}} if instances else {}


def _check_threads(threads: Optional[int]) -> None:
    if threads is not None and threads < 1:
        _fail(f"--threads must be >= 1 (or left out for all cores), got {threads}")


def _check_max_pixels(max_pixels: int) -> None:
    try:
        check_max_pixels(max_pixels, "--max-pixels")
    except ValueError as error:
        _fail(str(error))


def _calibration(folder: Optional[Path]) -> dict:
    """`calibration=` only when given: a segmenter loaded from an export takes no such option."""
    return {"calibration": folder} if folder is not None else {}


def _load_segmenter(model: str, *, device: str, backend: Optional[str], precision: Optional[str], cache_dir: Optional[Path],
                    cache: bool, max_pixels: int, batch_size: Optional[int] = None, calibration: Optional[Path] = None,
                    threads: Optional[int] = None, keep_model: bool = True):
    """The segmenter for the command's options; no --precision means "auto" (an export: its own), and
    the choice is said on stderr. `keep_model=False` for commands that never need the model's own
    weights (text prompts only: video, batch), so their fp32 copy can be freed."""
    import torch

    from .engines import MANIFEST_NAME, available_precisions, choose_precision, parse_device
    from .segmenter import FastSegmenter

    if threads is not None:
        torch.set_num_threads(threads)  # the network (torch, TorchScript); ONNX Runtime and the kernels below
    is_export = (Path(model).expanduser() / MANIFEST_NAME).is_file()
    try:
        segmenter = FastSegmenter.from_pretrained(
            model, device=device, max_image_pixels=max_pixels, backend=backend,
            precision=precision or (None if is_export else "auto"),
            cache=cache, cache_dir=cache_dir, batch_size=batch_size, threads=threads, kernel_threads=threads,
            keep_model=keep_model, **_calibration(calibration),
        )
    except (OSError, ValueError, TypeError, ImportError) as error:
        _fail(f"cannot load model {model}: {error}")
    if precision in (None, "auto") and not is_export:
        # The backend that runs offers the chosen precision, so its list gives the same choice and reason.
        device_ = parse_device(device)
        reason = choose_precision("auto", device_, available_precisions(segmenter.backend, device_)).reason
        typer.echo(f"precision {segmenter.precision}, backend {segmenter.backend} ({reason}; "
                   "--precision and --backend choose others)", err=True)
    return segmenter


def _stream_settings(prompt: list[str], threshold: float, batch_size: Optional[int]) -> list[str]:
    """Validated prompts; threshold and batch size checked before the run folder or the model."""
    from .ops.validation import check_threshold, normalize_prompts
    from .prompts.resolve import looks_like_expression

    try:
        prompts = normalize_prompts(prompt, "--prompt")
        check_threshold(threshold)
    except (TypeError, ValueError) as error:
        _fail(str(error))
    # Streams refuse expressions (segment_video / segment_stream); say so now, not after the model loads.
    expressions = [p for p in prompts if looks_like_expression(p)]
    if expressions:
        _fail(f"video and batch take text prompts; {expressions[0]!r} is a prompt expression (AND, OR, NOT, "
              "{...}): use `fastclipseg segment` for expressions")
    if batch_size is not None:
        try:
            check_batch_size(batch_size, "--batch-size")
        except ValueError as error:
            _fail(str(error))
    return prompts


def _open_run(out: Path, settings: dict, resume: bool, force: bool):
    from .streams.runs import RunFolder, RunFolderError, ensure_writable

    if resume and force:
        _fail("--resume and --force contradict each other: choose one")
    try:
        ensure_writable(out)
        return RunFolder(out, settings, resume=resume, force=force)
    except RunFolderError as error:
        _fail(str(error))
    except OSError as error:
        _fail(f"cannot write to output folder {out}: {error.strerror or error}")


def _execute(run, job):
    """Run `job(summary)` (run_video or run_batch) with `run` open; returns the summary and the
    signal that interrupted it (None if it finished). The summary is made here and filled by the
    job as it goes, so an interrupted run still reports what it wrote. An error that stops the
    whole run exits with 1."""
    from .streams.jobs import RunSummary
    from .streams.runs import Interrupted

    summary, interrupted = RunSummary(), None
    with run:
        try:
            job(summary)
        except Interrupted as signal_received:
            interrupted = signal_received
        except (OSError, ValueError, ImportError) as error:
            _fail(str(error), code=1)
    return summary, interrupted


def _finish_run(summary, run, interrupted, kind: str, exit_now: bool = True) -> None:
    """Report what a video or batch run did and exit with its status (`exit_now=False`: report only)."""
    from .streams.runs import exit_code

    breakdown = ", ".join(f"{k} {v:.2f}s" for k, v in summary.breakdown().items()
                          if k in ("decode", "preprocess", "network", "postprocess", "write", "wall"))
    frames = summary.written
    wall = summary.times.wall if summary.times is not None else 0.0
    rate = f" ({frames / wall:.1f}/s)" if wall > 0 and frames else ""
    typer.echo(f"{frames} {kind} written{rate}, {summary.failed} failed this run; time: {breakdown}", err=True)
    if not exit_now:
        return
    if interrupted is not None:
        typer.echo(f"interrupted ({interrupted}): {run.written} lines in {run.masks_path}; "
                   "run the same command with --resume to continue", err=True)
        raise typer.Exit(exit_code(interrupted))
    if run.errors:
        typer.echo(f"{run.errors} failed in all (see {run.errors_path})", err=True)
        raise typer.Exit(1)


STREAM_BACKEND_OPTION = typer.Option(None, "--backend", "-b", metavar="NAME", help=BACKEND_HELP + " Default: auto, or an export's own.")


@app.command()
def video(
    source: str = typer.Argument(..., metavar="VIDEO", help="Video file (or URL) that FFmpeg reads: mp4, mkv, webm, avi, ... (not a capture device such as /dev/video0: see README)."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", metavar="PROMPT", help="A text prompt (not an expression: see `segment`); repeat for several prompts."),
    out: Path = typer.Option(..., "--out", "-o", metavar="FOLDER", help="Output folder (created if missing)."),
    model: str = MODEL_OPTION,
    threshold: float = THRESHOLD_OPTION,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", metavar="N", help="Frames per network call (default: the engine's)."),
    every: int = typer.Option(1, "--every", metavar="N", help="Segment every N-th frame."),
    start: Optional[float] = typer.Option(None, "--start", metavar="SECONDS", help="Start time in seconds."),
    end: Optional[float] = typer.Option(None, "--end", metavar="SECONDS", help="End time in seconds (exclusive)."),
    smooth: Optional[float] = typer.Option(None, "--smooth", metavar="A", help="Temporal smoothing: the newest frame's weight in (0, 1] of a moving average of the logits (0.5: a third of the noise variance, one frame of delay). Default: off."),
    overlay: Optional[Path] = typer.Option(None, "--overlay", metavar="FILE", help="Also write this MP4: the masks over the frames, a colour and a contour per prompt, with a legend."),
    png: bool = typer.Option(False, "--png/--no-png", help="Also write one PNG mask per frame and prompt into OUT/png/."),
    coco: Optional[Path] = STREAM_COCO_OPTION,
    instances: bool = INSTANCES_OPTION,
    min_area: int = MIN_AREA_OPTION,
    edges: bool = EDGES_OPTION,
    edge_radius: Optional[int] = EDGE_RADIUS_OPTION,
    edge_eps: Optional[float] = EDGE_EPS_OPTION,
    edge_guide: Optional[str] = EDGE_GUIDE_OPTION,
    edge_subsample: Optional[int] = EDGE_SUBSAMPLE_OPTION,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT (same settings), skipping the frames it wrote."),
    force: bool = typer.Option(False, "--force", help="Start over in an OUT that holds another run (its results are removed)."),
    device: str = DEVICE_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    backend: Optional[str] = STREAM_BACKEND_OPTION,
    precision: Optional[str] = PRECISION_OPTION,
    cache_dir: Optional[Path] = CACHE_DIR_OPTION,
    cache: bool = CACHE_OPTION,
    calibration: Optional[Path] = CALIBRATION_OPTION,
) -> None:
    """Segment the frames of a video with each PROMPT.

    Writes OUT/masks.jsonl, one line per frame: frame, timestamp (s), width, height and per prompt
    prompt, score, stability, area, bbox (COCO [x, y, width, height]) and COCO RLE (JSON Schema:
    fastclipseg/schemas/masks-line.schema.json); frames that fail to decode go to
    OUT/errors.jsonl and the run goes on. Decoding, preprocessing, the network and writing
    overlap in threads. Ctrl-C or SIGTERM stops after the current frame, leaving only complete
    lines; --resume continues from there. Exit status: 0, 1 if any frame failed, 128+signal if
    interrupted.
    """
    from .streams.smoothing import check_smoothing
    from .streams.sources import check_every, check_time_range

    prompts = _stream_settings(prompt, threshold, batch_size)
    _check_engine_options(device, backend, precision)
    _check_threads(threads)
    _check_min_area(min_area)
    edge_options = _edge_options(edges, edge_radius, edge_eps, edge_guide, edge_subsample)
    _check_coco_path(coco)
    try:
        check_every(every)
        check_time_range(start, end)
        check_smoothing(smooth)
    except (TypeError, ValueError) as error:
        _fail(str(error).replace("every_n", "--every").replace("smooth must", "--smooth must"))
    from .streams.sources import video_info

    try:
        info = video_info(source)  # opens it: a missing or unreadable video (or no PyAV) fails before any work
    except (OSError, ValueError, ImportError) as error:
        _fail(str(error))
    if overlay is not None:
        if overlay.suffix.lower() not in (".mp4", ".mkv", ".mov"):
            _fail(f"--overlay must name an .mp4, .mkv or .mov file, got {overlay}")
        from .streams.runs import ensure_writable

        try:
            ensure_writable(overlay.parent)
        except OSError as error:
            _fail(f"cannot write the overlay into {overlay.parent}: {error.strerror or error}")
    settings = {"command": "video", "source": source, "prompts": prompts, "model": model, "threshold": threshold,
                "every": every, "start": start, "end": end, "smooth": smooth, "backend": backend,
                "precision": precision, "device": device, **_instance_settings(instances, min_area),
                **_edge_settings(edge_options)}
    run = _open_run(out, settings, resume, force)
    from .streams.jobs import render_overlay_video, run_video

    segmenter = _load_segmenter(model, device=device, backend=backend or "auto", precision=precision,
                                cache_dir=cache_dir, cache=cache, max_pixels=DEFAULT_MAX_PIXELS,
                                batch_size=batch_size, calibration=calibration, threads=threads, keep_model=False)
    summary, interrupted = _execute(run, lambda summary: run_video(
        segmenter, source, prompts, run, threshold=threshold, batch_size=batch_size, every_n=every, start=start,
        end=end, smooth=smooth, png=png, info=info, summary=summary, min_area=min_area if instances else None,
        edges=edge_options))
    if overlay is not None and interrupted is None:
        try:
            written = render_overlay_video(source, run.masks_path, overlay, every_n=every)
        except (OSError, ValueError, ImportError) as error:
            # masks.jsonl is complete; only the drawing failed (e.g. the disk filled up).
            _finish_run(summary, run, interrupted, "frames", exit_now=False)
            _fail(f"cannot write the overlay video {overlay}: {error}", code=1)
        typer.echo(f"wrote {overlay} ({written} frames)", err=True)
    if coco is not None and interrupted is None:
        _write_run_coco(coco, run, lambda record: record["frame"] + 1, instances)
    _finish_run(summary, run, interrupted, "frames")


@app.command()
def batch(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Image files, folders (searched recursively), glob patterns (quoted) or .txt files listing one path per line."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", metavar="PROMPT", help="A text prompt (not an expression: see `segment`); repeat for several prompts."),
    out: Path = typer.Option(..., "--out", "-o", metavar="FOLDER", help="Output folder (created if missing)."),
    model: str = MODEL_OPTION,
    threshold: float = THRESHOLD_OPTION,
    batch_size: Optional[int] = typer.Option(None, "--batch-size", metavar="N", help="Images per network call (default: the engine's)."),
    png: bool = typer.Option(False, "--png/--no-png", help="Also write one PNG mask per image and prompt into OUT/png/."),
    overlay: bool = typer.Option(False, "--overlay/--no-overlay", help="Also write OUT/png/<stem>_overlay.png: each mask in its own colour with its contour, and a legend."),
    coco: Optional[Path] = STREAM_COCO_OPTION,
    instances: bool = INSTANCES_OPTION,
    min_area: int = MIN_AREA_OPTION,
    edges: bool = EDGES_OPTION,
    edge_radius: Optional[int] = EDGE_RADIUS_OPTION,
    edge_eps: Optional[float] = EDGE_EPS_OPTION,
    edge_guide: Optional[str] = EDGE_GUIDE_OPTION,
    edge_subsample: Optional[int] = EDGE_SUBSAMPLE_OPTION,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in OUT (same inputs and settings), skipping the images it wrote."),
    force: bool = typer.Option(False, "--force", help="Start over in an OUT that holds another run (its results are removed)."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", metavar="N", help="Refuse images with more pixels than this."),
    device: str = DEVICE_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    backend: Optional[str] = STREAM_BACKEND_OPTION,
    precision: Optional[str] = PRECISION_OPTION,
    cache_dir: Optional[Path] = CACHE_DIR_OPTION,
    cache: bool = CACHE_OPTION,
    calibration: Optional[Path] = CALIBRATION_OPTION,
) -> None:
    """Segment a collection of images with each PROMPT.

    Writes OUT/masks.jsonl, one line per image: image path, width, height and per prompt prompt,
    score, stability, area, bbox (COCO [x, y, width, height]) and COCO RLE (JSON Schema:
    fastclipseg/schemas/masks-line.schema.json); every image that fails is listed with its reason
    in OUT/errors.jsonl and the run goes on. Files in folders or globs that are not images (by
    extension) are skipped and listed in OUT/skipped.txt. Ctrl-C or SIGTERM stops after the
    current image; --resume continues. Exit status: 0, 1 if any image failed, 128+signal if
    interrupted.
    """
    from .streams.sources import collect_image_paths

    prompts = _stream_settings(prompt, threshold, batch_size)
    _check_max_pixels(max_pixels)
    _check_engine_options(device, backend, precision)
    _check_threads(threads)
    _check_min_area(min_area)
    edge_options = _edge_options(edges, edge_radius, edge_eps, edge_guide, edge_subsample)
    _check_coco_path(coco)
    try:
        collected = collect_image_paths(inputs)
    except (OSError, ValueError) as error:
        _fail(str(error))
    if not collected.images:
        _fail(f"no image files in {' '.join(inputs)}" + (f" ({len(collected.skipped)} other files skipped)" if collected.skipped else ""))
    settings = {"command": "batch", "inputs": list(inputs), "prompts": prompts, "model": model, "threshold": threshold,
                "backend": backend, "precision": precision, "device": device, "max_pixels": max_pixels,
                **_instance_settings(instances, min_area), **_edge_settings(edge_options)}
    run = _open_run(out, settings, resume, force)
    from .streams import writers as outputs
    from .streams.jobs import run_batch

    if collected.skipped:
        outputs.atomic_write_bytes(out / "skipped.txt", "".join(f"{p}\n" for p in collected.skipped).encode("utf-8"))
        typer.echo(f"skipped {len(collected.skipped)} files that are not images (listed in {out / 'skipped.txt'})", err=True)
    segmenter = _load_segmenter(model, device=device, backend=backend or "auto", precision=precision,
                                cache_dir=cache_dir, cache=cache, max_pixels=max_pixels,
                                batch_size=batch_size, calibration=calibration, threads=threads, keep_model=False)
    summary, interrupted = _execute(run, lambda summary: run_batch(
        segmenter, collected.images, prompts, run, threshold=threshold, batch_size=batch_size, png=png,
        overlay=overlay, summary=summary, min_area=min_area if instances else None, edges=edge_options))
    if coco is not None and interrupted is None:
        image_ids = {path: number for number, path in enumerate(collected.images, 1)}
        _write_run_coco(coco, run, lambda record: image_ids[record["image"]], instances)
    _finish_run(summary, run, interrupted, "images")


@app.command()
def convert(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="Original CLIPSeg weights (.pth): CLIP + decoder, or decoder only."),
    out: Path = typer.Option(..., "--out", "-o", metavar="FOLDER", help="Folder to write the transformers-layout model into."),
    clip: Optional[Path] = typer.Option(None, "--clip", metavar="FILE", help="OpenAI-layout CLIP ViT-B/16 weights, for a decoder-only checkpoint."),
    vocab: Optional[Path] = typer.Option(None, "--vocab", metavar="FILE", help="CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz) for the tokenizer files."),
    allow_random_clip: bool = typer.Option(False, "--allow-random-clip", help="With a decoder-only checkpoint and no --clip: write random CLIP weights (for benchmarks and tests only)."),
    allow_torchscript: bool = typer.Option(False, "--allow-torchscript", help="Allow a TorchScript archive (e.g. OpenAI's ViT-B-16.pt) for --clip; it runs code, load only trusted files."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
) -> None:
    """Convert an original CLIPSeg checkpoint into a model folder that --model and from_pretrained load."""
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file, not a folder: choose another path")
    if out.exists() and not force:
        _fail(f"output folder already exists: {out} (pass --force to replace it)")
    from .model.convert import CLI_OPTION_NAMES, convert_original_checkpoint

    try:
        written = convert_original_checkpoint(
            checkpoint, out, clip_path=clip, vocab_path=vocab, allow_random_clip=allow_random_clip,
            allow_torchscript=allow_torchscript, overwrite=force, option_names=CLI_OPTION_NAMES,
        )
    except (OSError, ValueError, TypeError) as error:
        _fail(str(error))
    typer.echo(f"wrote {written}")


@app.command()
def export(
    model: str = typer.Argument(..., metavar="MODEL", help="Hub id or local model folder (transformers layout)."),
    out: Path = typer.Option(..., "--out", "-o", metavar="FOLDER", help="Folder to write the export into (must not exist or be empty)."),
    backend: str = typer.Option("auto", "--backend", "-b", metavar="NAME", help="torchscript, onnxruntime, aoti (CPU-specific C++), or auto (the fastest for --precision)."),
    precision: str = typer.Option("fp32", "--precision", metavar="NAME", help=PRECISION_HELP),
    force: bool = typer.Option(False, "--force", help="Replace an existing non-empty --out folder."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", metavar="FOLDER", help=CACHE_DIR_HELP + " A build there is copied, not recompiled; a new build is stored there too."),
) -> None:
    """Compile MODEL's stages and write them with a manifest and the processor files to --out.

    `fastclipseg segment --model OUT` and `FastSegmenter.from_pretrained(OUT)` then load it without
    the transformers model. TorchScript and ONNX files are code-like: load only exports you trust.
    """
    # Checked before the model loads, and worded for this command line (the Python API's message
    # names its own overwrite=True).
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file, not a folder: choose another folder for the export")
    if out.is_dir() and any(out.iterdir()) and not force:
        _fail(f"{out} exists and is not empty: choose another folder, or pass --force to replace it")
    _check_engine_options("cpu", backend, precision)
    from .segmenter import FastSegmenter

    try:
        segmenter = FastSegmenter.from_pretrained(model, cache_dir=cache_dir)
    except (OSError, ValueError, TypeError, ImportError) as error:
        _fail(f"cannot load model {model}: {error}")
    try:
        folder = segmenter.export(out, backend=backend, precision=precision, overwrite=force)
    except (OSError, ValueError, TypeError, ImportError) as error:
        _fail(str(error))
    typer.echo(f"wrote {folder}")


@app.command()
def bench(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", metavar="MODEL", help="Hub id or local model folder to time."),
    random_weights: bool = typer.Option(False, "--random-weights", help="Time a random model in the CIDAS/clipseg-rd64-refined shape instead (no download; speed does not depend on weights)."),
    backends: str = typer.Option("torch,torchscript,onnxruntime", "--backends", metavar="LIST", help="Comma-separated backends to time."),
    precisions: str = typer.Option("fp32,bf16,int8", "--precisions", metavar="LIST", help="Comma-separated precisions to time."),
    threads: int = typer.Option(2, "--threads", metavar="N", help="Intra-op threads for every side."),
    repeats: int = typer.Option(3, "--repeats", metavar="N", help="Timed repetitions per case (the median is reported)."),
    frames: int = typer.Option(16, "--frames", metavar="N", help="Frames of 1280x720 in the video-like case."),
    rss: bool = typer.Option(True, "--rss/--no-rss", help="Measure peak memory (two extra processes per side: 1x1 alone, every case)."),
    out: Path = typer.Option(Path("fastclipseg-bench"), "--out", "-o", metavar="FOLDER", help="Folder for the JSON result."),
) -> None:
    """Time transformers against every backend x precision on this machine, in one process.

    Cases: 1 image x 1 prompt, 1 image x 8 prompts, and --frames frames of 1280x720 with 2 prompts
    (prompts cached, as in a video). Prints medians, speedups, mask agreement with transformers,
    start-up time (cold: compiling; cached) and peak RSS, and writes JSON to --out.
    """
    for name, value in (("--threads", threads), ("--repeats", repeats), ("--frames", frames)):
        if value < 1:
            _fail(f"{name} must be >= 1, got {value}")
    from .engines import BACKENDS, PRECISIONS

    chosen_backends = [b.strip() for b in backends.split(",") if b.strip()]
    chosen_precisions = [p.strip() for p in precisions.split(",") if p.strip()]
    for kind, chosen, known in (("backend", chosen_backends, BACKENDS), ("precision", chosen_precisions, PRECISIONS)):
        unknown = [c for c in chosen if c not in known]
        if unknown or not chosen:
            _fail(f"unknown {kind} {', '.join(unknown) or '(none given)'}: choose from {', '.join(known)}")
    _prepare_out_dir(out)
    from .bench.measure import write_result
    from .bench.suite import load_model, run_benchmark, table

    source = "random" if random_weights else model
    try:
        loaded_model, processor = load_model(source)
    except (OSError, ValueError) as error:
        _fail(f"cannot load model {model}: {error} (--random-weights needs no download)")
    record = run_benchmark(
        loaded_model, processor, model_source=source, backends=chosen_backends, precisions=chosen_precisions,
        threads=threads, repeats=repeats, frames=frames, measure_rss=rss,
        log=lambda line: typer.echo(line, err=True),
    )
    typer.echo(table(record))
    typer.echo(f"wrote {write_result(f'bench-{threads}threads', record, out)}", err=True)


@app.command()
def cache(
    cache_dir: Optional[Path] = CACHE_DIR_OPTION,
    clear: bool = typer.Option(False, "--clear", help="Remove every cached build."),
) -> None:
    """List the compiled backends in the cache (backend, precision, size), or remove them with --clear."""
    from .engines import ArtifactError, clear_cache, default_cache_dir, read_manifest

    folder = cache_dir or default_cache_dir()
    if folder.exists() and not folder.is_dir():
        _fail(f"--cache-dir {folder} is a file, not a cache folder")
    try:
        if clear:
            typer.echo(f"removed {clear_cache(folder)} cached builds from {folder}")
            return
        entries = sorted(p for p in (folder / "engines").glob("*") if p.is_dir() and not p.name.startswith(".")) \
            if (folder / "engines").is_dir() else []
        typer.echo(f"{folder}: {len(entries)} cached builds")
        for entry in entries:
            size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file()) / 1e6
            try:
                manifest = read_manifest(entry)
                typer.echo(f"  {entry.name}  {manifest['backend']} {manifest['precision']}  {size:.0f} MB  {manifest.get('created_utc', '')}")
            except ArtifactError as error:
                typer.echo(f"  {entry.name}  unreadable ({error}); it is rebuilt on next use")
    except OSError as error:
        _fail(f"cannot read the cache folder {folder}: {error.strerror or error}")


def _click_style_arguments(group) -> None:
    """Arguments with a metavar shown as click shows them, `IMAGE...`, rather than as typer 0.2x
    does, `{IMAGE...}...` and `<list[Path]>`."""
    for command in group.commands.values():
        for param in command.params:
            if param.param_type_name == "argument" and param.metavar:
                param.display_type_rich = lambda ctx: None
                param._usage_display_name = (lambda metavar: lambda: metavar)(param.metavar)


@app.command()
def demo(
    model: str = MODEL_OPTION,
    images: Optional[Path] = typer.Option(None, "--images", metavar="FOLDER", help="A folder of images (searched recursively) that the page offers besides uploads."),
    host: str = typer.Option("127.0.0.1", "--host", metavar="ADDRESS", help="Address to listen on. The default answers this machine only; the demo has no login, so any other address lets in whoever can reach it."),
    port: int = typer.Option(8000, "--port", metavar="N", help="Port to listen on (0: a free one); the page's URL is printed."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", metavar="MB", help="Refuse uploaded files larger than this (MiB)."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", metavar="N", help="Refuse images with more pixels than this."),
    threshold: float = THRESHOLD_OPTION,
    device: str = DEVICE_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    backend: Optional[str] = typer.Option(None, "--backend", "-b", metavar="NAME", help=BACKEND_HELP + " Default: torch, or an export's own."),
    precision: Optional[str] = PRECISION_OPTION,
    cache_dir: Optional[Path] = CACHE_DIR_OPTION,
    cache: bool = CACHE_OPTION,
) -> None:
    """Serve an interactive page: open an image, type prompts or expressions, refine, undo, download.

    Needs the demo extra (pip install "fastclipseg[demo]": FastAPI and uvicorn). Prints the page's
    URL and serves until Ctrl-C. Each browser tab gets its own session (the 8 most recent are
    kept); images, results and downloads stay in memory: the demo writes no file.
    """
    import importlib.util
    import math

    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        _fail(f'the demo needs {" and ".join(missing)}, which are not installed: pip install "fastclipseg[demo]"')
    from .ops.validation import check_threshold

    try:
        threshold = check_threshold(threshold, "--threshold")
    except (TypeError, ValueError) as error:
        _fail(str(error))
    if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
        _fail(f"--max-upload-mb must be a number of megabytes > 0, got {max_upload_mb}")
    if images is not None and not images.is_dir():
        _fail(f"--images {images} is not a folder")
    if not 0 <= port <= 65535:
        _fail(f"--port must be between 0 and 65535, got {port}")
    _check_max_pixels(max_pixels)
    _check_threads(threads)
    _check_engine_options(device, backend, precision)
    from .demo import listen, serve

    try:
        listener = listen(host, port)  # before the model loads: a port in use fails at once
    except OSError as error:
        _fail(f"cannot listen on {host} port {port}: {error.strerror or error}")
    segmenter = _load_segmenter(model, device=device, backend=backend, precision=precision, cache_dir=cache_dir,
                                cache=cache, max_pixels=max_pixels, threads=threads)
    serve(segmenter, listener=listener, images_dir=images, max_upload_bytes=int(max_upload_mb * 2**20),
          max_pixels=max_pixels, threshold=threshold, announce=typer.echo)


def main() -> None:
    group = typer.main.get_command(app)
    _click_style_arguments(group)
    group(prog_name="fastclipseg")


if __name__ == "__main__":
    main()
