"""Pictures of results: masks tinted over the image with contours and a legend, and probability heat-maps.

Each prompt gets its own colour from a palette of well-separated hues; a tint alone vanishes on an
object of the same colour, so every mask also gets a contour in its colour with a dark rim just
outside it, which stays visible on any background. The legend names each colour's prompt and
score. Pillow draws the text (its bundled font scales with the image); everything else is numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Tableau-10's hues: distinct for the common forms of colour blindness and on photos.
PALETTE = np.array(
    [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
     (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)],
    dtype=np.uint8,
)


def colour(index: int) -> tuple[int, int, int]:
    """The colour of the `index`-th prompt (the palette repeats after 10)."""
    r, g, b = PALETTE[index % len(PALETTE)]
    return int(r), int(g), int(b)


def draw_overlay(image: np.ndarray, masks: np.ndarray, *, labels: Sequence[str] | None = None,
                 scores: Sequence[float] | None = None, contours: bool = True, legend: bool = True,
                 alpha: float = 0.45) -> np.ndarray:
    """`image` (`H x W x 3` uint8) with each of the `K x H x W` bool `masks` tinted in its own
    colour, outlined (`contours`) and, when `labels` are given and `legend` is on, a legend naming
    each colour's label and score. Returns a new `H x W x 3` uint8 array."""
    rgb = _check_image(image)
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[1:] != rgb.shape[:2]:
        raise ValueError(f"masks must be K x {rgb.shape[0]} x {rgb.shape[1]} to match the image, "
                         f"got shape {masks.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = rgb.astype(np.float32)
    for index, mask in enumerate(masks):
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour(index), dtype=np.float32)
    out = out.astype(np.uint8)
    if contours:
        thickness = max(2, round(min(rgb.shape[:2]) / 300))
        for index, mask in enumerate(masks):
            rim, edge = _outline(mask, thickness)
            out[rim] = 0
            out[edge] = colour(index)
    if legend and labels is not None:
        entries = [(colour(k), _legend_text(label, None if scores is None else scores[k]))
                   for k, label in enumerate(labels)]
        out = _draw_legend(out, entries)
    return out


def draw_heatmap(image: np.ndarray, probabilities: np.ndarray, *, alpha: float = 0.6, legend: bool = True,
                 label: str | None = None) -> np.ndarray:
    """`image` blended with a colour map (dark blue 0 .. red 1) of `probabilities` (`H x W`, or
    `K x H x W`, whose pixelwise maximum is shown), with a colour bar when `legend` is on."""
    rgb = _check_image(image)
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim == 3:
        p = p.max(axis=0) if len(p) else np.zeros(rgb.shape[:2], np.float32)
    if p.shape != rgb.shape[:2]:
        raise ValueError(f"probabilities must be {rgb.shape[0]} x {rgb.shape[1]} (or K x H x W) to match the image, "
                         f"got shape {np.shape(probabilities)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    levels = np.clip(np.nan_to_num(p) * 255 + 0.5, 0, 255).astype(np.uint8)
    coloured = _TURBO[levels].astype(np.float32)
    out = ((1 - alpha) * rgb + alpha * coloured).astype(np.uint8)
    if legend:
        out = _draw_colour_bar(out, label)
    return out


def _check_image(image: np.ndarray) -> np.ndarray:
    rgb = np.asarray(image)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be an H x W x 3 uint8 RGB array, got {rgb.dtype} of shape {rgb.shape}")
    return rgb


def _outline(mask: np.ndarray, thickness: int) -> tuple[np.ndarray, np.ndarray]:
    """(a one-pixel dark rim just outside the mask, its inner edge `thickness` pixels wide)."""
    inner = mask
    for _ in range(thickness):
        inner = _erode(inner)
    return _dilate(mask) & ~mask, mask & ~inner


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion; pixels on the image border count as inside (no outline along it)."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    return out


def _dilate(mask: np.ndarray) -> np.ndarray:
    return ~_erode(~mask)


def _legend_text(label: str, score: float | None) -> str:
    text = label if len(label) <= 48 else label[:47] + "…"
    return text if score is None else f"{text}  {float(score):.2f}"


def _font(image_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = int(np.clip(image_height / 32, 10, 40))
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:
        return ImageFont.load_default()


def _annotation_layer(rgb: np.ndarray):
    """(picture, a transparent layer over it, its ImageDraw, font, line height, padding): what a
    legend or colour bar is drawn with, sized to the picture's height."""
    picture = Image.fromarray(rgb).convert("RGBA")
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = _font(picture.height)
    line = _line_height(draw, font)
    return picture, layer, draw, font, line, max(2, line // 4)


def _draw_legend(rgb: np.ndarray, entries: list[tuple[tuple[int, int, int], str]]) -> np.ndarray:
    """Rows of (colour swatch, text) in a translucent dark box at the top left."""
    if not entries:
        return rgb
    picture, layer, draw, font, line, pad = _annotation_layer(rgb)
    width = max(draw.textlength(text, font=font) for _, text in entries)
    box = (pad, pad, int(3 * pad + line + width + pad), int(pad + len(entries) * (line + pad) + pad))
    draw.rectangle(box, fill=(0, 0, 0, 150))
    for row, (fill, text) in enumerate(entries):
        top = 2 * pad + row * (line + pad)
        draw.rectangle((2 * pad, top, 2 * pad + line, top + line), fill=fill + (255,), outline=(255, 255, 255, 255))
        draw.text((3 * pad + line, top), text, font=font, fill=(255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(picture, layer).convert("RGB"))


def _draw_colour_bar(rgb: np.ndarray, label: str | None) -> np.ndarray:
    """A horizontal 0 .. 1 colour bar (and `label` above it) in a translucent box at the top left."""
    picture, layer, draw, font, line, pad = _annotation_layer(rgb)
    bar_width = max(16, min(picture.width // 4, 256))
    text = f"probability{'' if label is None else ' of ' + _legend_text(label, None)}"
    width = max(bar_width + 2 * draw.textlength("0", font=font) + 2 * pad, draw.textlength(text, font=font))
    draw.rectangle((pad, pad, int(3 * pad + width), int(4 * pad + 2 * line)), fill=(0, 0, 0, 150))
    draw.text((2 * pad, 2 * pad), text, font=font, fill=(255, 255, 255, 255))
    top = 3 * pad + line
    draw.text((2 * pad, top), "0", font=font, fill=(255, 255, 255, 255))
    left = int(2 * pad + draw.textlength("0", font=font) + pad)
    for x in range(bar_width):
        fill = tuple(int(v) for v in _TURBO[round(255 * x / max(1, bar_width - 1))])
        draw.line((left + x, top, left + x, top + line), fill=fill + (255,))
    draw.text((left + bar_width + pad, top), "1", font=font, fill=(255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(picture, layer).convert("RGB"))


def _line_height(draw: ImageDraw.ImageDraw, font) -> int:
    left, top, right, bottom = draw.textbbox((0, 0), "Ag", font=font)
    return max(8, int(bottom))


def _turbo_table() -> np.ndarray:
    """Google's Turbo colour map (Mikhailov, 2019) as 256 RGB levels, from its published polynomial
    fit: a perceptually smooth rainbow without matplotlib as a dependency."""
    x = np.linspace(0.0, 1.0, 256)
    powers = np.stack([x ** n for n in range(6)])
    red = np.array([0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943]) @ powers
    green = np.array([0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604]) @ powers
    blue = np.array([0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973]) @ powers
    return np.clip(np.stack([red, green, blue], axis=1) * 255 + 0.5, 0, 255).astype(np.uint8)


_TURBO = _turbo_table()
