"""requirements/constraints.txt, the tested versions `make setup` installs: every
dependency of pyproject.toml is pinned there, and the pins are ones pip can meet."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
#: Extras not installed in the tested venv, so not pinned (and why).
UNPINNED_EXTRAS = {"fid": "torch-fidelity needs Inception weights; not in the tested venv"}

spec = importlib.util.spec_from_file_location("lock", ROOT / "requirements" / "lock.py")
assert spec is not None and spec.loader is not None
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)


def _requirements() -> list[str]:
    groups = lock.project_requirements()
    return [r for extra, reqs in groups.items() if extra not in UNPINNED_EXTRAS for r in reqs]


@pytest.mark.parametrize("requirement", _requirements())
def test_every_dependency_is_pinned_within_its_range(requirement: str) -> None:
    """Fails when a dependency is added (or its range moved) without `make lock`."""
    req = Requirement(requirement)
    pinned = lock.read_pins(CONSTRAINTS)
    name = lock.canonical(req.name)
    assert name in pinned, f"{req.name} is not in {CONSTRAINTS.name}: run `make lock`"
    assert Version(pinned[name]) in req.specifier, f"{req.name}=={pinned[name]} vs {req}"


def test_pins_are_plain_versions_pip_can_meet_from_pypi() -> None:
    lines = [line for line in CONSTRAINTS.read_text().splitlines() if not line.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.]+", line) for line in lines)
    names = [lock.canonical(line.split("==")[0]) for line in lines]
    assert len(names) == len(set(names)) and "synthsat" not in names


def test_lock_keeps_the_needed_pins_without_local_tags() -> None:
    freeze = ["torch==2.14.1+cpu", "Pillow==13.0.0", "synthsat==0.1.0", "black==25.1.0", "-e x"]
    keep = {"torch", "pillow", "synthsat"}
    assert lock.pins(freeze, keep) == ["Pillow==13.0.0", "torch==2.14.1"]


def test_markers_follow_the_requested_extras() -> None:
    test_only = Requirement('coverage>=7; extra == "test"')
    assert not lock.applies(test_only, frozenset())
    assert lock.applies(test_only, frozenset({"test"}))
    assert lock.applies(Requirement("numpy>=1.26"), frozenset())
    assert not lock.applies(Requirement('pywin32; sys_platform == "win32"'), frozenset())


#: Libraries whose lower bound in pyproject.toml is the tested minor version (issue 28 row
#: 12: bounds below what CI installs were never run).
TESTED_MINOR = (
    "torch",
    "torchvision",
    "lightning",
    "torchgeo",
    "torchmetrics",
    "wandb",
    "rasterio",
    "segmentation-models-pytorch",
)


@pytest.mark.parametrize("name", TESTED_MINOR)
def test_key_lower_bounds_are_the_tested_minor_versions(name: str) -> None:
    """A `make lock` that moves a key library to a new minor version fails here until
    pyproject.toml's lower bound follows it (and the other way round)."""
    reqs = {lock.canonical(Requirement(r).name): Requirement(r) for r in _requirements()}
    req = reqs[lock.canonical(name)]
    (lower,) = [Version(s.version) for s in req.specifier if s.operator == ">="]
    tested = Version(lock.read_pins(CONSTRAINTS)[lock.canonical(name)])
    assert (lower.major, lower.minor) == (tested.major, tested.minor), (
        f"{name}: pyproject.toml says >={lower}, CI tests {tested}"
    )
