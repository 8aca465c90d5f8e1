"""How the bad-input tests call the CLI and check that it failed the way the README promises."""

from __future__ import annotations

from fastclipseg.cli import app
from typer.testing import CliRunner


def invoke(*args):
    """Run `fastclipseg ARGS...` in-process; exceptions stay on the result for `error_line`."""
    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result, code: int, *names: str) -> str:
    """Exit status `code`, exactly one `error: ...` line on stderr naming each of `names`, no
    traceback nor escaped exception; returns that line."""
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    assert escaped is None, repr(escaped)
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]
