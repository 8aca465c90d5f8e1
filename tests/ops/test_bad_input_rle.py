"""Bad RLE input: every case gets its documented exception, with a message naming the input.

`fastclipseg.ops.rle` documents ValueError for a bad value (malformed counts, counts not summing to
h*w, a negative or oversized size, a decode above ``max_pixels``) and TypeError for a wrong type.
Each case checks the type AND that the message names the offending field or value, and that no
size is trusted before it is checked (a huge size never reaches an allocation: no MemoryError).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from fastclipseg import _core
from fastclipseg.ops import rle
from fastclipseg.ops.validation import DEFAULT_MAX_PIXELS

GOOD = {"size": [4, 5], "counts": "d0"}  # a 4x5 empty mask
HUGE = 10**6  # 10^6 x 10^6 = 10^12 pixels: 931 GiB as uint8


def full(h: int, w: int) -> str:
    """Counts of an h x w mask that is all foreground (valid for that size only)."""
    return _core.rle_counts_to_string([0, h * w])


def with_(**fields) -> dict:
    return {**GOOD, **fields}


# (name, call, exception, regex the message must match: it names the field and/or the value)
CASES = [
    # --- malformed compressed counts
    ("char outside 0..o", lambda: rle.decode(with_(counts="d0p")), ValueError,
     r"counts 'd0p'.*invalid character 'p' \(byte 112\) at position 2"),
    ("space in counts", lambda: rle.area(with_(counts="d 0")), ValueError,
     r"counts 'd 0'.*invalid character ' '.*position 1"),
    ("non-ASCII str", lambda: rle.decode(with_(counts="dé")), ValueError,
     r"counts 'dé'.*non-ASCII character U\+00E9 at position 1"),
    ("lone surrogate", lambda: rle.decode(with_(counts="d\ud800")), ValueError,
     r"counts 'd\\ud800'.*non-ASCII character U\+D800 at position 1"),
    ("non-ASCII bytes", lambda: rle.decode(with_(counts=b"d\xff")), ValueError,
     r"counts b'd\\xff'.*byte 255.*position 1"),
    ("NUL byte", lambda: rle.bbox(with_(counts=b"d0\x00")), ValueError, r"counts b'd0\\x00'.*byte 0.*position 2"),
    ("truncated varint", lambda: rle.decode(with_(counts="d")), ValueError, r"counts 'd'.*truncated"),
    ("over-long varint", lambda: rle.decode(with_(counts="P" * 13 + "0")), ValueError,
     r"counts 'PPPP.*longer than 12 characters"),
    ("negative run", lambda: rle.decode(with_(counts="O")), ValueError, r"counts 'O'.*count #0.*negative run length \(-1\)"),
    ("counts short of h*w", lambda: rle.decode(with_(counts="c0")), ValueError,
     r"counts 'c0' for size 4x5.*sum to 19 but the 4x5 mask has 20"),
    ("counts past h*w", lambda: rle.decode(with_(counts="e0")), ValueError,
     r"counts 'e0' for size 4x5.*overrun.*count #0"),
    ("empty counts", lambda: rle.decode(with_(counts="")), ValueError, r"counts '' for size 4x5.*sum to 0"),
    ("long counts shortened", lambda: rle.decode(with_(counts="0" * 500 + "p")), ValueError,
     r"counts '0000.*\.\.\.' \(501 chars\).*byte 112"),
    # --- sizes
    ("negative width", lambda: rle.decode(with_(size=[4, -5])), ValueError, r"RLE width must be >= 0, got -5"),
    ("negative height (numpy)", lambda: rle.area(with_(size=np.array([-4, 5]))), ValueError,
     r"RLE height must be >= 0, got -4"),
    ("huge height, area", lambda: rle.area(with_(size=[10**30, 5])), ValueError,
     r"RLE height = 10{30} is too large"),
    ("huge size, bbox", lambda: rle.bbox(with_(size=[2**40, 2**40], counts="0")), ValueError,
     r"1099511627776x1099511627776 is too large"),
    ("float height", lambda: rle.decode(with_(size=[4.0, 5])), TypeError, r"RLE height must be an int, got float \(4\.0\)"),
    ("NaN width", lambda: rle.decode(with_(size=[4, float("nan")])),
     TypeError, r"RLE width must be an int, got float \(nan\)"),
    ("bool height", lambda: rle.decode(with_(size=[True, 5])), TypeError, r"RLE height must be an int, got bool \(True\)"),
    ("numpy bool width", lambda: rle.decode(with_(size=[4, np.True_])), TypeError, r"RLE width must be an int, got bool"),
    ("str height", lambda: rle.decode(with_(size=["4", 5])), TypeError, r"RLE height must be an int, got str \('4'\)"),
    ("None width", lambda: rle.area(with_(size=[4, None])), TypeError, r"RLE width must be an int, got NoneType \(None\)"),
    ("size of one", lambda: rle.decode(with_(size=[4])), ValueError, r"RLE 'size' must be \[height, width\], got \[4\]"),
    ("size of three", lambda: rle.decode(with_(size=[4, 5, 1])),
     ValueError, r"'size' must be \[height, width\], got \[4, 5, 1\]"),
    ("size as str", lambda: rle.decode(with_(size="45")), ValueError, r"'size' must be \[height, width\], got '45'"),
    ("size as dict", lambda: rle.decode(with_(size={"h": 4, "w": 5})),
     ValueError, r"'size' must be \[height, width\], got \{'h'"),
    # --- decode size cap: rejected from the size alone, before the counts are parsed
    ("10^6 x 10^6 with counts '0'", lambda: rle.decode({"size": [HUGE, HUGE], "counts": "0"}), ValueError,
     rf"size 1000000x1000000 = 1000000000000 pixels is above max_pixels = {DEFAULT_MAX_PIXELS}"),
    ("valid 10^6 x 10^6 above the cap", lambda: rle.decode({"size": [HUGE, HUGE], "counts": full(HUGE, HUGE)}), ValueError,
     r"1000000x1000000 = 1000000000000 pixels is above max_pixels"),
    ("cap raised, counts '0'", lambda: rle.decode({"size": [HUGE, HUGE], "counts": "0"}, max_pixels=10**12), ValueError,
     r"counts '0' for size 1000000x1000000.*sum to 0 but the 1000000x1000000 mask has 1000000000000 pixels"),
    ("cap raised, counts 10^12 - 1", lambda: rle.decode({"size": [HUGE, HUGE], "counts": [0, HUGE * HUGE - 1]},
                                                         max_pixels=10**12), ValueError, r"sum to 999999999999"),
    ("small explicit cap", lambda: rle.decode(GOOD, max_pixels=19),
     ValueError, r"size 4x5 = 20 pixels is above max_pixels = 19"),
    ("batch above the cap", lambda: rle.decode([{"size": [100, 100], "counts": full(100, 100)}] * 3, max_pixels=20_000),
     ValueError, r"3 RLEs of size 100x100 = 30000 pixels in all, above max_pixels = 20000"),
    ("batch of huge masks, bad counts", lambda: rle.decode([{"size": [10**5, 10**5], "counts": "0"}] * 3, max_pixels=10**11),
     ValueError, r"RLE #0 counts '0' for size 100000x100000.*sum to 0"),
    ("max_pixels negative", lambda: rle.decode(GOOD, max_pixels=-1), ValueError, r"max_pixels must be >= 0, got -1"),
    ("max_pixels float", lambda: rle.decode(GOOD, max_pixels=1e9),
     TypeError, r"max_pixels must be an int, got float \(1000000000\.0\)"),
    ("max_pixels bool", lambda: rle.decode(GOOD, max_pixels=True), TypeError, r"max_pixels must be an int, got bool"),
    ("max_pixels None", lambda: rle.decode(GOOD, max_pixels=None), TypeError, r"max_pixels must be an int, got NoneType"),
    # --- keys and types
    ("missing counts", lambda: rle.decode({"size": [4, 5]}), ValueError, r"missing key\(s\) \['counts'\]"),
    ("missing both", lambda: rle.area({}), ValueError, r"missing key\(s\) \['size', 'counts'\]"),
    ("not a dict", lambda: rle.decode(5), TypeError, r"expected an RLE dict or a list of RLE dicts, got int"),
    ("str instead of a dict", lambda: rle.bbox("d0"), TypeError, r"got str"),
    ("list item not a dict", lambda: rle.decode([GOOD, 3]), TypeError, r"RLE #1 must be a dict.*got int"),
    ("counts None", lambda: rle.decode(with_(counts=None)),
     TypeError, r"'counts' must be str, bytes or a list of ints, got NoneType"),
    ("counts int", lambda: rle.decode(with_(counts=20)), TypeError, r"'counts' must be .*got int"),
    ("counts bytearray", lambda: rle.decode(with_(counts=bytearray(b"d0"))), TypeError, r"'counts' must be .*got bytearray"),
    ("counts memoryview", lambda: rle.area(with_(counts=memoryview(b"d0"))), TypeError, r"'counts' must be .*got memoryview"),
    # --- uncompressed (list) counts
    ("list counts negative", lambda: rle.decode(with_(counts=[20, -1])), ValueError, r"RLE count #1 is negative \(-1\)"),
    ("list counts float", lambda: rle.decode(with_(counts=[20.0])),
     TypeError, r"RLE count #0 must be an integer, got float \(20\.0\)"),
    ("list counts bool", lambda: rle.decode(with_(counts=[False, True, 18])),
     TypeError, r"RLE count #0 must be an integer, got bool \(False\)"),
    ("list counts str", lambda: rle.decode(with_(counts=["20"])),
     TypeError, r"RLE count #0 must be an integer, got str \('20'\)"),
    ("list counts nested", lambda: rle.decode(with_(counts=[[20]])), TypeError, r"RLE count #0 must be an integer, got list"),
    ("list counts huge", lambda: rle.decode(with_(counts=[2**70])),
     ValueError, r"RLE count #0 = 1180591620717411303424 is too large"),
    ("list counts short", lambda: rle.decode(with_(counts=[5, 5])), ValueError, r"for size 4x5.*sum to 10"),
    ("numpy float counts", lambda: rle.area(with_(counts=np.array([20.0]))),
     TypeError, r"RLE count #0 must be an integer, got float64"),
    ("0-d array counts", lambda: rle.decode(with_(counts=np.array(20))),
     TypeError, r"'counts' array must be 1-D.*shape \(\)"),
    ("2-D array counts", lambda: rle.decode(with_(counts=np.array([[10, 10]]))),
     TypeError, r"'counts' array must be 1-D.*shape \(1, 2\)"),
    ("core: counts not iterable", lambda: _core.rle_counts_to_string(5),
     TypeError, r"RLE counts must be a list of run lengths, got int \(5\)"),
    # --- batches
    ("batch mixing sizes", lambda: rle.decode([GOOD, {"size": [5, 5], "counts": "i0"}]), ValueError,
     r"RLE #1 has size \[5, 5\] but RLE #0 has \[4, 5\]"),
    ("batch with a bad item", lambda: rle.decode([GOOD, with_(counts="d1")]),
     ValueError, r"RLE #1 counts 'd1' for size 4x5.*overrun"),
    ("area list with a bad item", lambda: rle.area([GOOD, with_(counts="c0")]), ValueError, r"RLE #1 counts 'c0'.*sum to 19"),
    ("empty batch", lambda: rle.decode([]), ValueError, r"empty list of RLEs"),
    # --- the native entry points check the same things themselves
    ("core: huge height", lambda: _core.rle_decode("0", 10**30, 5, 100), ValueError, r"RLE height = 10{30} is too large"),
    ("core: float width", lambda: _core.rle_area("d0", 4, 5.0), TypeError, r"RLE width must be an int, got float"),
    ("core: bool height", lambda: _core.rle_bbox("d0", True, 5), TypeError, r"RLE height must be an int, got bool"),
    ("core: above max_pixels", lambda: _core.rle_decode(full(HUGE, HUGE), HUGE, HUGE, 10**6), ValueError,
     r"size 1000000x1000000 = 1000000000000 pixels is above max_pixels = 1000000"),
    ("core: batch above max_pixels", lambda: _core.rle_decode_batch(["d0"] * 4, 4, 5, 79), ValueError,
     r"4 RLEs of size 4x5 = 80 pixels in all, above max_pixels = 79"),
    ("core: batch validated first", lambda: _core.rle_decode_batch([full(HUGE, HUGE), "0"], HUGE, HUGE, 10**13), ValueError,
     r"RLE #1 counts '0' for size 1000000x1000000.*sum to 0"),
    ("core: negative max_pixels", lambda: _core.rle_decode("d0", 4, 5, -1), ValueError, r"max_pixels must be >= 0, got -1"),
    ("core: counts list item", lambda: _core.rle_decode_batch(["d0", None], 4, 5, 100), TypeError,
     r"RLE #1 counts must be str or bytes, got NoneType"),
    ("core: packed width huge", lambda: _core.rle_encode_packed(np.zeros((2, 1), np.uint8), 10**30), ValueError,
     r"width = 10{30} is too large"),
    ("core: packed width float", lambda: _core.rle_encode_packed(np.zeros((2, 1), np.uint8), 8.0), TypeError,
     r"width must be an int, got float"),
]


@pytest.mark.parametrize("name, call, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_rle_input(name, call, error, message):
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error, f"{name}: got {type(info.value).__name__}, a subclass, not {error.__name__}"
    assert re.search(message, str(info.value)), f"{name}: message {str(info.value)!r} does not match {message!r}"


def test_max_pixels_default_is_the_image_limit():
    """The default cap is imaging.DEFAULT_MAX_PIXELS: a mask as large as the largest accepted image decodes."""
    side = int(DEFAULT_MAX_PIXELS**0.5)
    assert rle.decode({"size": [side, side], "counts": full(side, side)}).all()
    h, w = DEFAULT_MAX_PIXELS // 2 + 1, 2
    with pytest.raises(ValueError, match=f"above max_pixels = {DEFAULT_MAX_PIXELS}"):
        rle.decode({"size": [h, w], "counts": full(h, w)})
    assert rle.decode({"size": [h, w], "counts": [h * w]}, max_pixels=h * w).shape == (h, w)


def test_area_and_bbox_need_no_cap():
    """area and bbox allocate nothing from the size, so they take sizes far above max_pixels."""
    big = {"size": [HUGE, HUGE], "counts": [0, 3, HUGE * HUGE - 3]}
    assert rle.area(big) == 3
    assert rle.bbox(big).tolist() == [0, 0, 1, 3]


def test_zero_pixel_masks_decode_under_any_cap():
    assert rle.decode({"size": [0, 7], "counts": "0"}, max_pixels=0).shape == (0, 7)
    assert rle.decode([{"size": [5, 0], "counts": ""}] * 3, max_pixels=0).shape == (3, 5, 0)
