"""Output files are written whole or not at all."""

from __future__ import annotations

import pytest
from fastclipseg.streams.writers import atomic_write_bytes


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "result.json"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"new content"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_bytes(b"old")

    class Interrupted(Exception):
        pass

    def failing_replace(src, dst):
        raise Interrupted("killed between write and rename")

    monkeypatch.setattr("fastclipseg.streams.writers.os.replace", failing_replace)
    with pytest.raises(Interrupted):
        atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_very_long_file_names_get_short_distinct_stems(tmp_path):
    # A 300-character image name used to stop a whole `batch` run (its PNG name was too long).
    from fastclipseg.streams.writers import MAX_STEM_BYTES, unique_stems

    paths = [f"/a/{'x' * 300}.png", f"/b/{'x' * 300}.png", f"/c/{'y' * 299}z.png", "/d/short.png"]
    stems = unique_stems(paths)
    assert len(set(stems.values())) == 4
    assert stems["/d/short.png"] == "short"
    for stem in stems.values():
        assert len(stem.encode()) <= MAX_STEM_BYTES + 3  # + "-2" for a repeated name
        (tmp_path / f"{stem}_0_a-cat.png").write_bytes(b"")  # a name the file system takes
