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
uninterrupted run. A file of the folder that was damaged or edited (a line that is not a record,
settings or a smoothing state that do not load) is refused with `RunFolderError` naming it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .writers import atomic_write_bytes

SETTINGS_NAME = "run.json"
MASKS_NAME = "masks.jsonl"
ERRORS_NAME = "errors.jsonl"
STATE_NAME = "smoothing.npz"
#: Largest side of the smoothed logits a run may save: CLIPSeg's logits are at the model's input
#: size (352 for the released models), so a bigger header in smoothing.npz is damage, and it is
#: refused before anything is allocated from it.
MAX_LOGIT_SIDE = 1024


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
    """The records of a masks.jsonl or errors.jsonl file; a trailing partial line (a hard kill
    mid-write) is cut off. `RunFolderError` names the file (and line) it cannot use."""
    if not path.exists():
        return []
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RunFolderError(f"{path}: cannot be read ({error.strerror or error})") from error
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as file:
            file.truncate(end)
    records = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        try:
            record = json.loads(line)  # bytes: a line that is not UTF-8 raises UnicodeDecodeError
        except ValueError as error:
            raise RunFolderError(f"{path}: line {number} is not valid JSON ({error}); the file was edited or damaged") from error
        problem = _record_problem(record)
        if problem:
            raise RunFolderError(f"{path}: line {number} is not a record of a run ({problem}); "
                                 "the file was edited or damaged")
        records.append(record)
    return records


def _record_problem(record: object) -> str | None:
    """Why `record` cannot be a line of a run (resume keys it, the overlay finds frames by number)."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    frame = record.get("frame")
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, int) or frame < 0):
        return f"frame is {frame!r}, not a frame number"
    if "key" not in record and frame is None and not isinstance(record.get("image"), str):
        return "it has no key, frame or image"
    return None


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
        if self.folder.exists() and not self.folder.is_dir():
            raise RunFolderError(f"{self.folder}: is a file, not a folder for the run's output")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.masks_path = self.folder / MASKS_NAME
        self.errors_path = self.folder / ERRORS_NAME
        self.state_path = self.folder / STATE_NAME
        settings_path = self.folder / SETTINGS_NAME
        settings = json.loads(json.dumps(settings))  # the form it takes once saved
        prompts = settings.get("prompts")
        self._state_prompts = len(prompts) if isinstance(prompts, list) and prompts else None
        # A run that wrote nothing (its model failed to load, say) holds nothing to protect.
        existing = any(path.exists() and path.stat().st_size > 0 for path in (self.masks_path, self.errors_path))
        if existing and not resume:
            if not force:
                raise RunFolderError(
                    f"{self.folder} already holds a run: pass --resume to continue it, --force to start over, "
                    "or choose another --out folder"
                )
            files = (settings_path, self.masks_path, self.errors_path, self.state_path)
            for path in files:  # all checked before any is removed
                if path.is_dir():
                    raise RunFolderError(f"{path}: is a folder where the run keeps a file; remove it to start over")
            for path in files:
                path.unlink(missing_ok=True)
        if resume and settings_path.exists():
            saved = _read_settings(settings_path)
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
        frame, state = _read_state(self.state_path, self._state_prompts)
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


def _read_settings(path: Path) -> dict:
    try:
        saved = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise RunFolderError(f"{path}: the run's settings cannot be read ({reason}); "
                             "use --force to start over") from error
    if not isinstance(saved, dict):
        raise RunFolderError(f"{path}: the run's settings should be a JSON object, found a JSON "
                             f"{type(saved).__name__}; use --force to start over")
    return saved


def _read_state(path: Path, prompts: int | None = None) -> tuple[int, np.ndarray]:
    """The frame number and smoothed logits saved in smoothing.npz; `RunFolderError` if damaged.

    The logits' header is checked first (3 dimensions, `prompts` of them when known, sides up to
    `MAX_LOGIT_SIDE`, data as long as the header says): the file is untrusted, and numpy would
    allocate whatever shape it names before reading a byte."""
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not an .npz archive")
        _check_logits_header(path, prompts)
        with np.load(path) as saved:
            frame = saved["frame"]
            logits = np.array(saved["logits"], dtype=np.float32)
        if frame.shape != () or frame.dtype.kind not in "iu" or int(frame) < 0:
            raise ValueError(f"frame is {frame!r}, not a frame number")
        if logits.ndim != 3 or not np.isfinite(logits).all():
            raise ValueError(f"logits of shape {logits.shape} (prompts, height, width) with finite values expected")
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise RunFolderError(f"{path}: the saved smoothing state is damaged ({error}); "
                             "use --force to start over") from error
    return int(frame), logits


def _check_logits_header(path: Path, prompts: int | None) -> None:
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo("logits.npy")
        except KeyError:
            raise ValueError("no logits in the archive") from None
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(member)
            header_bytes = member.tell()
    if len(shape) != 3:
        raise ValueError(f"logits of shape {shape}, expected (prompts, height, width)")
    if prompts is not None and shape[0] != prompts:
        raise ValueError(f"logits for {shape[0]} prompts, but the run has {prompts}")
    if max(shape[1:]) > MAX_LOGIT_SIDE:
        raise ValueError(f"logits of shape {shape}, larger than any model's ({MAX_LOGIT_SIDE} at most)")
    expected = int(np.prod(shape)) * dtype.itemsize
    if info.file_size - header_bytes != expected:
        raise ValueError(f"logits of shape {shape} need {expected} bytes, the archive holds {info.file_size - header_bytes}")


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
