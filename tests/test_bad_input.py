"""Every kind of bad input gets the documented exception with a message naming the input.

The documented exceptions are ValueError (ExpressionError is one), TypeError and
FileNotFoundError; each message names the input: its index in a batch, its path or file name,
or the offending value. Unusual but valid inputs (16-bit, CMYK, palette images, non-contiguous
arrays, numpy scalars) must work.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import warnings
import zlib
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from fastclipseg import FastSegmenter
from fastclipseg.prompts.expressions import (
    MAX_DEPTH,
    And,
    ExpressionError,
    Or,
    Term,
    evaluate,
    parse,
)
from fastclipseg.streams.pipeline import FrameError
from PIL import Image

GOOD = np.zeros((16, 16, 3), np.uint8)
NOISE = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


@contextmanager
def raises(error: type[BaseException], *fragments: str):
    """Exactly the documented exception (or a subclass), with every fragment in its message."""
    with pytest.raises(error) as caught:
        yield caught
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message {message!r}"


# ------------------------------------------------------------------------------------------
# Encoded test images


def encode(array_or_image, fmt: str, **options) -> bytes:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_size(width: int, height: int, idat: bytes = b"") -> bytes:
    """A greyscale PNG whose header (with a valid CRC) claims width x height."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A real, complete greyscale PNG of side x side zeros: a few hundred KB that decode to side² bytes."""
    compressor = zlib.compressobj(1)
    row = bytes(side + 1)  # filter byte + pixels
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_with_size(side, side, body)


def jpeg_with_size(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) is patched to claim width x height."""
    data = bytearray(encode(NOISE[:16, :16], "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_with_size(width: int, height: int) -> bytes:
    """A small valid GIF whose logical screen and first image claim width x height."""
    data = bytearray(encode(NOISE[:8, :8], "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    descriptor = data.index(b"\x2c")
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def truncated(fmt: str) -> bytes:
    data = encode(NOISE, fmt)
    return data[: len(data) // 2]


# ------------------------------------------------------------------------------------------
# Prompts


@pytest.mark.parametrize(
    "prompts, error, message",
    [
        ([], ValueError, "empty"),
        ("", ValueError, r"prompts\[0\] is empty"),
        ("   \t", ValueError, "whitespace"),
        (["a cat", " "], ValueError, r"prompts\[1\]"),
        (["a cat", 3], TypeError, r"prompts\[1\] must be a string, got int"),
        (None, TypeError, "got NoneType"),
        (b"a cat", TypeError, "bytes"),
        (5, TypeError, "got int"),
        ({"a cat": 1}, TypeError, "got dict"),
        ({"a cat"}, TypeError, "got set"),
        # A lone surrogate cannot be encoded for the tokenizer: named here, not deep in tokenizers.
        (["a cat", "a \ud800 dog"], ValueError, r"prompts\[1\].*surrogate"),
        # An expression error names which prompt of the list it is in, then points into its text.
        (["a cat", "(b AND"], ValueError, r"prompts\[1\]: expected a prompt.*column 7"),
    ],
)
def test_bad_prompts(tiny_segmenter, prompts, error, message):
    with pytest.raises(error, match=message):
        tiny_segmenter.segment(GOOD, prompts)


def test_long_prompt_is_truncated_with_a_warning(tiny_segmenter):
    long_prompt = " ".join(["cat"] * 120)
    with pytest.warns(UserWarning, match="truncated"):
        result = tiny_segmenter.segment(GOOD, long_prompt)
    assert result.logits.shape[0] == 1
    # Truncated to the first 77 tokens: the same as the prompt cut to fit.
    fitting = " ".join(["cat"] * 75)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(tiny_segmenter.segment(GOOD, fitting).logits, result.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prompt", ["salt and pepper", "a cat or a dog", "not a dog", "a cat XOR a dog",
                                    "(a cat)", "a cat Or a dog"])
def test_lower_case_and_unknown_operators_are_plain_prompts(tiny_segmenter, prompt):
    # Keywords are upper-case AND/OR/NOT only; anything else is one ordinary prompt, not an error.
    result = tiny_segmenter.segment(GOOD, prompt)
    assert result.prompts == [prompt]
    # The network's logits at its own resolution (an expression's are at the image's), for the whole text.
    expected = tiny_segmenter.predict_logits(tiny_segmenter.pixel_values([GOOD]), [[prompt]])[0].numpy()
    np.testing.assert_allclose(result.logits, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# Expressions


@pytest.mark.parametrize(
    "expression, fragments",
    [
        ("(a cat OR a dog", ["expected ')'", "column 16"]),
        ("a cat OR a dog)", ["unmatched ')'", "column 15"]),
        ("a cat AND", ["expected a prompt", "column 10"]),
        ("AND a cat", ["expected a prompt", "column 1"]),
        ("a cat OR OR a dog", ["expected a prompt", "column 10"]),
        ("a cat AND NOT", ["expected a prompt", "column 14"]),
        ("a cat AND ()", ["empty parentheses", "column 12"]),
        ('a cat AND ""', ["empty prompt", "column 11"]),
        ('a cat AND "a dog', ["unclosed quote", "column 11"]),
        ("a cat {", ["unclosed '{'", "column 7"]),
        ("a cat } OR a dog", ["'}'", "column 7"]),  # alone, "a cat }" is a plain prompt
        ("a cat {}", ["empty modifier", "column 7"]),
        ("a cat {+1,}", ["empty modifier", "column 11"]),
        ("a cat {+x}", ["whole number", "'x'", "column 8"]),
        ("a cat {+1.5}", ["whole number", "'1.5'"]),
        ("a cat {+513}", ["radius 513 is too large", "at most 512", "column 8"]),
        ("a cat {-100000000000000000000}", ["too large", "column 8"]),
        ("a cat {t=2}", ["between 0 and 1", "got 2", "column 8"]),
        ("a cat {t=-0.1}", ["threshold t", "'-0.1'", "column 8"]),
        ("a cat {t=nan}", ["threshold t", "'nan'", "column 8"]),
        ("a cat {q=1}", ["unknown modifier 'q=1'", "column 8"]),
        ("a cat {+1, -2}", ["given twice", "column 12"]),
        ("a cat {t=0.1, t=0.2}", ["given twice", "column 15"]),
        ("a cat {+5} {+3}", ["only one set of braces", "column 12"]),
        ("(" * (MAX_DEPTH + 1) + "a cat OR a dog" + ")" * (MAX_DEPTH + 1),
         ["nested too deeply", f"more than {MAX_DEPTH}", f"column {MAX_DEPTH + 1}"]),
    ],
)
def test_bad_expressions(tiny_segmenter, expression, fragments):
    with raises(ExpressionError, *fragments) as caught:
        tiny_segmenter.segment(GOOD, ["a cat", expression])
    assert isinstance(caught.value, ValueError)
    # The message repeats the text (a long one shown in full) with a caret under the column.
    assert expression.replace("\n", " ")[:40] in str(caught.value)
    assert caught.value.column is not None and 1 <= caught.value.column <= len(expression) + 1


# -- issue 14: a long flat chain is not nesting -------------------------------------------------


def chain(count: int, operators: tuple[str, ...]) -> str:
    """t0 OP t1 OP t2 ..., the operators taken in turn."""
    return "".join((f" {operators[i % len(operators)]} " if i else "") + f"t{i}" for i in range(count))


@pytest.mark.parametrize("count", [300, 2000])
@pytest.mark.parametrize("operators", [("OR",), ("AND",), ("AND", "OR", "OR", "AND", "AND")],
                         ids=["or", "and", "mixed"])
def test_long_flat_chains_parse_print_and_evaluate(count, operators):
    text = chain(count, operators)
    started = time.perf_counter()
    expression = parse(text)
    assert expression.terms() == [f"t{i}" for i in range(count)]
    assert str(expression) == text  # the canonical form of a flat chain is the chain itself
    assert parse(str(expression)) == expression and hash(parse(text)) == hash(expression)
    repr(expression)  # no recursion in the dataclass repr either
    rng = np.random.default_rng(count)
    maps = {f"t{i}": rng.random((3, 4), dtype=np.float32) for i in range(count)}
    result = evaluate(expression, maps)
    # The expected map by precedence: AND binds tighter than OR, both left to right.
    expected, group = None, None
    for i in range(count):
        if i and operators[i % len(operators)] == "OR":
            expected = group if expected is None else np.maximum(expected, group)
            group = None
        group = maps[f"t{i}"] if group is None else np.minimum(group, maps[f"t{i}"])
    expected = group if expected is None else np.maximum(expected, group)
    np.testing.assert_array_equal(result, expected)
    # Linear, not quadratic: 2000 terms in well under a few seconds even on a loaded machine.
    assert time.perf_counter() - started < 10


def test_flat_chain_tree_is_left_associative():
    assert parse("a OR b OR c OR d") == Or(Or(Or(Term("a"), Term("b")), Term("c")), Term("d"))
    assert parse("a AND b AND c") == And(And(Term("a"), Term("b")), Term("c"))
    assert parse("a OR b") != parse("a AND b") and parse("a OR b OR c") != parse("a OR (b OR c)")


def test_long_chains_inside_deep_nesting_work():
    # Tree depth is chain length x nesting: 150 levels, each holding a 50-term chain.
    inner = "x"
    for level in range(150):
        inner = " OR ".join([f"p{level}_{i}" for i in range(49)] + [f"({inner})"])
    expression = parse(inner)
    assert len(expression.terms()) == 150 * 49 + 1
    assert parse(str(expression)) == expression
    maps = {term: np.full((2, 2), 0.25, np.float32) for term in expression.terms()}
    maps["x"] = np.full((2, 2), 0.75, np.float32)
    np.testing.assert_array_equal(evaluate(expression, maps), maps["x"])


@pytest.mark.parametrize(
    "text, column",
    [
        ("(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1), MAX_DEPTH + 1),
        ("NOT " * (MAX_DEPTH + 1) + "a", 4 * MAX_DEPTH + 1),
        ("a AND " + "NOT (" * 101 + "b" + ")" * 101, 6 + 5 * 100 + 1),  # NOT and '(' both nest
    ],
    ids=["parentheses", "not", "not-and-parentheses"],
)
def test_real_nesting_beyond_the_limit_is_refused(text, column):
    with raises(ExpressionError, "nested too deeply", f"more than {MAX_DEPTH}") as caught:
        parse(text)
    assert caught.value.column == column  # the '(' or NOT that goes one level too deep


def test_nesting_at_the_limit_is_accepted():
    assert parse("(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH) == Term("a")
    assert parse("NOT " * MAX_DEPTH + "a").terms() == ["a"]


def test_error_in_a_long_expression_quotes_the_text_around_it():
    text = chain(2000, ("OR",))
    broken = text[:5000] + " ) " + text[5000:]
    with raises(ExpressionError, "unmatched ')'", "column 5002") as caught:
        parse(broken)
    _, shown, caret = str(caught.value).splitlines()
    assert len(shown) < 200 and shown.strip().startswith("...") and shown.endswith("...")
    assert shown[caret.index("^")] == ")"  # the caret still points at the character


def test_long_chain_through_segment(tiny_segmenter):
    # One distinct prompt: the network runs once, the 2000-term chain combines it.
    result = tiny_segmenter.segment(GOOD, " OR ".join(["a cat"] * 1000 + ["a dog"] * 1000))
    both = tiny_segmenter.segment(GOOD, "a cat OR a dog")
    np.testing.assert_allclose(result.probs, both.probs, atol=1e-6)


# ------------------------------------------------------------------------------------------
# Arrays


@pytest.mark.parametrize(
    "image, error, message",
    [
        (np.zeros((16, 16, 3), np.float32), TypeError, "dtype uint8, got float32"),
        (np.zeros((16, 16, 3), np.uint16), TypeError, "uint16"),
        (np.zeros((16, 16, 3), np.int8), TypeError, "int8"),
        (np.zeros((16, 16, 3), bool), TypeError, "got bool"),
        (np.zeros((16, 16, 3), object), TypeError, "got object"),
        (np.zeros((2, 16, 16, 3), np.uint8), ValueError, "4 dimensions"),
        (np.zeros((16,), np.uint8), ValueError, "1 dimensions"),
        (np.array(7, np.uint8), ValueError, "0 dimensions"),
        (np.zeros((16, 16, 2), np.uint8), ValueError, "got 2"),
        (np.zeros((16, 16, 5), np.uint8), ValueError, "got 5"),
        (np.zeros((16, 16, 0), np.uint8), ValueError, "got 0"),
        (np.zeros((0, 0, 3), np.uint8), ValueError, "empty"),
        (np.zeros((0, 10), np.uint8), ValueError, "empty"),
        (12, TypeError, "got int"),
        ([GOOD], TypeError, "got list"),
        (GOOD.tolist(), TypeError, "got list"),
        (b"\x89PNG", TypeError, "got bytes"),
    ],
)
def test_bad_arrays_and_types(tiny_segmenter, image, error, message):
    with pytest.raises(error, match=message):
        tiny_segmenter.segment(image, "a cat")
    # In a batch the message also names the index.
    with pytest.raises(error, match=r"images\[1\]: .*" + message):
        tiny_segmenter.segment_batch([GOOD, image], "a cat")


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a[:, ::-1],  # negative stride
        lambda a: a[..., ::-1],  # BGR <-> RGB view
        lambda a: a[::2, ::3],
        np.asfortranarray,
        lambda a: np.ascontiguousarray(a.transpose(2, 0, 1)).transpose(1, 2, 0),
        _read_only,
    ],
    ids=["flipped", "channels-reversed", "strided", "fortran", "planar", "read-only"],
)
def test_non_contiguous_arrays_work(tiny_segmenter, make):
    view = make(NOISE)
    result = tiny_segmenter.segment(view, "a cat")
    expected = tiny_segmenter.segment(np.ascontiguousarray(view), "a cat")
    assert result.masks.shape == (1, *view.shape[:2])
    np.testing.assert_array_equal(result.logits, expected.logits)


def test_pixel_limit(tiny_model_dir, tmp_path):
    segmenter = FastSegmenter.from_pretrained(tiny_model_dir, max_image_pixels=100)
    with pytest.raises(ValueError, match="above the limit of 100"):
        segmenter.segment(np.zeros((11, 10, 3), np.uint8), "a cat")
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="big.png.*above the limit"):
        segmenter.segment(path, "a cat")
    assert segmenter.segment(np.zeros((10, 10, 3), np.uint8), "a cat").masks.shape == (1, 10, 10)


# ------------------------------------------------------------------------------------------
# Thresholds


@pytest.mark.parametrize(
    "threshold, shown",
    [(float("nan"), "nan"), (-0.1, "-0.1"), (1.5, "1.5"), (float("inf"), "inf"), (float("-inf"), "-inf"),
     (np.float64("nan"), "nan"), (2, "2")],
)
def test_bad_threshold_values(tiny_segmenter, threshold, shown):
    with raises(ValueError, "threshold", shown):
        tiny_segmenter.segment(GOOD, "a cat", threshold=threshold)
    with raises(ValueError, "threshold", shown):
        tiny_segmenter.session(GOOD, threshold=threshold)


@pytest.mark.parametrize("threshold", ["0.5", None, True, np.bool_(True), 0.5j, Decimal("0.5"), np.array([0.5])])
def test_bad_threshold_types(tiny_segmenter, threshold):
    with raises(TypeError, "threshold", type(threshold).__name__):
        tiny_segmenter.segment(GOOD, "a cat", threshold=threshold)
    with raises(TypeError, "threshold"):
        tiny_segmenter.segment_stream([GOOD], "a cat", threshold=threshold)


@pytest.mark.parametrize("threshold", [np.float32(0.25), np.int64(1), 0, Fraction(1, 4)])
def test_numeric_thresholds_of_other_types_work(tiny_segmenter, threshold):
    result = tiny_segmenter.segment(GOOD, "a cat", threshold=threshold)
    assert result.threshold == float(threshold) and type(result.threshold) is float


# ------------------------------------------------------------------------------------------
# Image files


def _write(name: str, data: bytes):
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path
    return make


def _symlink_loop(tmp_path: Path) -> Path:
    path = tmp_path / "loop.png"
    os.symlink(path, path)
    return path


def _dangling_symlink(tmp_path: Path) -> Path:
    path = tmp_path / "dangling.png"
    os.symlink(tmp_path / "gone.png", path)
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


BAD_FILES = [
    ("missing", lambda tmp: tmp / "missing.png", FileNotFoundError, ["missing.png"]),
    ("dangling-symlink", _dangling_symlink, FileNotFoundError, ["dangling.png"]),
    ("directory", lambda tmp: tmp, ValueError, ["is a directory"]),
    ("empty-string", lambda tmp: "", ValueError, ["empty"]),
    ("fifo", _fifo, ValueError, ["pipe.png", "not a regular file"]),
    ("device", lambda tmp: "/dev/zero", ValueError, ["/dev/zero", "not a regular file"]),
    ("symlink-loop", _symlink_loop, ValueError, ["loop.png"]),
    ("name-too-long", lambda tmp: tmp / ("x" * 300 + ".png"), ValueError, ["x" * 300 + ".png"]),
    ("empty-file", _write("empty.png", b""), ValueError, ["empty.png"]),
    ("text-file", _write("notes.txt", b"this is not an image\n"), ValueError, ["notes.txt"]),
    ("text-as-jpg", _write("garbage.jpg", b"this is not an image"), ValueError, ["garbage.jpg"]),
    ("truncated-png", _write("cut.png", truncated("PNG")), ValueError, ["cut.png"]),
    ("truncated-jpeg", _write("cut.jpg", truncated("JPEG")), ValueError, ["cut.jpg"]),
    ("truncated-gif", _write("cut.gif", truncated("GIF")), ValueError, ["cut.gif"]),
    ("truncated-webp", _write("cut.webp", truncated("WEBP")), ValueError, ["cut.webp"]),
    ("truncated-tiff", _write("cut.tif", truncated("TIFF")), ValueError, ["cut.tif"]),
    ("png-header-only", _write("header.png", encode(NOISE, "PNG")[:33]), ValueError, ["header.png"]),
    # Headers claiming huge sizes: refused from the header, before any pixel is decoded.
    ("png-claims-8000x8000", _write("huge.png", png_with_size(8000, 8000)), ValueError,
     ["huge.png", "above the limit"]),
    ("png-claims-2^31", _write("huger.png", png_with_size(2**31 - 1, 2**31 - 1)), ValueError,
     ["huger.png", "above the limit"]),
    ("jpeg-claims-65535^2", _write("huge.jpg", jpeg_with_size(65535, 65535)), ValueError,
     ["huge.jpg", "above the limit"]),
    ("jpeg-claims-8000x8000", _write("big.jpg", jpeg_with_size(8000, 8000)), ValueError,
     ["big.jpg", "above the limit"]),
    ("gif-claims-65535^2", _write("huge.gif", gif_with_size(65535, 65535)), ValueError,
     ["huge.gif", "above the limit"]),
    ("png-zero-width", _write("zero.png", png_with_size(0, 10)), ValueError, ["zero.png"]),
    # Found by the fuzz run: Pillow raises a bare ValueError("Truncated IHDR chunk"), which
    # reached the caller without the file's name.
    ("png-short-ihdr", _write("short.png", b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", bytes(12))), ValueError,
     ["short.png", "Truncated IHDR"]),
]


@pytest.mark.parametrize("make, error, fragments", [case[1:] for case in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_image_files(tiny_segmenter, tmp_path, make, error, fragments):
    path = make(tmp_path)

    def run(call):
        # A FIFO or a device must not block: run in a thread that must finish.
        outcome: list[BaseException | object] = []
        thread = threading.Thread(target=lambda: outcome.append(_outcome(call)), daemon=True)
        thread.start()
        thread.join(30)
        assert outcome, f"{path!s:.80}: reading the image did not finish (it blocked)"
        return outcome[0]

    caught = run(lambda: tiny_segmenter.segment(path, "a cat"))
    assert isinstance(caught, error), repr(caught)
    for fragment in fragments:
        assert fragment in str(caught), f"{fragment!r} not in {str(caught)!r}"
    caught = run(lambda: tiny_segmenter.segment_batch([GOOD, GOOD, path], "a cat"))
    assert isinstance(caught, error) and "images[2]" in str(caught), repr(caught)
    for fragment in fragments:
        assert fragment in str(caught)


def _outcome(call):
    try:
        return call()
    except BaseException as error:  # noqa: BLE001 - handed to the test thread to check
        return error


def test_decompression_bomb_is_refused_before_decoding(tiny_segmenter, tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(7500))  # 56 MP of zeros in about 60 KB, above the default 50 MP
    assert path.stat().st_size < 1_000_000
    started = time.perf_counter()
    with raises(ValueError, "bomb.png", "7500x7500", "above the limit of 50000000"):
        tiny_segmenter.segment(path, "a cat")
    with raises(ValueError, "bomb.png", "above the limit"):
        tiny_segmenter.segment(Image.open(path), "a cat")
    assert time.perf_counter() - started < 2  # no 56 MB decode happened


def _exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    return encode(NOISE[:, :40], "JPEG", exif=exif)


GOOD_FILES = [
    ("png-16-bit", lambda: encode(Image.fromarray((NOISE[..., 0].astype(np.uint16) * 257)), "PNG"), (64, 64)),
    ("tiff-16-bit", lambda: encode(Image.fromarray(NOISE[..., 0].astype(np.uint16) * 257), "TIFF"), (64, 64)),
    ("tiff-float", lambda: encode(Image.fromarray(NOISE[..., 0].astype(np.float32)), "TIFF"), (64, 64)),
    ("jpeg-cmyk", lambda: encode(Image.fromarray(NOISE).convert("CMYK"), "JPEG"), (64, 64)),
    ("png-palette-transparent", lambda: encode(Image.fromarray(NOISE).convert("P"), "PNG", transparency=0), (64, 64)),
    ("png-grey-alpha", lambda: encode(Image.fromarray(NOISE).convert("LA"), "PNG"), (64, 64)),
    ("png-1-bit", lambda: encode(Image.fromarray(NOISE).convert("1"), "PNG"), (64, 64)),
    ("gif-animated", lambda: encode(Image.fromarray(NOISE), "GIF", save_all=True,
                                    append_images=[Image.fromarray(NOISE[::-1])]), (64, 64)),
    ("webp", lambda: encode(NOISE, "WEBP"), (64, 64)),
    ("jpeg-exif-rotated", _exif_rotated_jpeg, (40, 64)),  # H and W swapped by the orientation
]


@pytest.mark.parametrize("make, size", [case[1:] for case in GOOD_FILES], ids=[c[0] for c in GOOD_FILES])
def test_unusual_valid_images_work(tiny_segmenter, tmp_path, make, size):
    path = tmp_path / "image.bin"
    path.write_bytes(make())
    result = tiny_segmenter.segment(path, "a cat")
    assert result.masks.shape == (1, *size) and result.source == str(path)


# ------------------------------------------------------------------------------------------
# issue 14: lazily opened PIL images that fail to decode


@pytest.fixture(params=["PNG", "JPEG", "GIF", "TIFF"])
def truncated_pil(request, tmp_path):
    """A truncated file opened with Image.open but not yet loaded: decoding fails only on load."""
    path = tmp_path / f"cut.{request.param.lower()}"
    path.write_bytes(truncated(request.param))
    image = Image.open(path)
    yield image, path
    image.close()


def test_truncated_pil_image_in_segment(tiny_segmenter, truncated_pil):
    image, path = truncated_pil
    with raises(ValueError, str(path), "PIL image", "truncated"):
        tiny_segmenter.segment(image, "a cat")


def test_truncated_pil_image_in_segment_batch(tiny_segmenter, truncated_pil):
    image, path = truncated_pil
    with raises(ValueError, "images[1]", str(path)):
        tiny_segmenter.segment_batch([GOOD, image, GOOD], "a cat")
    with raises(ValueError, "images[1]", str(path)):  # the per-image path (expressions) too
        tiny_segmenter.segment_batch([GOOD, image], "a cat OR a dog")


def test_truncated_pil_image_in_session(tiny_segmenter, truncated_pil):
    image, path = truncated_pil
    with raises(ValueError, str(path), "truncated"):
        tiny_segmenter.session(image)


def test_truncated_pil_image_in_stream_is_a_frame_error(tiny_segmenter, truncated_pil):
    image, path = truncated_pil
    with tiny_segmenter.segment_stream([GOOD, image, GOOD], "a cat") as stream:
        items = list(stream)
    assert [item.ok for item in items] == [True, False, True]
    assert isinstance(items[1], FrameError) and items[1].index == 1
    assert str(path) in items[1].error and "truncated" in items[1].error


def test_unnamed_truncated_pil_image_is_named_by_position(tiny_segmenter):
    image = Image.open(io.BytesIO(truncated("PNG")))  # no filename
    with raises(ValueError, "images[1]", "PIL image (RGB, 64x64)", "truncated"):
        tiny_segmenter.segment_batch([GOOD, image], "a cat")


def test_closed_pil_image(tiny_segmenter, tmp_path):
    path = tmp_path / "closed.png"
    path.write_bytes(encode(NOISE, "PNG"))
    image = Image.open(path)
    image.close()
    with raises(ValueError, "images[0]", "closed.png"):
        tiny_segmenter.segment_batch([image], "a cat")


def test_pil_image_claiming_a_huge_size_is_not_decoded(tiny_segmenter):
    image = Image.open(io.BytesIO(png_with_size(8000, 8000)))
    with raises(ValueError, "PIL image", "above the limit"):
        tiny_segmenter.segment(image, "a cat")


@pytest.mark.parametrize("mode", ["La", "RGBa", "PA", "I", "F", "I;16B", "HSV", "LAB", "YCbCr"])
def test_pil_modes_convert(tiny_segmenter, mode):
    result = tiny_segmenter.segment(Image.new(mode, (9, 7)), "a cat")
    assert result.masks.shape == (1, 7, 9)


def test_loaded_good_pil_image_from_file_still_works(tiny_segmenter, tmp_path):
    path = tmp_path / "good.png"
    path.write_bytes(encode(NOISE, "PNG"))
    with Image.open(path) as image:
        np.testing.assert_array_equal(tiny_segmenter.segment(image, "a cat").logits,
                                      tiny_segmenter.segment(NOISE, "a cat").logits)


# ------------------------------------------------------------------------------------------
# Batch-level inputs


@pytest.mark.parametrize(
    "images, prompts, error, fragments",
    [
        (None, "a cat", TypeError, ["list of images", "NoneType"]),
        ("one.png", "a cat", TypeError, ["list of images", "one.png"]),
        (Path("one.png"), "a cat", TypeError, ["list of images", "one.png"]),
        ((g for g in [GOOD]), "a cat", TypeError, ["list of images", "generator"]),
        ({0: GOOD}, "a cat", TypeError, ["list of images", "dict"]),
        ([], "a cat", ValueError, ["images is empty"]),
        (GOOD, "a cat", TypeError, ["for one image use segment"]),
        ([GOOD, GOOD, None], "a cat", TypeError, ["images[2]", "NoneType"]),
        ([GOOD] * 3, [["a"], ["b"]], ValueError, ["2 prompt lists for 3 images"]),
        ([GOOD] * 2, [["a"], [""]], ValueError, ["prompts[1][0] is empty"]),
        ([GOOD] * 2, [["a"], []], ValueError, ["prompts[1]", "empty"]),
        ([GOOD] * 2, [["a"], ["b AND"]], ValueError, ["prompts[1][0]: ", "b AND", "column 6"]),
    ],
)
def test_bad_batches(tiny_segmenter, images, prompts, error, fragments):
    with raises(error, *fragments):
        tiny_segmenter.segment_batch(images, prompts)


def test_batch_errors_name_the_image(tiny_segmenter, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"images\[1\].*missing.png"):
        tiny_segmenter.segment_batch([GOOD, tmp_path / "missing.png"], "a cat")


def test_unsupported_backend_and_precision(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown backend 'tensorrt-fast'"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="tensorrt-fast")
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        FastSegmenter.from_pretrained(tiny_model_dir, precision="int4")
    with pytest.raises(ValueError, match="'bf16' is not available for backend 'onnxruntime'"):
        FastSegmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="invalid device"):
        FastSegmenter.from_pretrained(tiny_model_dir, device="quantum")


def test_single_array_given_to_segment_batch_is_rejected(tiny_segmenter):
    with pytest.raises(TypeError, match="for one image use segment"):
        tiny_segmenter.segment_batch(GOOD, "a cat")
    batch = np.stack([GOOD, GOOD])
    assert len(tiny_segmenter.segment_batch(batch, "a cat")) == 2


def test_bad_paths_in_a_stream_are_frame_errors(tiny_segmenter, tmp_path):
    cut = tmp_path / "cut.png"
    cut.write_bytes(truncated("PNG"))
    fifo = _fifo(tmp_path)
    with tiny_segmenter.segment_stream([GOOD, cut, fifo, tmp_path / "missing.png", GOOD], "a cat") as stream:
        items = list(stream)
    assert [item.ok for item in items] == [True, False, False, False, True]
    for item, name in zip(items[1:4], ["cut.png", "pipe.png", "missing.png"]):
        assert name in item.error

