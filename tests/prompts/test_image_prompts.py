"""Image prompts: the CLIP image embedding against transformers, visual prompt engineering, cache keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastclipseg import FastSegmenter
from fastclipseg.model.image_prompt_encoder import ImagePromptEncoder
from fastclipseg.prompts.embeddings import check_conditional_embeddings
from fastclipseg.prompts.image_prompts import (
    ImagePrompt,
    mask_box,
    visual_prompt,
)
from helpers.parity import assert_relative_close, clipseg_tolerance
from helpers.tiny_models import TINY_IMAGE_SIZE
from PIL import Image, ImageFilter

# CLIPSeg's normalisation mean in 0-255 units, rounded: the padding colour.
MEAN = np.array([0.485, 0.456, 0.406]) * 255
MEAN_UINT8 = np.array([124, 116, 104], dtype=np.uint8)


def random_image(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)



@pytest.fixture(scope="module")
def queries():
    return [random_image(1, 70, 60), random_image(2, 30, 90)]


@pytest.fixture(scope="module")
def example():
    return random_image(3, 40, 50)


# -- the embedding and the logits against transformers ------------------------------------------


def test_embeddings_equal_get_image_features(tiny_reference, tiny_segmenter, example):
    model, processor = tiny_reference
    examples = [example, random_image(4, 64, 20)]
    ours = tiny_segmenter.encode_image_prompts(examples)
    pixel_values = processor(images=examples, return_tensors="pt").pixel_values
    with torch.no_grad():
        expected = model.clip.get_image_features(pixel_values).pooler_output
        # What the reference's forward uses for conditional_pixel_values.
        conditional = model.get_conditional_embeddings(batch_size=2, conditional_pixel_values=pixel_values)
    torch.testing.assert_close(expected, conditional, rtol=0, atol=0)
    assert ours.shape == (2, model.config.projection_dim)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    # The encoder on its own, built from the reference model.
    encoder = ImagePromptEncoder(model, tiny_segmenter.preprocess_config)
    assert encoder.projection_dim == model.config.projection_dim
    torch.testing.assert_close(encoder(pixel_values), expected, rtol=0, atol=1e-6)


def test_embeddings_come_back_like_text_prompt_embeddings(tiny_segmenter, example):
    image = tiny_segmenter.encode_image_prompts([example])
    text = tiny_segmenter.encode_prompts(["a cat"])
    assert image.dtype == text.dtype == torch.float32
    assert image.device == text.device
    assert image.shape[1] == text.shape[1]


@pytest.mark.parametrize("kind", ["array", "path", "pil"])
def test_logits_match_reference_with_conditional_pixel_values(tiny_reference, tiny_segmenter, queries, example,
                                                              kind, tmp_path):
    model, processor = tiny_reference
    if kind == "path":
        source = tmp_path / "example.png"
        Image.fromarray(example).save(source)
    elif kind == "pil":
        source = Image.fromarray(example)
    else:
        source = example
    embeddings = tiny_segmenter.encode_image_prompts([source])
    pixels = tiny_segmenter.pixel_values(queries)
    image_index = torch.tensor([0, 1])
    ours = tiny_segmenter.engine.decode(
        tiny_segmenter.engine.encode_images(pixels), embeddings.repeat(2, 1), image_index
    )
    query_values = processor(images=queries, return_tensors="pt").pixel_values
    example_values = processor(images=[example], return_tensors="pt").pixel_values
    torch.testing.assert_close(query_values, pixels, rtol=0, atol=0)
    with torch.no_grad():
        expected = model(pixel_values=query_values, conditional_pixel_values=example_values.repeat(2, 1, 1, 1)).logits
    assert_relative_close(ours, expected, clipseg_tolerance(model.config, TINY_IMAGE_SIZE))
    # The example changes the answer (the comparison above is not of a constant).
    other = tiny_segmenter.encode_image_prompts([random_image(9, 40, 50)])
    assert not torch.allclose(other, embeddings, atol=1e-3)


def test_masked_prompt_encodes_the_engineered_image(tiny_reference, tiny_segmenter, example):
    model, _ = tiny_reference
    mask = np.zeros(example.shape[:2], dtype=bool)
    mask[10:25, 12:30] = True
    prompt = ImagePrompt(example, mask=mask)
    ours = tiny_segmenter.encode_image_prompts([prompt, example])
    engineered = visual_prompt(example, mask, input_size=TINY_IMAGE_SIZE)
    np.testing.assert_array_equal(prompt.prompt_image(input_size=TINY_IMAGE_SIZE), engineered)
    with torch.no_grad():
        pixel_values = tiny_segmenter.pixel_values([engineered, example])
        expected = model.clip.get_image_features(pixel_values).pooler_output
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(ours[0], ours[1], atol=1e-3)


def test_embeddings_are_cached_by_key(tiny_segmenter, example):
    """The segmenter caches image prompts by key: the same pixels (as an array, a copy or a PIL
    image) are encoded once; equal prompts in one call are encoded once."""
    from fastclipseg.prompts.image_prompts import ImagePrompt

    cache = tiny_segmenter.image_prompt_cache
    cache.clear()
    before = cache.misses
    query = random_image(3, 30, 40)
    first = tiny_segmenter.segment(query, [ImagePrompt(example)])
    again = tiny_segmenter.segment(query, [Image.fromarray(example), example.copy()])
    assert cache.misses - before == 1 and len(cache) == 1
    np.testing.assert_array_equal(again.logits[0], first.logits[0])
    np.testing.assert_array_equal(again.logits[1], first.logits[0])
    tiny_segmenter.segment(query, [random_image(11, 20, 20), random_image(11, 20, 20)])
    assert cache.misses - before == 2


def test_image_prompts_need_the_model(tiny_segmenter, tmp_path):
    exported = FastSegmenter.from_pretrained(tiny_segmenter.export(tmp_path / "export", backend="torchscript"))
    with pytest.raises(ValueError, match="image prompts needs the transformers model's weights.*check_conditional"):
        exported.encode_image_prompts([random_image(0, 8, 8)])


def test_bad_prompt_lists_are_rejected(tiny_segmenter, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        tiny_segmenter.encode_image_prompts([])
    with pytest.raises(TypeError, match="list of images"):
        tiny_segmenter.encode_image_prompts(str(tmp_path / "a.png"))
    with pytest.raises(FileNotFoundError, match=r"prompts\[1\]"):
        tiny_segmenter.encode_image_prompts([random_image(0, 8, 8), tmp_path / "missing.png"])
    with pytest.raises(TypeError, match="ImagePrompt"):
        tiny_segmenter.encode_image_prompts([(random_image(0, 8, 8), np.ones((8, 8), bool))])


# -- visual prompt engineering -------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene():
    image = random_image(5, 20, 30)
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:10, 8:20] = True
    mask[7, 10] = False  # a hole: background inside the box
    return image, mask


def test_darken_multiplies_the_normalised_background(scene):
    image, mask = scene
    out = visual_prompt(image, mask, background="darken", darken=0.5, crop=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[mask], image[mask])
    # One pixel by hand: 0.5 of the way from the mean colour to the pixel.
    y, x = 0, 0
    expected = np.rint(MEAN + 0.5 * (image[y, x].astype(float) - MEAN))
    np.testing.assert_array_equal(out[y, x], expected)
    np.testing.assert_array_equal(out[7, 10], np.rint(MEAN + 0.5 * (image[7, 10].astype(float) - MEAN)))
    everywhere = np.rint(MEAN + 0.5 * (image.astype(float) - MEAN)).astype(np.uint8)
    np.testing.assert_array_equal(out[~mask], everywhere[~mask])
    # darken=0: a flat mean-coloured background.
    flat = visual_prompt(image, mask, background="darken", darken=0.0, crop=False)
    assert (flat[~mask] == MEAN_UINT8).all()


def test_blur_is_pillow_gaussian_scaled_to_the_input_size(scene):
    image, mask = scene
    out = visual_prompt(image, mask, background="blur", blur_radius=3.0, input_size=15, crop=False)
    # 3 pixels of a 15x15 input: 3 * 30/15 = 6 across, 3 * 20/15 = 4 down on this image.
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur((6.0, 4.0))))
    np.testing.assert_array_equal(out[mask], image[mask])
    np.testing.assert_array_equal(out[~mask], blurred[~mask])
    assert not np.array_equal(out[~mask], image[~mask])


def test_default_darkens_and_blurs_the_background(scene):
    image, mask = scene
    out = visual_prompt(image, mask, crop=False, input_size=352)
    blurred = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur((3.0 * 30 / 352, 3.0 * 20 / 352))))
    expected = np.rint(MEAN + 0.1 * (blurred.astype(float) - MEAN)).astype(np.uint8)
    np.testing.assert_array_equal(out[mask], image[mask])
    np.testing.assert_array_equal(out[~mask], expected[~mask])


def test_crop_to_the_box_with_context_padded_to_the_image_aspect(scene):
    image, mask = scene
    # Box rows 5..10, columns 8..20; context 0.1: 0.5 rows and 1.2 columns each side, truncated.
    assert mask_box(mask, 0.1) == (4, 10, 6, 21)
    assert mask_box(mask, 0.0) == (5, 10, 8, 20)
    assert mask_box(mask, 5.0) == (0, 20, 0, 30)
    out = visual_prompt(image, mask, background="keep")
    # The 6x15 crop is wider than the image's 20:30, so rows are padded to 10 (2 above, 2 below).
    assert out.shape == (10, 15, 3)
    np.testing.assert_array_equal(out[2:8], image[4:10, 6:21])
    assert (out[:2] == MEAN_UINT8).all() and (out[8:] == MEAN_UINT8).all()
    # With the background engineered: the crop of the engineered full image.
    full = visual_prompt(image, mask, crop=False)
    cropped = visual_prompt(image, mask)
    np.testing.assert_array_equal(cropped[2:8], full[4:10, 6:21])
    # A tall box is padded with columns instead.
    tall = np.zeros((20, 30), dtype=bool)
    tall[2:18, 14:16] = True
    out = visual_prompt(image, tall, background="keep", context=0.0)
    assert out.shape == (16, 24, 3)
    np.testing.assert_array_equal(out[:, 11:13], image[2:18, 14:16])
    assert (out[:, :11] == MEAN_UINT8).all() and (out[:, 13:] == MEAN_UINT8).all()


def test_mask_forms_accepted(scene):
    image, mask = scene
    expected = visual_prompt(image, mask)
    for form in (mask.astype(np.uint8), mask.astype(np.float32), mask.astype(np.uint8) * 255,
                 Image.fromarray(mask.astype(np.uint8) * 255), Image.fromarray(mask), mask[:, :, None],
                 torch.from_numpy(mask)):
        np.testing.assert_array_equal(visual_prompt(image, form), expected)


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (np.zeros((20, 30), bool), ValueError, "empty"),
        (np.ones((30, 20), bool), ValueError, "30x20"),
        (np.ones((20, 30, 2), bool), ValueError, "2-D"),
        (np.full((20, 30), 0.5), ValueError, "only 0 and 1"),
        (np.full((20, 30), 2, dtype=np.int64), ValueError, "only 0 and 1"),
        (np.full((20, 30), np.nan), ValueError, "NaN"),
        (np.ones((20, 30), dtype=np.complex64), TypeError, "dtype"),
        ([[1] * 30] * 20, TypeError, "numpy array"),
        (Image.new("RGB", (30, 20)), TypeError, "mode"),
    ],
)
def test_bad_masks_are_rejected(scene, mask, error, match):
    image, _ = scene
    with pytest.raises(error, match=match):
        visual_prompt(image, mask)
    with pytest.raises(error, match=match):
        ImagePrompt(image, mask=mask)


def test_bad_settings_are_rejected(scene):
    image, mask = scene
    with pytest.raises(ValueError, match="background"):
        visual_prompt(image, mask, background="grey")
    with pytest.raises(ValueError, match="darken"):
        visual_prompt(image, mask, darken=1.5)
    with pytest.raises(ValueError, match="blur_radius"):
        visual_prompt(image, mask, blur_radius=-1)
    with pytest.raises(TypeError, match="crop"):
        ImagePrompt(image, mask=mask, crop="yes")


# -- cache keys ------------------------------------------------------------------------------------


def test_cache_keys(scene, tmp_path):
    image, mask = scene
    key = ImagePrompt(image, mask=mask).key
    assert key.startswith("image:sha256:")
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    # The same pixels and mask, however given.
    assert ImagePrompt(path, mask=mask.astype(np.uint8)).key == key
    assert ImagePrompt(Image.fromarray(image), mask=Image.fromarray(mask)).key == key
    assert ImagePrompt(image.copy(), mask=mask, darken=0.1).key == key
    assert ImagePrompt(image, mask=mask) == ImagePrompt(path, mask=mask)
    assert len({ImagePrompt(image, mask=mask), ImagePrompt(path, mask=mask)}) == 1
    # A different mask, setting or image changes the key.
    other_mask = mask.copy()
    other_mask[0, 0] = True
    assert ImagePrompt(image, mask=other_mask).key != key
    assert ImagePrompt(image, mask=mask, darken=0.5).key != key
    assert ImagePrompt(image, mask=mask, crop=False).key != key
    assert ImagePrompt(image).key != key
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    assert ImagePrompt(changed, mask=mask).key != key
    # Same bytes, other shape.
    assert ImagePrompt(image.reshape(30, 20, 3)).key != ImagePrompt(image).key
    # Without a mask the settings do not matter.
    assert ImagePrompt(image, darken=0.5).key == ImagePrompt(image).key
    # Labels: the name, the path, or a short hash; not part of the key.
    assert ImagePrompt(image, name="my dog").label == "my dog"
    assert ImagePrompt(image, name="my dog").key == ImagePrompt(image).key
    assert ImagePrompt(path).label == str(path)
    assert ImagePrompt(path, mask=mask).label == f"{path} (masked)"
    assert ImagePrompt(image).label == "image " + ImagePrompt(image).key.rsplit(":", 1)[1][:12]
    # The prompt holds read-only copies.
    prompt = ImagePrompt(image, mask=mask)
    assert not prompt.image.flags.writeable and not prompt.mask.flags.writeable


# -- embeddings from elsewhere ---------------------------------------------------------------------


def test_check_conditional_embeddings_accepts_float_arrays(tiny_segmenter, queries):
    source = np.random.default_rng(0).normal(size=(2, 24))
    checked = check_conditional_embeddings(source, 24)
    assert checked.dtype == torch.float32 and checked.device.type == "cpu" and checked.shape == (2, 24)
    np.testing.assert_allclose(checked.numpy(), source.astype(np.float32))
    source[0, 0] = 100.0
    assert checked[0, 0] != 100.0  # a copy
    half = check_conditional_embeddings(torch.ones(3, 24, dtype=torch.float16, requires_grad=False), 24)
    assert half.dtype == torch.float32
    logits = tiny_segmenter.engine.decode(
        tiny_segmenter.engine.encode_images(tiny_segmenter.pixel_values(queries)), checked, torch.tensor([0, 1])
    )
    assert logits.shape == (2, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)


def test_check_conditional_embeddings_name_and_any_width():
    assert check_conditional_embeddings(np.zeros((2, 7), np.float32), None).shape == (2, 7)
    with pytest.raises(ValueError, match="^text_encoder's output holds NaN"):
        check_conditional_embeddings(np.full((1, 24), np.nan), 24, name="text_encoder's output")
    with pytest.raises(ValueError, match="expected_dim"):
        check_conditional_embeddings(np.zeros((1, 24)), 0)


@pytest.mark.parametrize(
    ("embeddings", "error", "match"),
    [
        (np.zeros((2, 23), np.float32), ValueError, "projection_dim is 24"),
        (np.full((2, 24), np.nan, np.float32), ValueError, "NaN"),
        (torch.tensor([[0.0] * 24, [float("inf")] * 24]), ValueError, r"rows 1"),
        (np.zeros((1, 2, 24), np.float32), ValueError, "2-D"),
        (np.zeros(24, np.float32), ValueError, r"\(1, P\)"),
        (np.zeros((0, 24), np.float32), ValueError, "empty"),
        (np.zeros((2, 24), np.int64), TypeError, "floating point"),
        (torch.zeros(2, 24, dtype=torch.int32), TypeError, "floating point"),
        (np.zeros((2, 24), bool), TypeError, "floating point"),
        ([[0.0] * 24], TypeError, "numpy array or a torch tensor"),
    ],
)
def test_check_conditional_embeddings_errors(embeddings, error, match):
    with pytest.raises(error, match=match):
        check_conditional_embeddings(embeddings, 24)
