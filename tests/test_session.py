"""Sessions, prompt expressions in `segment`, refinements, custom text encoders and cache keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastclipseg.bench.measure import natural_image
from scipy import ndimage

IMAGE = natural_image(48, 64, seed=5)


def probs(segmenter, prompt: str) -> np.ndarray:
    return segmenter.segment(IMAGE, prompt).probs[0]


def test_session_runs_the_vision_stage_once_and_matches_segment(tiny_segmenter, monkeypatch):
    engine = tiny_segmenter.engine
    calls = []
    original = engine.encode_images
    monkeypatch.setattr(engine, "encode_images", lambda pixels: calls.append(pixels.shape[0]) or original(pixels))
    session = tiny_segmenter.session(IMAGE)
    results = [session.segment(prompt) for prompt in ("a cat", "red dog", "a cat")]
    assert calls == [1]
    monkeypatch.undo()
    for prompt, result in zip(("a cat", "red dog", "a cat"), results):
        direct = tiny_segmenter.segment(IMAGE, prompt)
        np.testing.assert_array_equal(result.logits, direct.logits)
        assert result.rle == direct.rle and result.prompts == [prompt]
    both = session.predict(["a cat", "red dog"])
    np.testing.assert_array_equal(both.logits, tiny_segmenter.segment(IMAGE, ["a cat", "red dog"]).logits)
    assert len(session.history) == 3  # predict() does not add to the history


def test_history_undo_and_reset(tiny_segmenter):
    session = tiny_segmenter.session(IMAGE)
    assert session.current is None
    with pytest.raises(ValueError, match="nothing to undo"):
        session.undo()
    with pytest.raises(ValueError, match="call segment"):
        session.refine("exclude a dog")
    first = session.segment("a cat")
    second = session.segment("red dog")
    assert session.current is second and session.history == [first, second]
    assert session.undo() is first and session.current is first
    session.reset()
    assert session.current is None and session.history == []
    with pytest.raises(ValueError, match="one prompt"):
        session.segment(["a cat", "red dog"])


@pytest.mark.parametrize(
    ("phrase", "term", "algebra"),
    [
        ("exclude red dog", "red dog", lambda cur, new: np.minimum(cur, 1 - new)),
        ("without the dog", "the dog", lambda cur, new: np.minimum(cur, 1 - new)),
        ("except red", "red", lambda cur, new: np.minimum(cur, 1 - new)),
        ("but not a dog", "a dog", lambda cur, new: np.minimum(cur, 1 - new)),
        ("only the head", "the head", np.minimum),
        ("focus on red", "red", np.minimum),
        ("within a dog", "a dog", np.minimum),
        ("and the leash", "the leash", np.maximum),
    ],
)
def test_refinements_follow_the_algebra(tiny_segmenter, phrase, term, algebra):
    session = tiny_segmenter.session(IMAGE)
    current = session.segment("a cat").probs[0]
    refined = session.refine(phrase)
    expected = algebra(current, probs(tiny_segmenter, term))
    np.testing.assert_allclose(refined.probs[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(refined.masks[0], expected > 0.5)
    assert session.current is refined and len(session.history) == 2
    assert term in refined.prompts[0] and "a cat" in refined.prompts[0]
    session.undo()
    assert session.current.prompts == ["a cat"]


def test_expressions_in_segment_follow_the_algebra(tiny_segmenter):
    cat, dog, red = (probs(tiny_segmenter, p) for p in ("a cat", "a dog", "red"))
    result = tiny_segmenter.segment(IMAGE, ["(a cat OR a dog) AND NOT red", "a cat", "a dog {+2}"])
    assert len(result.prompts) == 3 and result.image_size == (48, 64)
    np.testing.assert_allclose(result.probs[0], np.minimum(np.maximum(cat, dog), 1 - red), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.probs[1], cat, rtol=1e-5, atol=1e-6)  # a plain prompt beside expressions
    yy, xx = np.mgrid[-2:3, -2:3]
    dilated = ndimage.grey_dilation(dog, footprint=yy**2 + xx**2 <= 4)
    np.testing.assert_allclose(result.probs[2], dilated, rtol=1e-5, atol=1e-6)
    # A parenthesised ordinary prompt is not an expression; a bad expression names its column.
    assert tiny_segmenter.segment(IMAGE, "a cat (black)").prompts == ["a cat (black)"]
    with pytest.raises(ValueError, match="column"):
        tiny_segmenter.segment(IMAGE, "a cat AND")


def test_custom_text_encoder_and_conditional_embeddings(tiny_model_dir, tiny_segmenter):
    from fastclipseg import FastSegmenter

    rng = np.random.default_rng(0)
    table: dict[str, np.ndarray] = {}
    seen: list[list[str]] = []

    def encoder(texts: list[str]) -> np.ndarray:
        seen.append(list(texts))
        return np.stack([table.setdefault(t, rng.normal(size=tiny_segmenter.embedding_dim).astype(np.float32)) for t in texts])

    custom = FastSegmenter.from_pretrained(tiny_model_dir, text_encoder=encoder)
    result = custom.segment(IMAGE, ["Un chat", "un  chat ", "一只猫"])
    # One call for the three (case differences are kept apart: a custom encoder may care) ...
    assert seen == [["Un chat", "un  chat ", "一只猫"]]
    # ... and whitespace-only differences share the cached entry.
    custom.segment(IMAGE, [" Un   chat", "un chat"])
    assert len(seen) == 1 and custom.prompt_cache.misses == 3
    session = tiny_segmenter.session(IMAGE)
    expected = session.logits(torch.from_numpy(np.stack([table["Un chat"]]))).numpy()
    # Batched (3 prompts) against alone: summation order differs, so relative to the largest logit.
    np.testing.assert_allclose(result.logits[0], expected[0], rtol=0, atol=1e-5 * np.abs(expected).max())

    embeddings = rng.normal(size=(2, tiny_segmenter.embedding_dim)).astype(np.float32)
    given = tiny_segmenter.segment(IMAGE, conditional_embeddings=embeddings)
    assert given.prompts == ["embedding 0", "embedding 1"]
    np.testing.assert_allclose(given.logits, session.logits(torch.from_numpy(embeddings)).numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=str(tiny_segmenter.embedding_dim)):
        tiny_segmenter.segment(IMAGE, conditional_embeddings=np.zeros((1, 7), np.float32))
    bad = FastSegmenter.from_pretrained(tiny_model_dir, text_encoder=lambda texts: np.zeros((len(texts), 3), np.float32))
    with pytest.raises(ValueError, match="text_encoder"):
        bad.segment(IMAGE, "a cat")
    with pytest.raises(TypeError, match="callable"):
        FastSegmenter.from_pretrained(tiny_model_dir, text_encoder="not callable")


def test_cache_key_is_the_normalised_text(tiny_segmenter):
    tiny_segmenter.prompt_cache.clear()
    before = tiny_segmenter.prompt_cache.misses
    a = tiny_segmenter.encode_prompts(["A  Cat", "a cat", " a cat\t"])
    assert tiny_segmenter.prompt_cache.misses - before == 1 and len(tiny_segmenter.prompt_cache) == 1
    torch.testing.assert_close(a[0], a[1])


MULTILINGUAL = [
    "a photo of a cat",
    "Café naïve, crème brûlée à Zürich: ÄÖÜ ß",
    "une voiture rouge",
    "красная машина и русский текст",
    "日本語のテキスト、猫と犬",
    "一只黑色的猫",
    "한국어 고양이",
    "سيارة حمراء",
    "🐱 cat emoji 🚀🔥 👩‍👩‍👧",
    "Ελληνικά",
]


def test_any_language_tokenises_as_transformers_clip_tokenizer(shared_data, tmp_path):
    """The real CLIP vocabulary: fastclipseg's token ids equal transformers' (slow, reference)
    CLIPTokenizer's, and texts sharing a cache key get the same ids."""
    from fastclipseg.model.tokenizer_files import (
        load_clip_tokenizer,
        write_clip_tokenizer_files,
    )
    from fastclipseg.prompts.texts import PromptTokenizer, clip_cache_key
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(shared_data / "bpe_simple_vocab_16e6.txt.gz", tmp_path)
    ours = PromptTokenizer(load_clip_tokenizer(tmp_path), 77)
    reference = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    for text in MULTILINGUAL:
        expected = reference(text, max_length=77, truncation=True)["input_ids"]
        got = ours([text])[0].tolist()
        assert got == expected, text
        variant = "  " + text.upper() + " "
        if clip_cache_key(variant) == clip_cache_key(text):
            assert ours([variant])[0].tolist() == got, text


def test_image_prompts_and_refine_with_mask(tiny_segmenter):
    from fastclipseg.prompts.image_prompts import ImagePrompt

    example = natural_image(30, 30, seed=9)
    session = tiny_segmenter.session(IMAGE)
    by_example = session.segment(example)
    expected = session.logits(tiny_segmenter.encode_image_prompts([ImagePrompt(example)])).numpy()
    np.testing.assert_allclose(by_example.logits, expected, rtol=0, atol=1e-6 * max(1.0, np.abs(expected).max()))
    # Text and image prompts together, in order (decoded in one batch: summation order differs).
    mixed = tiny_segmenter.segment(IMAGE, ["a cat", ImagePrompt(example)])
    alone = tiny_segmenter.segment(IMAGE, "a cat").logits[0]
    for got, want in ((mixed.logits[1], by_example.logits[0]), (mixed.logits[0], alone)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    # "More of this": the session's own image with its current mask as the example.
    current = session.segment("a cat")
    assert current.masks[0].any(), "the test needs a non-empty mask"
    more = session.refine_with_mask()
    direct = tiny_segmenter.segment(IMAGE, [ImagePrompt(IMAGE, mask=current.masks[0])])
    np.testing.assert_array_equal(more.logits, direct.logits)
    assert session.current is more and "masked" in more.prompts[0]


def test_dense_features_through_the_segmenter_and_a_session(tiny_segmenter):
    from fastclipseg.features import dense_features, semantic_segment

    session = tiny_segmenter.session(IMAGE)
    for method in ("clearclip", "maskclip"):
        direct = dense_features(tiny_segmenter, IMAGE, method=method)
        np.testing.assert_array_equal(tiny_segmenter.dense_features(IMAGE, method=method).embeddings, direct.embeddings)
        np.testing.assert_array_equal(session.dense_features(method=method).embeddings, direct.embeddings)
    labels = tiny_segmenter.semantic_segment(IMAGE, ["a cat", "a dog", "red"]).labels
    np.testing.assert_array_equal(labels, semantic_segment(tiny_segmenter, IMAGE, ["a cat", "a dog", "red"]).labels)
    assert labels.shape == (48, 64)


def test_segment_command_takes_expressions(tiny_model_dir, tiny_segmenter, tmp_path):
    import json

    from fastclipseg.cli import app
    from PIL import Image
    from typer.testing import CliRunner

    image_path = tmp_path / "photo.png"
    Image.fromarray(IMAGE).save(image_path)
    out = tmp_path / "out"
    expression = "(a cat OR a dog) AND NOT red"
    result = CliRunner().invoke(app, ["segment", str(image_path), "-p", expression, "-p", "a cat", "-m",
                                      str(tiny_model_dir), "--out", str(out), "--precision", "fp32"],
                             catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "photo.json").read_text())
    assert [m["prompt"] for m in record["masks"]] == [expression, "a cat"]
    expected = tiny_segmenter.segment(IMAGE, [expression, "a cat"])
    assert [m["rle"] for m in record["masks"]] == expected.rle
    assert (out / record["masks"][0]["mask_png"]).is_file()
    bad = CliRunner().invoke(app, ["segment", str(image_path), "-p", "(a cat OR", "-m", str(tiny_model_dir),
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "column" in bad.output and "^" in bad.output
