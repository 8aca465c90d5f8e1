"""JSON Schemas (draft 2020-12) of the files the command line writes, shipped with the package.

- `segment`: the `<stem>.json` file `fastclipseg segment` writes per image;
- `masks-line`: one line of `masks.jsonl` from `fastclipseg batch` or `fastclipseg video`;
- `errors-line`: one line of `errors.jsonl` from the same commands.

The files sit next to this module (`<name>.schema.json`); tests validate real command output
against them, so a change to the output that is not made here too fails the tests.
"""

from __future__ import annotations

import json
from importlib import resources

SCHEMA_NAMES = ("segment", "masks-line", "errors-line")
"""The names `schema()` takes."""


def schema(name: str) -> dict:
    """The JSON Schema called `name` (one of `SCHEMA_NAMES`), as a dict ready for a validator.

    Raises:
        ValueError: `name` is not one of `SCHEMA_NAMES`.
    """
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}: choose from {', '.join(SCHEMA_NAMES)}")
    # importlib.resources: the files are read where the package is, a folder or a zip.
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


__all__ = ["SCHEMA_NAMES", "schema"]
