"""Fuzzing the two parsers of foreign input: image decoding and prompt expressions (issue 14).

Images: random bytes, and small valid PNG/JPEG/GIF/WebP/TIFF/BMP encodings (made here with
Pillow) with bytes flipped, set, inserted, deleted, duplicated or cut. Whatever the bytes, the
result is an `H x W x 3` uint8 array within the pixel limit or a ValueError naming the input:
never another exception, never a hang, never a large allocation.

Expressions: random strings over the expression alphabet and mutations of valid expressions
either parse (and then print, re-parse and evaluate consistently) or raise ExpressionError with
a column: never RecursionError, IndexError or anything else.

Each test takes its example count from `fuzz_settings` (bounded in CI; `scripts/fuzz.sh` runs
long).
"""

from __future__ import annotations

import io
import resource
import threading
import time
import zlib

import numpy as np
import pytest
from fastclipseg.ops.validation import decode_image_bytes, load_image
from fastclipseg.prompts.expressions import MAX_DEPTH, ExpressionError, evaluate, parse
from helpers.fuzzing import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

# Pillow warns about the corrupt data it skips over (EXIF, TIFF tags): expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")

# Small: any header the mutations inflate is refused before decoding, so a decode that gets
# through allocates little (a test below checks the process's peak memory).
MAX_PIXELS = 128 * 128
NAME = "fuzzed-input"
# One decode of a < 1 KB input taking longer than this is a hang.
DECODE_SECONDS = 20.0


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(14)
    rgb = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    rgb[4:8] = (200, 30, 30)  # some structure, so compressed formats have runs to corrupt
    image = Image.fromarray(rgb)
    seeds: list[tuple[Image.Image, str, dict]] = [
        (image, "PNG", {}),
        (image.convert("P"), "PNG", {"transparency": 3}),
        (image.convert("LA"), "PNG", {}),
        (Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG", {}),
        (image, "PNG", {"optimize": True}),
        (image, "JPEG", {"quality": 70}),
        (image, "JPEG", {"progressive": True}),
        (image.convert("L"), "JPEG", {}),
        (image.convert("CMYK"), "JPEG", {}),
        (image, "GIF", {}),
        (image, "GIF", {"save_all": True, "append_images": [image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)]}),
        (image, "WEBP", {"quality": 60}),
        (image, "WEBP", {"lossless": True}),
        (image, "TIFF", {}),
        (image, "TIFF", {"compression": "tiff_lzw"}),
        (image, "TIFF", {"compression": "tiff_adobe_deflate"}),
        (image.convert("CMYK"), "TIFF", {"compression": "packbits"}),
        (Image.fromarray(rgb[..., 0].astype(np.float32)), "TIFF", {}),
        (image, "BMP", {}),
    ]
    encoded = []
    for seed, fmt, options in seeds:
        buffer = io.BytesIO()
        seed.save(buffer, fmt, **options)
        encoded.append(buffer.getvalue())
    return encoded


SEEDS = _seed_images()
MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"RIFF\x00\x01\x00\x00WEBPVP8 ", b"II*\x00",
          b"MM\x00*", b"BM"]


@st.composite
def mutated_images(draw) -> bytes:
    """A seed encoding with a few mutations, positions biased towards the header (but mostly
    past the format's magic bytes, or nearly every input is simply not recognised)."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        if len(data) < 2:
            break
        size = len(data)
        where = draw(st.sampled_from(["magic"] + ["header"] * 4 + ["body"] * 5))
        low, high = {"magic": (0, 7), "header": (8, 80), "body": (8, size - 1)}[where]
        position = draw(st.integers(min(low, size - 1), max(min(low, size - 1), min(high, size - 1))))
        kind = draw(st.sampled_from(["flip", "set", "set4", "insert", "delete", "duplicate", "truncate"]))
        if kind == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[position] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == "set4":  # a size or offset field set to an extreme
            value = draw(st.sampled_from([0, 1, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, draw(st.integers(0, 2**32 - 1))]))
            data[position : position + 4] = value.to_bytes(4, draw(st.sampled_from(["big", "little"])))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            data[position:position] = data[position : position + draw(st.integers(1, 64))]
        else:
            del data[position:]
    if data.startswith(b"\x89PNG") and draw(st.booleans()):
        _fix_png_checksums(data)  # else Pillow refuses nearly every mutated header on its CRC
    return bytes(data)


def _fix_png_checksums(data: bytearray) -> None:
    offset = 8
    while offset + 12 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        end = offset + 8 + length
        if end + 4 > len(data):
            return
        data[end : end + 4] = zlib.crc32(data[offset + 4 : end]).to_bytes(4, "big")
        offset = end + 4


random_images = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGICS), st.binary(max_size=512)),
)


def _within_time(call):
    """call() in a thread that must finish within DECODE_SECONDS: returns its result or exception."""
    outcome: list = []

    def run():
        try:
            outcome.append(call())
        except BaseException as error:  # noqa: BLE001 - handed to the test to check
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(DECODE_SECONDS)
    assert outcome, f"decoding did not finish within {DECODE_SECONDS} s"
    return outcome[0], time.perf_counter() - started


def _check_decoded(outcome, name: str) -> None:
    if isinstance(outcome, BaseException):
        # The documented error, naming the input, and nothing else.
        assert type(outcome) is ValueError, f"{type(outcome).__name__}: {outcome}"
        assert name in str(outcome)
        return
    assert isinstance(outcome, np.ndarray) and outcome.dtype == np.uint8, type(outcome)
    assert outcome.ndim == 3 and outcome.shape[2] == 3, outcome.shape
    assert 0 < outcome.shape[0] * outcome.shape[1] <= MAX_PIXELS, outcome.shape


@pytest.fixture(scope="module")
def peak_memory():
    """The process's peak RSS must not grow by a decompression bomb's worth during the module."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    yield
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 512, f"peak memory grew by {grown_mib:.0f} MiB while decoding fuzzed images"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-files")


def test_seeds_decode_to_their_pixels():
    # The unmutated seeds are valid: they decode, to what Pillow itself gives in RGB.
    for data in SEEDS:
        decoded = decode_image_bytes(data, MAX_PIXELS, NAME)
        with Image.open(io.BytesIO(data)) as image:
            assert decoded.shape == (image.height, image.width, 3)
            if image.mode in ("RGB", "P", "L", "LA", "CMYK"):
                np.testing.assert_array_equal(decoded, np.asarray(image.convert("RGB")))


@fuzz_settings()
@given(data=st.one_of(mutated_images(), random_images))
def test_fuzz_decode_bytes(peak_memory, data):
    outcome, _ = _within_time(lambda: decode_image_bytes(data, MAX_PIXELS, NAME))
    _check_decoded(outcome, NAME)


@fuzz_settings(0.5)
@given(data=mutated_images())
def test_fuzz_load_path_and_lazy_pil(peak_memory, files, data):
    path = files / "fuzzed.img"
    path.write_bytes(data)
    outcome, _ = _within_time(lambda: load_image(path, MAX_PIXELS))
    _check_decoded(outcome, str(path))
    # The same bytes as a lazily opened PIL image: the documented error names its file too.
    try:
        image = Image.open(path)
    except Exception:  # noqa: BLE001 - Pillow refusing to open is not ours to test
        return
    with image:
        outcome, _ = _within_time(lambda: load_image(image, MAX_PIXELS))
        _check_decoded(outcome, str(path))


@pytest.fixture(scope="module")
def small_segmenter(tiny_model_dir):
    """The tiny model with the fuzz pixel limit: a mutated header cannot ask for a 50 MP decode."""
    from fastclipseg import FastSegmenter

    return FastSegmenter.from_pretrained(tiny_model_dir, max_image_pixels=MAX_PIXELS)


@fuzz_settings(0.1)
@given(data=mutated_images())
def test_fuzz_segment(peak_memory, small_segmenter, files, data):
    path = files / "fuzzed-segment.img"
    path.write_bytes(data)
    outcome, _ = _within_time(lambda: small_segmenter.segment_batch([np.zeros((8, 8, 3), np.uint8), path], "a cat"))
    if isinstance(outcome, BaseException):
        assert type(outcome) is ValueError, f"{type(outcome).__name__}: {outcome}"
        assert "images[1]" in str(outcome) and str(path) in str(outcome)
    else:
        result = outcome[1]
        height, width = result.image_size
        assert result.masks.shape == (1, height, width) and height * width <= MAX_PIXELS


# ------------------------------------------------------------------------------------------
# Expressions

WORDS = ["a", "cat", "dog", "the red car", "猫", "café", "and", "or", "not", "x1", "AND", "OR", "NOT"]
TOKENS = WORDS + ["AND", "OR", "NOT", "(", ")", "{", "}", '"', "{+5}", "{-3}", "{t=0.5}", "{+2, t=0.1}", "{+513}",
                  "{t=2}", "{}", ",", "+", "-", "=", "t", "0", "9", ".", "e", " ", "\t", "\n", "\u3000", "\x00", "\\"]
ALPHABET = "aAcdNnOoRrTt (){}\"+-=,.0123456789e\t\n\u3000猫é\\"

VALID = [
    "a cat",
    "a dog OR a cat",
    "(a dog OR a cat) AND NOT a collar {+5}",
    "NOT (a OR b) {t=0.3} AND c",
    '"salt AND pepper" OR (x {-2, t=0.9}) {+1}',
    "a AND b OR c AND NOT d OR e {+0}",
    "((a)) OR ((b AND c) {t=1})",
]


@st.composite
def token_strings(draw) -> str:
    separator = draw(st.sampled_from([" ", "", "  "]))
    return separator.join(draw(st.lists(st.sampled_from(TOKENS), max_size=40)))


@st.composite
def mutated_expressions(draw) -> str:
    text = list(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        piece = list(draw(st.sampled_from(TOKENS)))
        if kind == "insert":
            text[position:position] = piece
        elif kind == "delete":
            del text[position : position + draw(st.integers(1, 5))]
        elif kind == "replace":
            text[position : position + 1] = piece
        else:
            text[position:position] = text[position : position + draw(st.integers(1, 12))]
    return "".join(text)


# Wrapper -> (levels of nesting it adds, what it does to the map).
WRAPPERS = {"(": (1, lambda x: x), "NOT (": (2, lambda x: 1 - x), "NOT NOT (": (3, lambda x: 1 - (1 - x))}


@st.composite
def chains(draw) -> tuple[str, int, list[str], str, int]:
    """A long flat chain of AND / OR (some terms negated), wrapped `depth` times in a nesting
    wrapper: (text, count, operators, wrapper, depth)."""
    count = draw(st.integers(1, 400))
    operators = draw(st.lists(st.sampled_from(["AND", "OR", "AND NOT", "OR NOT"]), min_size=1, max_size=4))
    text = "".join((f" {operators[i % len(operators)]} " if i else "") + f"t{i % 7}" for i in range(count))
    wrapper = draw(st.sampled_from(sorted(WRAPPERS)))
    depth = draw(st.integers(0, MAX_DEPTH // WRAPPERS[wrapper][0] + 2))
    return wrapper * depth + text + ")" * depth, count, operators, wrapper, depth


def _chain_reference(count: int, operators: list[str], maps: dict) -> np.ndarray:
    """The chain by hand: NOT on its term, AND before OR, left to right."""
    result, group = None, maps["t0"]
    for i in range(1, count):
        operator = operators[i % len(operators)]
        term = maps[f"t{i % 7}"]
        if operator.endswith("NOT"):
            term = 1 - term
        if operator.startswith("OR"):
            result = group if result is None else np.maximum(result, group)
            group = term
        else:
            group = np.minimum(group, term)
    return group if result is None else np.maximum(result, group)


@fuzz_settings(0.3)
@given(case=chains())
def test_fuzz_flat_chains(case):
    text, count, operators, wrapper, depth = case
    levels_per_wrap, function = WRAPPERS[wrapper]
    negated = any(operators[i % len(operators)].endswith("NOT") for i in range(1, count))
    nesting = depth * levels_per_wrap + negated
    if nesting > MAX_DEPTH:
        # Only real nesting is refused, with the column of the '(' or NOT one level too deep.
        with pytest.raises(ExpressionError, match="nested too deeply") as caught:
            parse(text)
        assert text[caught.value.column - 1] in "(N"
        return
    expression = parse(text)  # however long the chain
    assert parse(str(expression)) == expression
    rng = np.random.default_rng(count)
    maps = {f"t{i}": rng.random((3, 2), dtype=np.float32) for i in range(7)}
    expected = _chain_reference(count, operators, maps)
    for _ in range(depth):
        expected = function(expected)
    np.testing.assert_allclose(evaluate(expression, maps), expected, atol=1e-6)


expression_texts = st.one_of(
    st.text(alphabet=ALPHABET, max_size=60), token_strings(), mutated_expressions(),
    chains().map(lambda case: case[0]),
)


@fuzz_settings()
@given(text=expression_texts)
def test_fuzz_parse(text):
    try:
        expression = parse(text)
    except ExpressionError as error:
        assert type(error) is ExpressionError
        assert error.column is not None and 1 <= error.column <= len(text) + 1, (error.column, len(text))
        assert f"(column {error.column})" in str(error) and "^" in str(error)
        return
    # Parsed: it prints canonically, re-parses to itself and evaluates to a map in [0, 1].
    canonical = str(expression)
    assert parse(canonical) == expression and str(parse(canonical)) == canonical
    assert hash(parse(canonical)) == hash(expression)
    terms = expression.terms()
    assert terms and all(term and term == " ".join(term.split()) for term in terms)
    rng = np.random.default_rng(len(text))
    maps = {term: rng.random((5, 6), dtype=np.float32) for term in terms}
    result = evaluate(expression, maps)
    assert result.shape == (5, 6) and result.dtype == np.float32
    assert np.all((result >= 0) & (result <= 1))


@fuzz_settings(0.3)
@given(text=st.one_of(mutated_expressions(), chains().map(lambda case: case[0])))
def test_fuzz_expressions_through_segment(tiny_segmenter, text):
    # The prompt path: the documented ValueError (an ExpressionError names the column) or a result.
    try:
        result = tiny_segmenter.segment(np.zeros((6, 7, 3), np.uint8), text)
    except ValueError as error:
        assert type(error) is ExpressionError or "prompts[0]" in str(error), f"{type(error).__name__}: {error}"
        return
    assert result.masks.shape == (1, 6, 7)
