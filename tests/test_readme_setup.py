"""README's set-up commands (issue 17): exactly two, the first installs a pinned torch before the
package, the second installs the extras the tests need and runs them, and CI (`.ci/run`) runs that
second command as written. A newcomer once found the test command right after an install command
that left pytest out."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = 'pip install ".[test]" && python -m pytest tests'


def section(markdown: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", markdown, flags=re.S | re.M)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_set_up_gives_exactly_two_commands():
    blocks = bash_blocks(section((ROOT / "README.md").read_text(encoding="utf-8"), "Set up"))
    assert len(blocks) == 2, blocks
    assert all("\n" not in block for block in blocks), blocks
    install, test = blocks
    steps = [shlex.split(step) for step in install.split("&&")]
    assert steps[0] == ["pip", "install", "torch==2.13.0"], "torch must be installed first, pinned"
    assert steps[1] == ["pip", "install", "."]
    assert steps[2][:2] == ["fastclipseg", "segment"]
    assert test == TEST_COMMAND


def test_tests_section_gives_the_same_command():
    blocks = bash_blocks(section((ROOT / "README.md").read_text(encoding="utf-8"), "Tests"))
    assert blocks[0] == TEST_COMMAND


def test_the_test_extra_brings_pytest_and_what_the_suite_imports():
    # The text of pyproject's `test = [...]` list (tomllib is Python 3.11+; 3.10 is supported).
    match = re.search(r"^test = \[(.*?)\]$", (ROOT / "pyproject.toml").read_text(encoding="utf-8"), flags=re.S | re.M)
    assert match, "pyproject.toml has no test extra"
    test = match.group(1)
    for package in ("pytest", "pycocotools", "hypothesis", "jsonschema", "fastclipseg[docs]", "fastclipseg[demo]",
                    "selenium", "httpx"):
        assert package in test, f"the test extra lacks {package}"


def test_ci_runs_the_readme_command_as_written():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    # .ci/run names its interpreter ($PYTHON) and keeps pip quiet; otherwise the same words.
    last = lines[-1].replace('"$PYTHON" -m pip', "pip").replace('"$PYTHON"', "python").replace(" --quiet", "")
    assert last == TEST_COMMAND, lines[-1]
    assert "export FASTCLIPSEG_REQUIRE_BROWSER=1" in lines, "CI must not let the demo's browser test skip"
