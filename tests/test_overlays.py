"""Overlays and heat-maps (fastclipseg.overlays): colours per prompt, contours, legend, colour map."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from fastclipseg import overlays
from fastclipseg.results import SegmentationResult


def _disc(height: int, width: int, cy: int, cx: int, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2


def test_palette_colours_are_far_apart():
    for a, b in itertools.combinations(overlays.PALETTE.astype(int), 2):
        assert np.abs(a - b).sum() > 60, (a, b)


def test_a_mask_on_an_object_of_its_own_colour_stays_visible():
    # A red disc masked in red: the tint alone would vanish; the contour and its dark rim do not.
    image = np.full((240, 320, 3), 200, np.uint8)
    disc = _disc(240, 320, 140, 200, 60)
    image[disc] = overlays.colour(3)  # the palette's red, the colour of prompt 3
    masks = np.zeros((4, 240, 320), bool)
    masks[3] = disc
    out = overlays.draw_overlay(image, masks, legend=False)
    assert np.all(out[disc & ~_disc(240, 320, 140, 200, 55)] == overlays.colour(3))
    band = ~disc & _disc(240, 320, 140, 200, 61)  # one pixel outside the mask
    black = np.all(out[band] == 0, axis=-1)
    assert black.mean() > 0.8, black.mean()  # a dark line just outside (4-neighbours of the mask)
    assert np.array_equal(out[band][~black], image[band][~black])
    assert np.array_equal(out[~_disc(240, 320, 140, 200, 62)], image[~_disc(240, 320, 140, 200, 62)])


def test_each_prompt_has_its_own_colour_and_contour():
    image = np.zeros((200, 300, 3), np.uint8)
    first, second = _disc(200, 300, 100, 100, 50), _disc(200, 300, 100, 200, 50)  # overlapping
    out = overlays.draw_overlay(image, np.stack([first, second]), alpha=0.5, legend=False)
    inside_first_only = first & ~second & ~_disc(200, 300, 100, 100, 0) & ~_disc(200, 300, 100, 200, 60)
    tint = out[_disc(200, 300, 100, 60, 5)]
    assert np.allclose(tint.astype(int), (np.array(overlays.colour(0)) * 0.5).astype(int), atol=1)
    assert inside_first_only.any()
    tint_second = out[_disc(200, 300, 100, 240, 5)]
    assert np.allclose(tint_second.astype(int), (np.array(overlays.colour(1)) * 0.5).astype(int), atol=1)
    # Each mask's edge is drawn in its own colour.
    assert np.all(out[100, 51] == overlays.colour(0)) and np.all(out[100, 248] == overlays.colour(1))


def test_the_legend_names_prompts_with_their_colours():
    image = np.full((240, 320, 3), 128, np.uint8)
    masks = np.zeros((2, 240, 320), bool)
    masks[0, 200:, 200:] = True
    masks[1, 150:, 250:] = True
    plain = overlays.draw_overlay(image, masks, labels=["a cat", "a dog"], scores=[0.9, 0.4], legend=False)
    with_legend = overlays.draw_overlay(image, masks, labels=["a cat", "a dog"], scores=[0.9, 0.4])
    corner = (slice(0, 80), slice(0, 160))
    changed = np.any(plain[corner] != with_legend[corner], axis=-1)
    assert changed.mean() > 0.1  # a box drawn at the top left
    for k in range(2):  # a swatch of each prompt's colour
        assert np.all(with_legend[corner] == overlays.colour(k), axis=-1).sum() > 20
    assert np.all(with_legend[corner] == 255, axis=-1).sum() > 20  # white text
    assert np.array_equal(plain[100:], with_legend[100:])  # nothing else changes


def test_bad_overlay_input_is_a_clear_error():
    image = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(ValueError, match="masks must be K x 10 x 12"):
        overlays.draw_overlay(image, np.zeros((1, 12, 10), bool))
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        overlays.draw_overlay(image.astype(np.float32), np.zeros((1, 10, 12), bool))
    with pytest.raises(ValueError, match="alpha"):
        overlays.draw_overlay(image, np.zeros((1, 10, 12), bool), alpha=1.5)
    with pytest.raises(ValueError, match="probabilities must be 10 x 12"):
        overlays.draw_heatmap(image, np.zeros((12, 10), np.float32))


def test_heatmap_maps_probability_to_the_colour_map():
    image = np.zeros((120, 200, 3), np.uint8)
    probabilities = np.zeros((2, 120, 200), np.float32)
    probabilities[0, :, 100:] = 1.0
    probabilities[1, 60:, :50] = 0.5
    out = overlays.draw_heatmap(image, probabilities, alpha=1.0, legend=False)
    turbo = overlays._TURBO
    assert np.all(out[100, 150] == turbo[255]) and np.all(out[10, 10] == turbo[0])
    assert np.all(out[100, 10] == turbo[128])  # the highest probability over the prompts
    assert int(turbo[0].sum()) < 150 and turbo[255, 0] > 2 * turbo[255, 2]  # dark .. red
    with_bar = overlays.draw_heatmap(image, probabilities, alpha=1.0, label="a cat")
    assert np.any(with_bar[:40, :120] != out[:40, :120]) and np.array_equal(with_bar[60:], out[60:])


def test_results_draw_themselves():
    logits = np.full((2, 8, 8), -20.0, np.float32)
    logits[0, :4] = 20.0
    result = SegmentationResult(prompts=["top", "nothing"], logits=logits, image_size=(32, 48))
    image = np.zeros((32, 48, 3), np.uint8)
    drawn = result.overlay(image, legend=False)
    assert drawn.shape == (32, 48, 3) and np.any(drawn[:10] != 0) and np.all(drawn[24:, 4:-4] == 0)
    assert result.heatmap(image, legend=False).shape == (32, 48, 3)
    with pytest.raises(ValueError, match="pass the image"):
        result.overlay()
