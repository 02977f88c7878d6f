"""Every module's doctests run, not only those of the modules a test names.

A docstring example is part of a module's contract; one
walk over the package means a new module's examples are checked the day it lands.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import reconciler

MODULES = sorted(info.name for info in pkgutil.walk_packages(reconciler.__path__, "reconciler.")
                 if not info.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), raise_on_error=False,
                             optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
