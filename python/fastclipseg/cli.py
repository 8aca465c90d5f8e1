"""The `fastclipseg` command line."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Optional

import typer
from tqdm import tqdm

from .imaging import DEFAULT_MAX_PIXELS
from .model import DEFAULT_MODEL

app = typer.Typer(
    help="Fast text-prompted image segmentation with CLIPSeg.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "prompt"


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, n = path.stem, 2
    candidate = stem
    while candidate in used:
        candidate = f"{stem}-{n}"
        n += 1
    used.add(candidate)
    return candidate


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


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Fast text-prompted image segmentation with CLIPSeg."""


@app.command()
def segment(
    images: list[Path] = typer.Argument(..., help="Image files to segment (any format Pillow reads)."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="A text prompt; repeat for several prompts."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Hub id or local model folder (transformers layout)."),
    out: Path = typer.Option(Path("fastclipseg-out"), "--out", "-o", help="Output folder (created if missing)."),
    threshold: float = typer.Option(0.5, "--threshold", "-t", help="Probability above which a pixel is in the mask, in [0, 1]."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write <stem>_overlay.png with the masks tinted over the image."),
    device: str = typer.Option("cpu", "--device", help="Torch device to run on, e.g. cpu or cuda."),
    max_pixels: int = typer.Option(DEFAULT_MAX_PIXELS, "--max-pixels", help="Refuse images with more pixels than this."),
) -> None:
    """Segment IMAGES with each PROMPT.

    For each image writes <stem>.json (image size; per prompt: prompt, score, area, bbox, COCO RLE)
    and <stem>_<k>_<prompt>.png masks (255 inside) into --out, and prints one summary line. An
    image that cannot be read gets a one-line error and the others are still processed; the exit
    status is then 1.
    """
    from .prompts import normalize_prompts
    from .results import check_threshold

    try:
        prompts = normalize_prompts(prompt, "--prompt")
        threshold = check_threshold(threshold)
    except (TypeError, ValueError) as error:
        _fail(str(error))
    _prepare_out_dir(out)
    # Imported here so that --help and argument errors answer without loading transformers.
    from . import io as outputs
    from .imaging import load_image
    from .segmenter import FastSegmenter

    try:
        segmenter = FastSegmenter.from_pretrained(model, device=device, max_image_pixels=max_pixels)
    except (OSError, ValueError, TypeError) as error:
        _fail(f"cannot load model {model}: {error}")

    failures = 0
    used_stems: set[str] = set()
    for path in tqdm(images, desc="segmenting", unit="image", disable=None, file=sys.stderr):
        try:
            rgb = load_image(path, max_pixels)
            result = segmenter.segment(rgb, prompts, threshold=threshold)
        except (OSError, ValueError, TypeError) as error:
            failures += 1
            tqdm.write(f"error: {error}", file=sys.stderr)
            continue
        result.source = str(path)
        stem = _unique_stem(path, used_stems)
        record = result.to_dict()
        for k, (entry, mask) in enumerate(zip(record["masks"], result.masks)):
            entry["mask_png"] = f"{stem}_{k}_{_slug(entry['prompt'])}.png"
            outputs.write_mask_png(out / entry["mask_png"], mask)
        if overlay:
            record["overlay_png"] = f"{stem}_overlay.png"
            outputs.write_overlay_png(out / record["overlay_png"], rgb, result.masks)
        outputs.write_json(out / f"{stem}.json", record)
        height, width = result.image_size
        parts = [f"{e['prompt']!r} score {e['score']:.2f} area {100 * e['area'] / (height * width):.1f}%" for e in record["masks"]]
        tqdm.write(f"{path}: {width}x{height}, " + "; ".join(parts))
    if failures:
        typer.echo(f"{failures} of {len(images)} images failed", err=True)
        raise typer.Exit(1)


@app.command()
def convert(
    checkpoint: Path = typer.Argument(..., help="Original CLIPSeg weights (.pth): CLIP + decoder, or decoder only."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the transformers-layout model into."),
    clip: Optional[Path] = typer.Option(None, "--clip", help="OpenAI-layout CLIP ViT-B/16 weights, for a decoder-only checkpoint."),
    vocab: Optional[Path] = typer.Option(None, "--vocab", help="CLIP BPE vocabulary (bpe_simple_vocab_16e6.txt.gz) for the tokenizer files."),
    allow_random_clip: bool = typer.Option(False, "--allow-random-clip", help="With a decoder-only checkpoint and no --clip: write random CLIP weights (for benchmarks and tests only)."),
    allow_torchscript: bool = typer.Option(False, "--allow-torchscript", help="Allow a TorchScript archive (e.g. OpenAI's ViT-B-16.pt) for --clip; it runs code, load only trusted files."),
) -> None:
    """Convert an original CLIPSeg checkpoint into a model folder that --model and from_pretrained load."""
    from .model.convert import convert_original_checkpoint

    try:
        written = convert_original_checkpoint(
            checkpoint, out, clip_path=clip, vocab_path=vocab,
            allow_random_clip=allow_random_clip, allow_torchscript=allow_torchscript,
        )
    except (OSError, ValueError, TypeError) as error:
        _fail(str(error))
    typer.echo(f"wrote {written}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
