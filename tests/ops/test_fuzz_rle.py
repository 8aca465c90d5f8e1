"""Fuzzing fastclipseg.ops.rle: round trips, and decode of random, mutated and oversized RLE input.

Every decode of fuzzed input must either return the correct mask or raise exactly ValueError or
TypeError: never another exception (no MemoryError, no UnicodeError, no OverflowError), never a
crash. "Correct" is judged against a pure-Python reference parser of the COCO counts format
(written here from the format, not from our C++), and against pycocotools wherever pycocotools is
defined (it has no validation: it is only shown input we accepted, within its 32-bit limits).

CI runs `fuzz_settings()` examples per test; `scripts/fuzz.sh` runs many more.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as coco
import pytest
from fastclipseg import _core
from fastclipseg.ops import rle
from fastclipseg.ops.validation import DEFAULT_MAX_PIXELS
from helpers.fuzzing import fuzz_settings
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

MAX_COUNT = _core.RLE_MAX_COUNT
ALLOWED = (ValueError, TypeError)
# Fuzzed decodes may allocate at most this much (the default cap, 50 MB, would make CI slow).
FUZZ_CAP = 1 << 20


# --------------------------------------------------------------------------- reference


def ref_counts(counts: str | bytes) -> list[int] | None:
    """The run lengths of a compressed counts string, or None if it is malformed.

    Format: 6-bit chars '0'..'o' (48..111), 5 payload bits + a continuation bit (0x20), the last
    char's bit 0x10 is the sign; counts[i] is stored as counts[i] - counts[i-2] for i > 2. A
    varint may have at most 12 chars; a run length must be in [0, RLE_MAX_COUNT].
    """
    if isinstance(counts, str):
        if not counts.isascii():
            return None
        counts = counts.encode()
    out: list[int] = []
    p = 0
    while p < len(counts):
        x = k = 0
        more = True
        while more:
            if p >= len(counts) or k >= 12 or not 48 <= counts[p] <= 111:
                return None
            c = counts[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x -= 1 << (5 * k)  # sign-extend
        if len(out) > 2:
            x += out[-2]
        if not 0 <= x <= MAX_COUNT:
            return None
        out.append(x)
    return out


def ref_decode(runs: list[int], h: int, w: int) -> np.ndarray:
    values = np.arange(len(runs)) % 2
    return np.repeat(values.astype(np.uint8), runs).reshape(w, h).T


def pycocotools_defined(counts: bytes, runs: list[int], h: int, w: int) -> bool:
    """pycocotools parses with 32-bit ints: only varints of <= 6 chars and sizes < 2^31 are safe."""
    if h * w >= 2**31 or any(r >= 2**31 for r in runs):
        return False
    longest = current = 0
    for c in counts:
        current += 1
        if not (c - 48) & 0x20:
            longest, current = max(longest, current), 0
    return longest <= 6


def check_accepted(enc: dict, out: np.ndarray, h: int, w: int, runs: list[int]) -> None:
    """A decode that succeeded: the right mask, consistent with area/bbox and pycocotools."""
    assert out.shape == (h, w) and out.dtype == np.uint8 and out.flags.f_contiguous
    want = ref_decode(runs, h, w)
    assert np.array_equal(out, want)
    assert rle.area(enc) == int(want.sum())
    canonical = rle.encode(out)
    assert rle.bbox(enc).tolist() == rle.bbox(canonical).tolist()
    counts = enc["counts"]
    raw = counts.encode() if isinstance(counts, str) else counts
    if isinstance(counts, (str, bytes)) and h and w and pycocotools_defined(raw, runs, h, w):
        ref = {"size": [h, w], "counts": raw}
        assert np.array_equal(coco.decode(ref), out)
        assert int(coco.area(ref)) == int(want.sum())
        if all(runs[1:]):
            # pycocotools' toBbox is wrong on non-canonical runs (a zero-length run after the
            # first: it reports [18, 1, 4294967279, 0] for runs [18, 0]); compare canonical ones.
            assert coco.toBbox(ref).tolist() == rle.bbox(enc).tolist()


def expect_decode(enc: dict, h: int, w: int, cap: int) -> None:
    """decode(enc) with an int size: accepted exactly when the reference accepts, else ValueError."""
    counts = enc["counts"]
    runs = ref_counts(counts) if isinstance(counts, (str, bytes)) else None
    valid = runs is not None and sum(runs) == h * w
    # RLE_MAX_COUNT bounds each side and h*w (documented): beyond it, "too large".
    too_large = max(h, w) > MAX_COUNT or h * w > MAX_COUNT
    event("decode: " + ("above max_pixels" if h * w > cap else "too large" if too_large else
                        "accepted" if valid else "invalid counts"))  # --hypothesis-show-statistics
    if h * w > cap:
        with pytest.raises(ValueError, match=f"above max_pixels = {cap}"):
            rle.decode(enc, max_pixels=cap)
    elif too_large:
        with pytest.raises(ValueError, match="too large"):
            rle.decode(enc, max_pixels=cap)
    elif not valid:
        with pytest.raises(ValueError) as info:
            rle.decode(enc, max_pixels=cap)
        assert type(info.value) is ValueError, repr(info.value)
    else:
        check_accepted(enc, rle.decode(enc, max_pixels=cap), h, w, runs)
    # area/bbox allocate nothing from the size: no cap, but the same validation.
    for fn in (rle.area, rle.bbox):
        if valid and not too_large:
            fn(enc)
        else:
            with pytest.raises(ValueError, match="too large" if too_large else None) as info:
                fn(enc)
            assert type(info.value) is ValueError, repr(info.value)


def call_allowed(fn, *args, **kwargs):
    """fn(...) or None; anything but exactly ValueError/TypeError fails the test."""
    try:
        result = fn(*args, **kwargs)
    except ALLOWED as e:
        assert type(e) in ALLOWED, f"{type(e).__name__} (a subclass) raised: {e}"
        assert str(e), "an error without a message"
        event(f"{fn.__name__}: {type(e).__name__}")
        return None
    event(f"{fn.__name__}: accepted")
    return result


# --------------------------------------------------------------------------- strategies

SIDE = st.integers(0, 48)
SHAPES = st.one_of(
    st.tuples(SIDE, SIDE),
    st.tuples(st.just(1), st.integers(0, 300)),  # 1 x N
    st.tuples(st.integers(0, 300), st.just(1)),  # N x 1
)
masks = st.one_of(
    hnp.arrays(np.bool_, SHAPES),
    hnp.arrays(np.uint8, SHAPES, elements=st.sampled_from([0, 1, 2, 255])),  # nonzero is foreground
)


@st.composite
def blobby_masks(draw) -> np.ndarray:
    """Long runs (real masks): a few rectangles, so counts need multi-char varints."""
    h, w = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    mask = np.zeros((h, w), bool)
    for _ in range(draw(st.integers(0, 4))):
        r0, c0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        mask[r0 : draw(st.integers(r0, h)), c0 : draw(st.integers(c0, w))] = True
    return mask


any_char = st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
counts_char = st.one_of(
    st.characters(min_codepoint=48, max_codepoint=111),  # the alphabet
    st.characters(min_codepoint=0, max_codepoint=127),  # any ASCII
    any_char,  # incl. surrogates and non-BMP
)


@st.composite
def mutated(draw, counts: str) -> str:
    """counts with a few random edits: replace, insert, delete, truncate, duplicate, swap."""
    s = list(counts)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "duplicate", "swap"]))
        i = draw(st.integers(0, max(0, len(s) - 1)))
        if op == "replace" and s:
            s[i] = draw(counts_char)
        elif op == "insert":
            s.insert(i, draw(counts_char))
        elif op == "delete" and s:
            del s[i]
        elif op == "truncate":
            s = s[:i]
        elif op == "duplicate" and s:
            j = draw(st.integers(i, len(s)))
            s[j:j] = s[i:j]
        elif op == "swap" and len(s) > 1:
            j = draw(st.integers(0, len(s) - 1))
            s[i], s[j] = s[j], s[i]
    return "".join(s)


# A size field as a decoder might find it in a JSON file or a request.
size_value = st.one_of(
    st.integers(-3, 60),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 10**6, 2**31, 2**32, 2**59 - 1, 2**59, 2**63, 2**64, 10**30]),
    st.integers(0, 60).map(np.int64),
    st.sampled_from([np.uint64(2**64 - 1), np.int32(-1), np.uint8(5)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from([np.True_, np.float32(4.0), None, "4", b"4", [4], (), np.array(4), np.array([4])]),
)
size_field = st.one_of(
    st.lists(size_value, min_size=2, max_size=2),
    st.lists(size_value, min_size=0, max_size=4),
    st.tuples(size_value, size_value),
    st.sampled_from([None, "45", b"45", 45, {"h": 4}, np.array([4, 5]), np.array([[4, 5]]), np.array([4.0, 5.0])]),
)
counts_field = st.one_of(
    st.text(alphabet=counts_char, max_size=40),
    st.binary(max_size=40),
    st.lists(st.integers(-5, 2**65), max_size=8),
    st.lists(st.one_of(st.integers(0, 40), st.floats(), st.booleans(), st.none(), st.text(max_size=2)), max_size=5),
    st.sampled_from([None, 20, 2.5, bytearray(b"d0"), memoryview(b"d0"), {"a": 1}, np.array([20]), np.array([20.0]),
                     np.array([[10, 10]]), np.array(20), np.array([True, False]), np.array([20], dtype=np.uint64)]),
)
max_pixels_value = st.one_of(
    st.integers(0, FUZZ_CAP),
    st.sampled_from([-1, 2**64, True, 1.5, None, "100", np.int64(400)]),
)


# --------------------------------------------------------------------------- round trips


@fuzz_settings()
@given(mask=masks, order=st.sampled_from(["C", "F", "strided", "reversed"]))
def test_round_trip_matches_pycocotools(mask, order):
    if order == "F":
        mask = np.asfortranarray(mask)
    elif order == "strided":
        big = np.zeros((mask.shape[0] * 2, mask.shape[1] * 3), dtype=mask.dtype)
        big[::2, ::3] = mask
        mask = big[::2, ::3]
    elif order == "reversed":
        mask = np.ascontiguousarray(mask[::-1, ::-1])[::-1, ::-1]
    enc = rle.encode(mask)
    h, w = mask.shape
    assert enc["size"] == [h, w]
    binary = (mask != 0).astype(np.uint8)
    assert enc["counts"] == coco.encode(np.asfortranarray(binary))["counts"].decode()
    out = rle.decode(enc)
    assert out.shape == (h, w) and out.flags.f_contiguous and np.array_equal(out, binary)
    assert np.array_equal(rle.decode({"size": [h, w], "counts": enc["counts"].encode()}), binary)
    runs = _core.rle_string_to_counts(enc["counts"])
    assert runs == ref_counts(enc["counts"])
    assert np.array_equal(rle.decode({"size": [h, w], "counts": runs}), binary)
    assert rle.area(enc) == int(binary.sum())
    if h and w:
        ref = coco.encode(np.asfortranarray(binary))
        assert rle.bbox(enc).tolist() == coco.toBbox(ref).tolist()
        assert np.array_equal(coco.decode(ref), out)
    # Bit-packed input gives the same RLE.
    assert rle.encode_packed(np.packbits(binary, axis=-1, bitorder="little"), w) == enc


@fuzz_settings(0.5)
@given(mask=blobby_masks())
def test_round_trip_long_runs(mask):
    enc = rle.encode(mask)
    ref = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert enc["counts"] == ref["counts"].decode()
    assert np.array_equal(rle.decode(enc), mask)
    assert rle.bbox(enc).tolist() == coco.toBbox(ref).tolist()


@fuzz_settings(0.5)
@given(k=st.integers(0, 4), h=st.integers(0, 20), w=st.integers(0, 20), data=st.data())
def test_batch_round_trip(k, h, w, data):
    batch = data.draw(hnp.arrays(np.bool_, (k, h, w)))
    encs = rle.encode(batch)
    assert len(encs) == k and all(e == rle.encode(m) for e, m in zip(encs, batch))
    if k:
        out = rle.decode(encs)
        assert out.shape == (k, h, w) and np.array_equal(out, batch)
        assert rle.area(encs).tolist() == batch.reshape(k, -1).sum(axis=1).tolist()


@fuzz_settings()
@given(runs=st.lists(st.integers(0, MAX_COUNT) | st.integers(0, 100), max_size=30))
def test_counts_string_round_trip(runs):
    s = _core.rle_counts_to_string(runs)
    assert _core.rle_string_to_counts(s) == runs == ref_counts(s)
    if runs and all(r < 2**28 for r in runs) and 0 < sum(runs) < 2**31:
        # pycocotools compresses an uncompressed RLE the same way. Only below 2^28: its
        # rleToString allocates 6 chars per count, and a count (or delta) needing 7 overruns its
        # heap buffer (glibc: "munmap_chunk(): invalid pointer"), found by the long fuzz run.
        ref = coco.frPyObjects({"size": [sum(runs), 1], "counts": runs}, sum(runs), 1)
        assert s == ref["counts"].decode()


# --------------------------------------------------------------------------- fuzzed decode


@fuzz_settings()
@given(data=st.data(), mask=masks | blobby_masks(), as_bytes=st.booleans())
def test_mutated_counts(data, mask, as_bytes):
    """A real encoding with a few random edits: the right mask or ValueError, as the reference says."""
    h, w = mask.shape
    counts = data.draw(mutated(rle.encode(mask)["counts"]))
    if as_bytes:
        counts = counts.encode("utf-8", "surrogatepass")
    expect_decode({"size": [h, w], "counts": counts}, h, w, FUZZ_CAP)


@fuzz_settings()
@given(counts=st.text(alphabet=counts_char, max_size=40) | st.binary(max_size=40),
       h=st.integers(0, 64), w=st.integers(0, 64), cap=st.just(FUZZ_CAP) | st.integers(0, 4096))
def test_random_counts(counts, h, w, cap):
    expect_decode({"size": [h, w], "counts": counts}, h, w, cap)


@fuzz_settings()
@given(h=st.integers(0, 2**64) | st.sampled_from([10**6, 2**20, 2**32]),
       w=st.integers(0, 2**64) | st.sampled_from([10**6, 2**21, 1]),
       kind=st.sampled_from(["zero", "full", "almost", "random"]), data=st.data(),
       cap=st.sampled_from([FUZZ_CAP, 0, 1, 10**12, 2**64]))
def test_huge_sizes_never_allocate(h, w, kind, data, cap):
    """Huge sizes with short counts (the 931 GiB case): refused before any allocation."""
    total = h * w
    if kind == "zero":
        counts = "0"
    elif kind == "full" and total <= MAX_COUNT:
        counts = _core.rle_counts_to_string([0, total])
    elif kind == "almost" and 0 < total <= MAX_COUNT:
        counts = _core.rle_counts_to_string([1, total - 2]) if total > 1 else "1"
    else:
        counts = data.draw(st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=111), max_size=24))
    enc = {"size": [h, w], "counts": counts}
    runs = ref_counts(counts)
    if FUZZ_CAP < total <= min(cap, MAX_COUNT) and runs is not None and sum(runs) == total:
        # Valid and under the cap: a decode would really allocate `total` bytes. Check the rest.
        assert rle.area(enc) == sum(runs[1::2])
        return
    expect_decode(enc, h, w, cap)


@fuzz_settings()
@given(size=size_field, counts=counts_field, cap=max_pixels_value)
def test_random_fields(size, counts, cap):
    """Any size, counts and max_pixels objects: a correct mask or exactly ValueError/TypeError."""
    enc = {"size": size, "counts": counts}
    out = call_allowed(rle.decode, enc, max_pixels=cap)
    for fn in (rle.area, rle.bbox):
        call_allowed(fn, enc)
        call_allowed(fn, [enc, enc])
    call_allowed(rle.decode, [enc, {"size": [2, 2], "counts": "04"}], max_pixels=cap)
    if out is None:
        return
    # Accepted: the fields were a real size, a real cap and real counts.
    h, w = (int(v) for v in size)
    assert out.shape == (h, w) and out.size <= int(cap)
    runs = ref_counts(counts) if isinstance(counts, (str, bytes)) else [int(c) for c in counts]
    assert sum(runs) == h * w
    check_accepted(enc, out, h, w, runs)


@fuzz_settings(0.5)
@given(items=st.lists(st.one_of(
    masks.map(lambda m: rle.encode(m)),
    st.tuples(masks, st.data()).map(lambda md: {"size": list(md[0].shape),
                                                "counts": md[1].draw(mutated(rle.encode(md[0])["counts"]))}),
    st.fixed_dictionaries({"size": size_field, "counts": counts_field}),
    st.sampled_from([None, "d0", 5, {}, {"size": [4, 5]}]),
), max_size=4), cap=st.integers(0, FUZZ_CAP))
def test_random_batches(items, cap):
    """Lists of RLEs: mixed sizes, bad items, bad types. All-valid same-size lists must decode."""
    out = call_allowed(rle.decode, items, max_pixels=cap)
    call_allowed(rle.area, items)
    call_allowed(rle.bbox, items)
    if out is None:
        return
    assert out.shape[0] == len(items) and out.size <= cap
    for item, mask in zip(items, out):
        assert np.array_equal(rle.decode(item, max_pixels=cap), mask)


@fuzz_settings()
@given(counts=st.one_of(st.text(alphabet=counts_char, max_size=40), st.binary(max_size=40), st.none(), st.integers()))
def test_core_string_to_counts(counts):
    runs = call_allowed(_core.rle_string_to_counts, counts)
    if isinstance(counts, (str, bytes)):
        assert runs == ref_counts(counts)
    else:
        assert runs is None


def test_default_cap_is_the_image_limit():
    assert rle.decode.__kwdefaults__["max_pixels"] == DEFAULT_MAX_PIXELS
