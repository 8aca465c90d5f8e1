"""`python -m fastclipseg`: the command line; `python -m fastclipseg --cmake-dir` prints the folder
of the installed CMake package (see `fastclipseg.cmake_dir`)."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--cmake-dir"]:
        from .native_package import cmake_dir

        try:
            print(cmake_dir())
        except FileNotFoundError as error:
            sys.exit(f"error: {error}")
        return
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
