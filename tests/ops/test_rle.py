"""fastclipseg.ops.rle (and the fastclipseg._core kernels under it) against pycocotools."""

from __future__ import annotations

import threading

import numpy as np
import pycocotools.mask as coco
import pytest
from fastclipseg import _core
from fastclipseg.ops import rle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

# pycocotools.mask.decode trips a NumPy 2 DeprecationWarning inside pycocotools itself.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


def coco_rle(mask: np.ndarray) -> dict:
    """pycocotools' RLE of a 2-D mask (it needs Fortran-ordered uint8)."""
    return coco.encode(np.asfortranarray(mask.astype(np.uint8)))


def random_mask(rng: np.random.Generator, shape: tuple[int, ...], density: float, blobby: bool) -> np.ndarray:
    if not blobby:
        return rng.random(shape) < density
    # Few large shapes, like real segmentation masks: a low-res noise field, upsampled.
    small = rng.random(tuple(max(1, s // 8) for s in shape)) < density
    for axis, s in enumerate(shape):
        small = np.repeat(small, -(-s // small.shape[axis]), axis=axis)
    return small[tuple(slice(0, s) for s in shape)]


SHAPES = [(1, 1), (1, 17), (17, 1), (2, 3), (7, 5), (8, 8), (13, 11), (33, 65), (64, 48), (100, 257), (480, 640)]


# --------------------------------------------------------------------------- encode


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.02, 0.5, 0.98])
@pytest.mark.parametrize("blobby", [False, True])
def test_encode_matches_pycocotools(shape, density, blobby):
    rng = np.random.default_rng(hash((shape, density, blobby)) % 2**32)
    mask = random_mask(rng, shape, density, blobby)
    ours = rle.encode(mask)
    ref = coco_rle(mask)
    assert ours == {"size": list(shape), "counts": ref["counts"].decode("ascii")}
    assert isinstance(ours["counts"], str)


def test_encode_known_string():
    mask = np.zeros((7, 5), dtype=bool)
    mask[2:5, 1:3] = True
    mask[6, 4] = mask[0, 0] = True
    assert rle.encode(mask) == {"size": [7, 5], "counts": "0182L0;N"}


def test_encode_large_counts_and_negative_deltas():
    mask = np.zeros((2000, 3000), dtype=np.uint8)
    mask[-1, -1] = 1
    assert rle.encode(mask)["counts"] == coco_rle(mask)["counts"].decode() == "o[Sg51"
    mask[-1, -1] = 0
    mask[1000, 1] = mask[5, 2000] = mask[3, 2500] = 1
    assert rle.encode(mask)["counts"] == coco_rle(mask)["counts"].decode()


@pytest.mark.parametrize("shape", [(4, 5), (1, 9), (9, 1), (1, 1)])
def test_empty_and_full(shape):
    for mask in (np.zeros(shape, bool), np.ones(shape, bool)):
        assert rle.encode(mask)["counts"] == coco_rle(mask)["counts"].decode()
    h, w = shape
    assert rle.encode(np.zeros(shape, bool))["counts"] == _core.rle_counts_to_string([h * w])
    assert rle.encode(np.ones(shape, bool))["counts"] == _core.rle_counts_to_string([0, h * w])


@pytest.mark.parametrize("r,c", [(0, 0), (0, 8), (5, 0), (5, 8), (2, 3)])
def test_single_pixel(r, c):
    mask = np.zeros((6, 9), bool)
    mask[r, c] = True
    enc = rle.encode(mask)
    assert enc["counts"] == coco_rle(mask)["counts"].decode()
    assert rle.area(enc) == 1
    assert rle.bbox(enc).tolist() == [c, r, 1, 1]


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
def test_zero_size_masks(shape):
    # Decided: a 0-pixel mask is valid and encodes as counts "0", exactly like pycocotools.
    mask = np.zeros(shape, bool)
    enc = rle.encode(mask)
    assert enc == {"size": list(shape), "counts": "0"}
    assert enc["counts"] == coco_rle(mask)["counts"].decode()
    out = rle.decode(enc)
    assert out.shape == shape and out.dtype == np.uint8
    assert rle.area(enc) == 0
    assert rle.bbox(enc).tolist() == [0, 0, 0, 0]
    assert rle.decode({"size": list(shape), "counts": ""}).shape == shape
    assert rle.encode(np.zeros((3, *shape), bool)) == [{"size": list(shape), "counts": "0"}] * 3


def test_layouts_are_read_in_place():
    rng = np.random.default_rng(7)
    base = random_mask(rng, (90, 70), 0.5, blobby=True)
    base[::7, ::5] ^= True  # some isolated pixels too
    big = rng.random((200, 160)) < 0.5
    big[10:190:2, 3:143:2] = base
    views = {
        "C": base,
        "F": np.asfortranarray(base),
        "strided": big[10:190:2, 3:143:2],
        "flipped": np.ascontiguousarray(base[::-1, ::-1])[::-1, ::-1],
        "up-down": np.ascontiguousarray(base[::-1])[::-1],
        "left-right": np.ascontiguousarray(base[:, ::-1])[:, ::-1],
        "transposed": np.ascontiguousarray(base.T).T,
        "padded rows": np.pad(base, ((0, 0), (0, 13)))[:, :70],
        "channel of HWC": np.ascontiguousarray(np.stack([~base, base, ~base], axis=-1))[:, :, 1],
        "uint8": base.astype(np.uint8),
        "uint8 F": np.asfortranarray(base.astype(np.uint8)),
        "uint8 nonzero values": base.astype(np.uint8) * np.uint8(200) + base.astype(np.uint8) * np.uint8(3),
    }
    want = coco_rle(base)["counts"].decode()
    for name, view in views.items():
        assert np.array_equal(view != 0, base), name
        assert rle.encode(view)["counts"] == want, name


def test_broadcast_views():
    row = np.array([0, 1, 1, 0, 1], dtype=bool)
    for view in (np.broadcast_to(row, (4, 5)), np.broadcast_to(row[:4, None], (4, 5)), np.broadcast_to(np.True_, (3, 3))):
        assert rle.encode(view)["counts"] == coco_rle(np.array(view))["counts"].decode()


def test_batch_encode():
    rng = np.random.default_rng(3)
    masks = np.stack([random_mask(rng, (37, 53), d, b) for d in (0.1, 0.5, 0.9) for b in (False, True)])
    ours = rle.encode(masks)
    assert isinstance(ours, list) and len(ours) == len(masks)
    ref = coco.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    assert [o["counts"] for o in ours] == [r["counts"].decode() for r in ref]
    assert all(o["size"] == [37, 53] for o in ours)
    # Non-contiguous batches: every other mask, strided pixels, K x H x W view of an H x W x K array.
    assert rle.encode(masks[::2]) == ours[::2]
    assert rle.encode(masks[:, ::2, 1::3]) == [rle.encode(m) for m in masks[:, ::2, 1::3]]
    hwk = np.ascontiguousarray(masks.transpose(1, 2, 0))
    assert rle.encode(hwk.transpose(2, 0, 1)) == ours
    assert rle.encode(np.zeros((0, 4, 5), bool)) == []
    # Each dict owns its size list.
    ours[0]["size"].append(1)
    assert ours[1]["size"] == [37, 53]


def test_encode_accepts_array_likes():
    assert rle.encode([[True, False], [False, True]]) == rle.encode(np.eye(2, dtype=bool))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int8, np.uint16, np.int32])
def test_encode_rejects_dtypes(dtype):
    with pytest.raises(TypeError, match=np.dtype(dtype).name):
        rle.encode(np.zeros((3, 3), dtype=dtype))


@pytest.mark.parametrize("shape", [(), (5,), (2, 2, 2, 2)])
def test_encode_rejects_ndim(shape):
    with pytest.raises(ValueError, match=f"{len(shape)}-D"):
        rle.encode(np.zeros(shape, dtype=bool))


# --------------------------------------------------------------------------- decode


@pytest.mark.parametrize("shape", SHAPES)
def test_decode_round_trip_and_pycocotools_strings(shape):
    rng = np.random.default_rng(sum(shape))
    for blobby in (False, True):
        mask = random_mask(rng, shape, 0.4, blobby)
        ref = coco_rle(mask)
        for enc in (rle.encode(mask), ref, {"size": ref["size"], "counts": ref["counts"].decode()}):
            out = rle.decode(enc)
            assert out.dtype == np.uint8 and out.shape == shape
            assert out.flags.f_contiguous
            assert np.array_equal(out, mask.astype(np.uint8))
            assert np.array_equal(out, coco.decode(ref))


def test_decode_batch():
    rng = np.random.default_rng(5)
    masks = rng.random((4, 19, 23)) < 0.3
    out = rle.decode(rle.encode(masks))
    assert out.shape == (4, 19, 23) and out.dtype == np.uint8
    assert np.array_equal(out, masks)
    assert all(out[k].flags.f_contiguous for k in range(4))
    with pytest.raises(ValueError, match="RLE #1 has size"):
        rle.decode([rle.encode(masks[0]), rle.encode(masks[0][:5])])
    with pytest.raises(ValueError, match="RLE #2"):
        rle.decode([rle.encode(m) for m in masks[:2]] + [{"size": [19, 23], "counts": "0"}])
    with pytest.raises(ValueError, match="empty list"):
        rle.decode([])


def test_decode_uncompressed_counts():
    rng = np.random.default_rng(11)
    mask = random_mask(rng, (30, 20), 0.5, blobby=True)
    counts = _core.rle_string_to_counts(rle.encode(mask)["counts"])
    assert sum(counts) == mask.size
    assert np.array_equal(rle.decode({"size": [30, 20], "counts": counts}), mask)
    assert np.array_equal(rle.decode({"size": [30, 20], "counts": np.array(counts)}), mask)
    # pycocotools compresses the same uncompressed RLE to the same string.
    ref = coco.frPyObjects({"size": [30, 20], "counts": counts}, 30, 20)
    assert _core.rle_counts_to_string(counts) == ref["counts"].decode()
    assert rle.area({"size": [30, 20], "counts": counts}) == int(mask.sum())


def test_counts_string_round_trip():
    counts = [0, 5, 3, 0, 1_000_000, 2, 1, 31, 32, 16, 15, _core.RLE_MAX_COUNT]
    assert _core.rle_string_to_counts(_core.rle_counts_to_string(counts)) == counts
    assert _core.rle_string_to_counts(b"0182L0;N") == [0, 1, 8, 3, 4, 3, 15, 1]
    with pytest.raises(ValueError, match="negative"):
        _core.rle_counts_to_string([1, -2])
    with pytest.raises(TypeError, match="float"):
        _core.rle_counts_to_string([1, 2.0])
    with pytest.raises(ValueError, match="exceeds"):
        _core.rle_counts_to_string([_core.RLE_MAX_COUNT + 1])
    with pytest.raises(ValueError, match="too large"):
        _core.rle_counts_to_string([2**70])


MALFORMED = [
    ("d01", "overrun"),  # 20 + 1 > 20
    ("d", "truncated"),  # continuation bit on the last char
    ("c0", "sum to 19"),  # too few pixels
    ("e0", "overrun"),  # too many pixels
    ("", "sum to 0"),
    ("d0 ", "invalid character ' '"),
    ("d0p", "invalid character 'p'"),
    ("/d0", "position 0"),
    ("d0\x7f", "byte 127"),
    ("dé", r"non-ASCII character U\+00E9 at position 1"),
    ("d0\x00", "byte 0"),
    ("PPPPPPPPPPPPP0", "longer than 12"),
    ("PPPPPPPPPPPP0", "longer than 12"),  # 13 chars: one past the limit
    ("O", "negative"),  # first count -1
    ("111K", "negative"),  # delta takes count #3 below zero
]


@pytest.mark.parametrize("counts,message", MALFORMED)
def test_malformed_strings_rejected(counts, message):
    bad = {"size": [4, 5], "counts": counts}
    for fn in (rle.decode, rle.area, rle.bbox):
        with pytest.raises(ValueError, match=message):
            fn(bad)
    if counts.isascii():
        with pytest.raises(ValueError, match=message):
            rle.decode({"size": [4, 5], "counts": counts.encode()})
    with pytest.raises(ValueError, match=f"RLE #1 counts .*{message}"):
        rle.area([{"size": [4, 5], "counts": "d0"}, bad])


def test_wrong_size_rejected():
    enc = rle.encode(np.ones((4, 5), bool))
    for size in ([5, 4], [4, 6], [3, 5], [20, 1]):
        if size[0] * size[1] == 20:
            assert rle.decode({"size": size, "counts": enc["counts"]}).all()  # same pixel count: valid
        else:
            with pytest.raises(ValueError, match="sum to 20|overrun"):
                rle.decode({"size": size, "counts": enc["counts"]})


@pytest.mark.parametrize(
    "bad,exc,message",
    [
        ("d0", TypeError, "dict"),
        (5, TypeError, "int"),
        ({"counts": "d0"}, ValueError, r"missing key\(s\) \['size'\]"),
        ({"size": [4, 5]}, ValueError, r"missing key\(s\) \['counts'\]"),
        ({"size": [4], "counts": "d0"}, ValueError, "'size' must be"),
        ({"size": "45", "counts": "d0"}, ValueError, "'size' must be"),
        ({"size": [4, -5], "counts": "d0"}, ValueError, "width must be >= 0"),
        ({"size": [4.0, 5], "counts": "d0"}, TypeError, "height must be an int"),
        ({"size": [True, 5], "counts": "d0"}, TypeError, "height must be an int"),
        ({"size": [4, 5], "counts": 20}, TypeError, "'counts' must be"),
        ({"size": [4, 5], "counts": None}, TypeError, "'counts' must be"),
        ({"size": [4, 5], "counts": [20, -1]}, ValueError, "negative"),
    ],
)
def test_bad_rle_dicts(bad, exc, message):
    for fn in (rle.decode, rle.area, rle.bbox):
        with pytest.raises(exc, match=message):
            fn(bad)


def test_core_rejects_bad_arguments():
    with pytest.raises(ValueError, match="height must be >= 0"):
        _core.rle_decode("0", -1, 5, 100)
    with pytest.raises(TypeError, match="str or bytes"):
        _core.rle_decode(123, 4, 5, 100)
    with pytest.raises(ValueError, match="too large"):
        _core.rle_decode("0", 2**40, 2**40, 2**64)
    with pytest.raises(ValueError, match="above max_pixels"):
        _core.rle_decode("0", 2**20, 2**20, 2**39)
    with pytest.raises(TypeError, match="str or bytes"):
        _core.rle_decode_batch(["d0", None], 4, 5, 100)
    with pytest.raises(TypeError):  # max_pixels is required: the kernels have no cap of their own
        _core.rle_decode("d0", 4, 5)
    with pytest.raises(TypeError, match="float64"):
        _core.rle_encode(np.zeros((2, 2)))


# --------------------------------------------------------------------------- area / bbox


@pytest.mark.parametrize("shape", SHAPES)
def test_area_bbox_match_pycocotools(shape):
    rng = np.random.default_rng(sum(shape) + 1)
    masks = [random_mask(rng, shape, d, b) for d in (0.01, 0.3, 0.9) for b in (False, True)]
    masks += [np.zeros(shape, bool), np.ones(shape, bool)]
    ours = [rle.encode(m) for m in masks]
    refs = [coco_rle(m) for m in masks]
    for o, r, m in zip(ours, refs, masks):
        assert rle.area(o) == int(coco.area(r)) == int(m.sum())
        assert isinstance(rle.area(o), int)
        box = rle.bbox(o)
        assert box.dtype == np.float64 and box.shape == (4,)
        assert box.tolist() == coco.toBbox(r).tolist()
    assert rle.area(ours).tolist() == coco.area(refs).tolist()
    assert rle.bbox(ours).tolist() == coco.toBbox(refs).tolist()
    assert rle.bbox(ours).shape == (len(ours), 4)


def test_bbox_of_run_wrapping_columns():
    mask = np.zeros((5, 4), bool)
    mask[3:, 1] = True
    mask[:2, 2] = True  # one run from the bottom of column 1 into the top of column 2
    enc = rle.encode(mask)
    assert rle.bbox(enc).tolist() == [1, 0, 2, 5] == coco.toBbox(coco_rle(mask)).tolist()


def test_area_bbox_of_empty_list():
    assert rle.area([]).shape == (0,)
    assert rle.bbox([]).shape == (0, 4)


# --------------------------------------------------------------------------- packed masks


def pack(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.astype(bool), axis=-1, bitorder="little")


def dirty_padding(bits: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """Random garbage in the unused high bits of each row's last byte."""
    out = bits.copy()
    if width % 8 and out.size:
        junk = rng.integers(0, 256, size=out[..., -1].shape, dtype=np.uint8)
        out[..., -1] |= junk & np.uint8((0xFF << (width % 8)) & 0xFF)
    return out


def check_packed(masks: np.ndarray, bits: np.ndarray | None = None) -> None:
    """encode_packed / packed_area_bbox of a (K, H, W) batch against encode and pycocotools."""
    k, h, w = masks.shape
    bits = pack(masks) if bits is None else bits
    got = rle.encode_packed(bits, w)
    assert got == rle.encode(masks)
    areas, boxes = rle.packed_area_bbox(bits, w)
    assert areas.dtype == np.int64 and areas.shape == (k,)
    assert boxes.dtype == np.float64 and boxes.shape == (k, 4)
    for i in range(k):
        ref = coco_rle(masks[i])
        assert got[i] == {"size": [h, w], "counts": ref["counts"].decode("ascii")}
        assert areas[i] == coco.area(ref) == np.count_nonzero(masks[i])
        assert boxes[i].tolist() == coco.toBbox(ref).tolist()


PACKED_SHAPES = [(1, 1), (1, 7), (1, 8), (1, 9), (1, 200), (7, 1), (3, 5), (8, 8), (13, 11), (5, 63), (5, 64),
                 (5, 65), (33, 129), (64, 48), (100, 257), (480, 640)]


@pytest.mark.parametrize("shape", PACKED_SHAPES)
@pytest.mark.parametrize("density", [0.02, 0.5, 0.98])
@pytest.mark.parametrize("blobby", [False, True])
def test_encode_packed_matches_encode_and_pycocotools(shape, density, blobby):
    rng = np.random.default_rng(hash((shape, density, blobby, "packed")) % 2**32)
    masks = random_mask(rng, (3, *shape), density, blobby)
    check_packed(masks)
    # Garbage in the padding bits changes nothing.
    check_packed(masks, dirty_padding(pack(masks), shape[1], rng))


@pytest.mark.parametrize("shape", [(1, 1), (1, 13), (9, 1), (4, 5), (6, 16), (7, 70)])
def test_encode_packed_empty_full_and_single_pixels(shape):
    h, w = shape
    masks = [np.zeros(shape, bool), np.ones(shape, bool)]
    for r, c in {(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2)}:
        m = np.zeros(shape, bool)
        m[r, c] = True
        masks += [m, ~m]
    check_packed(np.stack(masks))
    assert rle.encode_packed(pack(np.zeros((1, *shape))), w)[0]["counts"] == _core.rle_counts_to_string([h * w])
    assert rle.encode_packed(pack(np.ones((1, *shape))), w)[0]["counts"] == _core.rle_counts_to_string([0, h * w])


def test_encode_packed_all_padding_set():
    # Every padding bit set, mask itself empty: still the empty mask.
    for w in (1, 3, 7, 9, 15, 65):
        bits = np.full((2, 4, (w + 7) // 8), 0, np.uint8)
        bits[..., -1] = np.uint8((0xFF << (w % 8)) & 0xFF) if w % 8 else 0
        assert rle.encode_packed(bits, w) == rle.encode(np.zeros((2, 4, w), bool))
        areas, boxes = rle.packed_area_bbox(bits, w)
        assert areas.tolist() == [0, 0] and not boxes.any()


def test_encode_packed_2d_and_zero_sizes():
    rng = np.random.default_rng(4)
    m = rng.random((37, 21)) < 0.4
    one = rle.encode_packed(pack(m), 21)
    assert one == rle.encode(m)
    area, box = rle.packed_area_bbox(pack(m), 21)
    assert area == int(m.sum()) and isinstance(area, int)
    assert box.tolist() == rle.bbox(one).tolist()
    # K = 0, H = 0 and W = 0 (packbits gives a last dimension of 0).
    assert rle.encode_packed(np.zeros((0, 5, 2), np.uint8), 13) == []
    assert rle.packed_area_bbox(np.zeros((0, 5, 2), np.uint8), 13)[1].shape == (0, 4)
    for shape in [(3, 0, 9), (3, 4, 0), (2, 0, 0)]:
        masks = np.zeros(shape, bool)
        assert rle.encode_packed(pack(masks), shape[2]) == rle.encode(masks)
        assert all(r["counts"] == "0" for r in rle.encode_packed(pack(masks), shape[2]))


def test_encode_packed_layouts_and_threads():
    rng = np.random.default_rng(5)
    masks = random_mask(rng, (9, 120, 77), 0.5, True)
    bits = pack(masks)
    want = rle.encode(masks)
    # Non-contiguous views are accepted (copied to C order at the boundary).
    assert rle.encode_packed(np.asfortranarray(bits), 77) == want
    padded = np.zeros((9, 120, 20), np.uint8)
    padded[..., :10] = bits
    assert rle.encode_packed(padded[..., :10], 77) == want
    assert rle.encode_packed(bits[::-1], 77) == want[::-1]
    assert rle.encode_packed(memoryview(bits), 77) == want  # buffers go through np.asarray
    for threads in (None, 1, 2, 3, 64):
        assert rle.encode_packed(bits, 77, threads=threads) == want
    big = random_mask(rng, (6, 700, 500), 0.5, True)  # large enough to use several threads
    assert rle.encode_packed(pack(big), 500, threads=4) == rle.encode(big)


def test_encode_packed_rejects_bad_input():
    bits = pack(np.zeros((2, 4, 13), bool))  # last dimension 2
    for bad in (bits.astype(np.int8), bits.astype(np.uint16), bits.astype(bool), bits.astype(np.float32)):
        with pytest.raises(TypeError, match="uint8"):
            rle.encode_packed(bad, 13)
    with pytest.raises(TypeError, match="uint8"):
        _core.rle_encode_packed(bits.astype(np.int16), 13)
    for shape in [(16,), (1, 2, 3, 2), ()]:
        with pytest.raises(ValueError, match="2-D .* or 3-D"):
            rle.encode_packed(np.zeros(shape, np.uint8), 13)
        with pytest.raises(ValueError, match="2-D .* or 3-D"):
            _core.rle_encode_packed(np.zeros(shape, np.uint8), 13)
    for width in (8, 17, 100, 0):
        with pytest.raises(ValueError, match="ceil"):
            rle.encode_packed(bits, width)
        with pytest.raises(ValueError, match="ceil"):
            _core.rle_encode_packed(bits, width)
    for fn in (rle.encode_packed, rle.packed_area_bbox):
        with pytest.raises(ValueError, match=">= 0"):
            fn(bits, -1)
        with pytest.raises(TypeError, match="width must be an int"):
            fn(bits, 13.0)
        with pytest.raises(TypeError, match="width must be an int"):
            fn(bits, True)
        with pytest.raises(ValueError, match="threads"):
            fn(bits, 13, threads=0)
    with pytest.raises(ValueError, match="width must be >= 0"):
        _core.rle_encode_packed(bits, -5)
    with pytest.raises(ValueError, match="threads"):
        _core.rle_encode_packed(bits, 13, -1)
    # H * W past the maximum count is rejected before anything is read.
    with pytest.raises(ValueError, match="too large"):
        _core.rle_encode_packed(np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (1, 2**31, 2**28), (0, 0, 0)), 2**31)


packed_strategy = hnp.arrays(
    dtype=np.bool_,
    shape=hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=40),
    elements=st.booleans(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masks=packed_strategy, seed=st.integers(0, 2**32 - 1))
def test_property_encode_packed(masks, seed):
    bits = dirty_padding(pack(masks), masks.shape[2], np.random.default_rng(seed))
    got = rle.encode_packed(bits, masks.shape[2])
    assert got == rle.encode(masks)
    areas, boxes = rle.packed_area_bbox(bits, masks.shape[2])
    for i, r in enumerate(got):
        ref = coco_rle(masks[i])
        assert r["counts"] == ref["counts"].decode()
        assert areas[i] == coco.area(ref)
        assert boxes[i].tolist() == coco.toBbox(ref).tolist()


# --------------------------------------------------------------------------- threads


def test_threads_share_kernels():
    # The kernels release the GIL; concurrent calls must still give the same answers.
    rng = np.random.default_rng(9)
    masks = rng.random((6, 300, 200)) < 0.5
    want = rle.encode(masks)
    results: list = [None] * 4

    def work(i: int) -> None:
        enc = rle.encode(masks)
        results[i] = (enc, rle.decode(enc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for enc, dec in results:
        assert enc == want
        assert np.array_equal(dec, masks)


# --------------------------------------------------------------------------- properties
# (Round trips against pycocotools over random masks: tests/ops/test_fuzz_rle.py.)


@settings(max_examples=300, deadline=None)
@given(
    counts=st.text(alphabet=st.characters(min_codepoint=40, max_codepoint=120), max_size=30),
    h=st.integers(0, 12),
    w=st.integers(0, 12),
)
def test_property_arbitrary_strings_never_crash(counts, h, w):
    enc = {"size": [h, w], "counts": counts}
    try:
        out = rle.decode(enc)
    except ValueError:
        for fn in (rle.area, rle.bbox):
            with pytest.raises(ValueError):
                fn(enc)
        return
    # Accepted strings are self-consistent, even non-canonical ones.
    assert out.shape == (h, w)
    assert rle.area(enc) == int(out.sum())
    canonical = rle.encode(out)
    assert rle.bbox(enc).tolist() == rle.bbox(canonical).tolist()
    assert np.array_equal(rle.decode(canonical), out)
