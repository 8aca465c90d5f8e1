"""Resumable output folders of `fastclipseg video` and `fastclipseg batch`.

A run folder holds:
- `run.json`: the settings the run was started with; `--resume` refuses other settings, since
  the records would no longer be those of one run;
- `masks.jsonl`: one line per segmented frame or image, in stream order;
- `errors.jsonl`: one line per item that failed, with its reason;
- `smoothing.npz` (video with smoothing): the moving average after the last frame written.

Each line is written whole and flushed before the next item, so an interrupted run leaves only
complete lines (a line cut short by a hard kill is dropped on resume). Resuming skips every item
whose key is already in either file: a run interrupted and resumed writes the same lines as one
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .io import atomic_write_bytes

SETTINGS_NAME = "run.json"
MASKS_NAME = "masks.jsonl"
ERRORS_NAME = "errors.jsonl"
STATE_NAME = "smoothing.npz"


class RunFolderError(ValueError):
    """The output folder cannot hold this run (another run is there, or settings differ)."""


def record_key(record: dict) -> str:
    """The stream key of a masks.jsonl or errors.jsonl line."""
    if "key" in record:
        return str(record["key"])
    if record.get("frame") is not None:
        return f"frame:{record['frame']}"
    return str(record["image"])


def read_complete_lines(path: Path) -> list[dict]:
    """The complete lines of a JSONL file; a trailing partial line (a hard kill mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as file:
            file.truncate(end)
    records = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise RunFolderError(f"{path}: line {number} is not valid JSON ({error}); the file was edited or damaged") from error
    return records


def _rewrite_lines(path: Path, records: list[dict]) -> None:
    atomic_write_bytes(path, b"".join(_line(record) for record in records))


def _line(record: dict) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")


class RunFolder:
    """The output folder of one run; see the module docstring.

    `settings` must be JSON-ready. Without `resume`, a folder that already holds a run (a line in
    masks.jsonl or errors.jsonl) is refused unless `force` (which removes that run's files first). With `resume`, the folder's settings
    must equal `settings`; a folder with no run yet simply starts one. `done` holds the keys
    already written; `errors` counts the lines of errors.jsonl (from earlier sessions too).
    """

    def __init__(self, folder: Path, settings: dict, *, resume: bool = False, force: bool = False) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.masks_path = self.folder / MASKS_NAME
        self.errors_path = self.folder / ERRORS_NAME
        self.state_path = self.folder / STATE_NAME
        settings_path = self.folder / SETTINGS_NAME
        settings = json.loads(json.dumps(settings))  # the form it takes once saved
        # A run that wrote nothing (its model failed to load, say) holds nothing to protect.
        existing = any(path.exists() and path.stat().st_size > 0 for path in (self.masks_path, self.errors_path))
        if existing and not resume:
            if not force:
                raise RunFolderError(
                    f"{self.folder} already holds a run: pass --resume to continue it, --force to start over, "
                    "or choose another --out folder"
                )
            for path in (settings_path, self.masks_path, self.errors_path, self.state_path):
                path.unlink(missing_ok=True)
        if resume and settings_path.exists():
            saved = json.loads(settings_path.read_text(encoding="utf-8"))
            changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
            if changed:
                details = "; ".join(f"{k}: {saved.get(k)!r} then, {settings.get(k)!r} now" for k in changed)
                raise RunFolderError(f"cannot resume the run in {self.folder} with other settings ({details})")
        elif resume and (self.masks_path.exists() or self.errors_path.exists()):
            raise RunFolderError(f"{self.folder} has results but no {SETTINGS_NAME}: it cannot be resumed safely; use --force")
        atomic_write_bytes(settings_path, (json.dumps(settings, indent=1) + "\n").encode("utf-8"))

        masks = read_complete_lines(self.masks_path)
        errors = read_complete_lines(self.errors_path)
        self.smooth_state: np.ndarray | None = None
        if self.state_path.exists():
            masks = self._align_with_state(masks)
        elif settings.get("smooth") is not None and masks:
            # Smoothing on but no state saved (killed before the first save): start over.
            masks = []
            _rewrite_lines(self.masks_path, masks)
        self.done: set[str] = {record_key(r) for r in masks} | {record_key(r) for r in errors}
        self.written = len(masks)
        self.errors = len(errors)
        self._masks_file = self.masks_path.open("ab")
        self._errors_file = self.errors_path.open("ab")

    def _align_with_state(self, masks: list[dict]) -> list[dict]:
        """Keep the records up to the frame the saved moving average belongs to.

        The state is saved after its frame's line, so a hard kill in between leaves a line one
        frame ahead of the state: it is dropped and that frame computed again from the state.
        """
        with np.load(self.state_path) as saved:
            frame = int(saved["frame"])
            state = np.array(saved["logits"], dtype=np.float32)
        kept = [r for r in masks if r.get("frame", -1) <= frame]
        if len(kept) != len(masks):
            _rewrite_lines(self.masks_path, kept)
        if kept and kept[-1].get("frame") == frame:
            self.smooth_state = state
        elif kept:
            raise RunFolderError(f"{self.state_path} does not belong to the last frame of {self.masks_path}; use --force")
        return kept

    def write(self, record: dict) -> None:
        """Append one masks.jsonl line (whole, flushed)."""
        self._masks_file.write(_line(record))
        self._masks_file.flush()
        self.written += 1
        self.done.add(record_key(record))

    def write_error(self, record: dict) -> None:
        """Append one errors.jsonl line (whole, flushed)."""
        self._errors_file.write(_line(record))
        self._errors_file.flush()
        self.errors += 1
        self.done.add(record_key(record))

    def save_state(self, frame: int, logits: np.ndarray) -> None:
        """The moving average after `frame` (written atomically, after that frame's line)."""
        import io

        buffer = io.BytesIO()
        np.savez(buffer, frame=np.int64(frame), logits=np.asarray(logits, dtype=np.float32))
        atomic_write_bytes(self.state_path, buffer.getvalue())

    def close(self) -> None:
        self._masks_file.close()
        self._errors_file.close()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Interrupted(Exception):
    """Raised between items after SIGINT or SIGTERM asked the run to stop."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


@contextmanager
def stop_between_items() -> Iterator[Callable[[], None]]:
    """While active, SIGINT (Ctrl-C) and SIGTERM ask for a stop instead of killing mid-write: the
    yielded `check()` raises `Interrupted` once one arrived (call it between items). A second
    signal interrupts at once. Outside the main thread this does nothing (signals go there)."""
    received: list[int] = []

    def check() -> None:
        if received:
            raise Interrupted(received[0])

    if threading.current_thread() is not threading.main_thread():
        yield check
        return

    def handler(number, frame) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(number)

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield check
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def exit_code(interrupted: Interrupted) -> int:
    """The shell's convention: 128 + the signal number."""
    return 128 + interrupted.signal_number


def ensure_writable(folder: Path) -> None:
    """Create `folder` and check that files can be written there; `OSError` with the reason if not."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".fastclipseg-write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()
