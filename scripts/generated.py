"""Writing a generated file, or checking that it is current (the --check of the generators)."""

import argparse
import pathlib
import sys


def write_or_check(path: pathlib.Path, expected: str, check: bool, command: str) -> int:
    """With `check`: exit status 1, saying to run `command`, when `path` does not hold
    `expected`, else 0. Without: write `expected` to `path`; 0."""
    if check:
        if path.read_text() != expected:
            print(f"{path} is stale: run {command}", file=sys.stderr)
            return 1
        return 0
    path.write_text(expected)
    print(f"wrote {path}")
    return 0


def main(description: str, path: pathlib.Path, make, command: str) -> int:
    """A generator's command line: `make()` gives the text `path` must hold; --check only checks."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help=f"only check that {path.name} is current")
    return write_or_check(path, make(), parser.parse_args().check, command)
