"""The atheris harness (fuzz/fuzz_load_repo.py) works, with atheris or without it.

Its `one_input` takes every seed and a few broken variants without raising; the script
exits 0 with a note where atheris is not installed, and where it is, a short run (500
inputs) finds no crash. The long run is by hand: `python fuzz/fuzz_load_repo.py
-max_total_time=60`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "fuzz" / "fuzz_load_repo.py"


def harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_load_repo", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_seed_and_broken_variants_load_without_raising() -> None:
    fuzz = harness()
    for seed in fuzz.seeds():
        for data in (seed, seed[: len(seed) // 2], seed[:1] + b"\xff\xfe\x00", seed[:1] + seed[1:].upper(),
                     seed[:1] + b"- " * 2000, seed[:1] + b"&a [*a, *a]\n"):
            fuzz.one_input(data)
    assert all((ROOT / "examples/fleets/spec-reference" / rel).read_bytes() for rel in fuzz.TARGETS[:4])


def test_the_script_runs_or_says_atheris_is_missing() -> None:
    done = subprocess.run([sys.executable, str(HARNESS), "-runs=500", "-timeout=10"], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, check=False,
                          env={**os.environ, "FLEET_FUZZ_INSTRUMENT": "reconciler"})
    if importlib.util.find_spec("atheris") is None:
        assert done.returncode == 0 and "atheris is not installed" in done.stderr
        pytest.skip("atheris is not installed: only the fallback was checked")
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"Done 5\d\d runs", done.stderr), done.stderr[-500:]  # libFuzzer may run a few more
