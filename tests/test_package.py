"""What a user's `pip install` gets: the command, the type stubs and their
marker, and the Python versions the package admits (the matrix runs this
against the installed wheel)."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import ndshm
from ndshm import _native


def test_the_package_carries_its_stubs_and_typed_marker():
    here = Path(ndshm.__file__).parent
    assert (here / "py.typed").is_file()
    stub = here / "_native.pyi"
    assert stub.is_file() and "class Segment" in stub.read_text()
    assert Path(_native.__file__).parent == here


def test_the_ndshm_command_is_installed():
    (ep,) = importlib.metadata.entry_points(group="console_scripts", name="ndshm")
    assert ep.value == "ndshm.cli:main"
    assert Path(sys.executable).with_name("ndshm").is_file()


def test_python_versions_below_3_11_are_refused_at_install():
    meta = importlib.metadata.metadata("ndshm")
    assert meta["Requires-Python"] == ">=3.11"
