"""Coverage-guided fuzzing of the spec loader with atheris (libFuzzer for Python).

Each input replaces one file of a copy of examples/fleets/spec-reference: its first byte
picks the file (fleet.yaml, the roster, budget.yaml, tasks.yaml or a role), the rest is
written as that file's raw bytes. Then `load_repo` runs, and where the repository still
loads, `build_desired` too (what every `fleet reconcile` does next). Anything but a
return is a crash: a spec, however broken, must come back as located errors
(STYLE.md item 8), never a traceback. tests/spec/test_fuzz.py covers the same ground
with hypothesis; this one follows coverage.

    pip install atheris            # not a project dependency
    python fuzz/fuzz_load_repo.py -max_total_time=60 -timeout=10 [CORPUS_DIR]

Coverage is collected in reconciler, ruamel and pydantic; FLEET_FUZZ_INSTRUMENT=reconciler
narrows it (instrumenting pydantic takes seconds). Without atheris the script says so
and exits 0; `one_input` works without it (the test
suite feeds it the seeds in tests/resilience/test_fuzz_harness.py).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[1] / "examples" / "fleets" / "spec-reference"
TARGETS = (
    "fleet.yaml",
    "tenants/jarvis/roster.yaml",
    "tenants/jarvis/budget.yaml",
    "tenants/jarvis/tasks.yaml",
    "roles/coder.yaml",
)
_REPO: Path | None = None


def _repo() -> Path:
    """One private copy of the reference repository per process."""
    global _REPO  # noqa: PLW0603  (one copy per fuzzing process, reused for every input)
    if _REPO is None:
        _REPO = Path(tempfile.mkdtemp(prefix="fleet-fuzz-")) / "repo"
        shutil.copytree(REFERENCE, _REPO)
    return _REPO


def seeds() -> list[bytes]:
    """Every target's own text behind its selector byte (roles get the coder role's shape)."""
    out = []
    for index, rel in enumerate(TARGETS):
        path = REFERENCE / rel
        text = path.read_bytes() if path.exists() else (
            b"apiVersion: fleet.mosaicstack.dev/v1\nkind: Role\nname: coder\npersona: writes code\n")
        out.append(bytes([index]) + text)
    return out


def one_input(data: bytes) -> None:
    """Load the repository with one file replaced by `data[1:]`; raises only on a bug."""
    from reconciler.core.desired import build_desired  # noqa: PLC0415  (after atheris instruments imports)
    from reconciler.spec.load import load_repo  # noqa: PLC0415

    if not data:
        return
    repo = _repo()
    rel = TARGETS[data[0] % len(TARGETS)]
    target = repo / rel
    original = (REFERENCE / rel).read_bytes() if (REFERENCE / rel).exists() else None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[1:])
    try:
        loaded = load_repo(repo)
        for error in loaded.errors:
            str(error)
        build_desired(loaded, host="w-jarvis", state_dir="/nonexistent/state")
    finally:
        if original is None:
            target.unlink()
        else:
            target.write_bytes(original)


def main() -> int:
    try:
        import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]  # noqa: PLC0415  (optional, not a dependency)
    except ImportError:
        print("atheris is not installed (pip install atheris); nothing fuzzed", file=sys.stderr)
        return 0
    args = list(sys.argv)
    if not any(not a.startswith("-") for a in args[1:]):  # no corpus folder given: start from the seeds
        corpus = Path(tempfile.mkdtemp(prefix="fleet-fuzz-corpus-"))
        for n, seed in enumerate(seeds()):
            (corpus / f"seed-{n}").write_bytes(seed)
        args.append(str(corpus))
    packages = os.environ.get("FLEET_FUZZ_INSTRUMENT", "reconciler,ruamel,pydantic").split(",")
    with atheris.instrument_imports(include=packages):
        import pydantic  # noqa: F401, PLC0415
        import ruamel.yaml  # noqa: F401, PLC0415

        import reconciler.core.desired  # noqa: PLC0415
        import reconciler.spec.load  # noqa: F401, PLC0415
    atheris.Setup(args, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
