"""Reading the files of a model or export folder so that every failure names the file.

A truncated JSON file, a cut-short `model.safetensors` or a tokenizer that does not parse would
otherwise surface as a bare `JSONDecodeError`, a `SafetensorError` or a `KeyError` naming no file.
Nothing here imports transformers: exports are read without it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

# The safetensors library refuses larger headers too.
MAX_SAFETENSORS_HEADER = 100_000_000
# What a user can do about a damaged file in a model folder (an export says "export again").
REPLACE_MODEL_FILE = "replace the model folder with a fresh copy (download it again, or run fastclipseg convert again)"


class ModelLoadError(ValueError):
    """A model or export folder holds a file that cannot be used: unreadable, truncated, corrupt, or
    not what it should be. The message names the file, says what is wrong and what to do."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (libraries put tables and hints below it)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_json(path: Path, fix: str, error: type[ModelLoadError] = ModelLoadError) -> object:
    """The parsed contents of JSON file `path`; `error` naming the file, what is wrong and `fix` otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path} is missing: {fix}") from None
    except OSError as problem:
        raise error(f"{path} cannot be read ({problem.strerror or problem}): {fix}") from problem
    if not data.strip():
        raise error(f"{path} is empty: {fix}")
    try:
        return json.loads(data)  # bytes: UTF-8/16/32 detected as the JSON standard says
    except UnicodeDecodeError as problem:
        raise error(f"{path} is not JSON text ({problem.reason}): {fix}") from problem
    except json.JSONDecodeError as problem:
        raise error(f"{path} is not valid JSON ({problem.msg} at line {problem.lineno} column {problem.colno}; "
                    f"truncated or damaged): {fix}") from problem
    except RecursionError as problem:
        raise error(f"{path} is not a usable JSON file (nested too deeply): {fix}") from problem


def read_json_object(path: Path, fix: str, error: type[ModelLoadError] = ModelLoadError) -> dict:
    """`read_json` for files whose top level must be an object (every config file)."""
    data = read_json(path, fix, error)
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {type(data).__name__}, not the object a config file holds: {fix}")
    return data


def check_safetensors(path: Path, fix: str = REPLACE_MODEL_FILE, error: type[ModelLoadError] = ModelLoadError) -> None:
    """Check that `path` is a whole safetensors file: header readable and every tensor's bytes present.

    The format: 8 bytes (little-endian header length N), N bytes of JSON (per tensor: dtype, shape,
    data_offsets into the data after the header), then the data. A truncated download is the
    common failure; it is told apart from a file that is not safetensors at all.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            prefix = file.read(8)
            header_length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
            header_bytes = file.read(min(header_length, MAX_SAFETENSORS_HEADER))
    except OSError as problem:
        raise error(f"{path} cannot be read ({problem.strerror or problem}): {fix}") from problem
    if size == 0:
        raise error(f"{path} is empty (0 bytes), not a safetensors weights file: {fix}")
    # A file cut short right after the length prefix has no header bytes at all.
    cut_in_prefix = header_bytes == b"" and len(prefix) == 8 and 0 < header_length <= MAX_SAFETENSORS_HEADER
    if not (header_bytes.startswith(b"{") or cut_in_prefix) or header_length > MAX_SAFETENSORS_HEADER:
        raise error(f"{path} is not a safetensors weights file (it does not start with a safetensors header): {fix}")
    if len(header_bytes) < header_length:
        raise error(f"{path} is truncated: its header alone needs {header_length + 8} bytes, the file has {size}: {fix}")
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as problem:
        raise error(f"{path} has a damaged safetensors header ({first_line(problem)}): {fix}") from problem
    if not isinstance(header, dict):
        raise error(f"{path} has a damaged safetensors header (not a JSON object): {fix}")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(v, int) for v in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise error(f"{path} has a damaged safetensors header (tensor {name!r} has no valid data_offsets): {fix}")
        end = max(end, offsets[1])
    expected = 8 + header_length + end
    if size < expected:
        raise error(f"{path} is truncated: {size} of its {expected} bytes are there (an interrupted download or "
                    f"copy?): {fix}")
    if size > expected:
        raise error(f"{path} has {size - expected} bytes after its last tensor; it is damaged: {fix}")
