"""Every file the reconciler writes is written whole or not at all, whatever kills it.

Three layers. The source: no write site in `reconciler/` bypasses `write_atomic`, apart
from append-only logs, the lock and the ones listed as pending below. One write: a
child process dies (`os._exit`) at each step of `write_atomic`, and is SIGKILLed at
random moments while rewriting a 4 MiB file over and over. A whole run: `fleet
reconcile` is made to die at its 1st, 2nd, 3rd... fsync, each time leaving every state
and repository file readable, and a plain re-run converges.
"""

from __future__ import annotations

import ast
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest

from reconciler.drivers import tmux
from reconciler.drivers.audit import read_audit
from reconciler.engine.reconcile import apply_and_write_back
from reconciler.engine.tick import TickInputs, plan_tick
from reconciler.engine.writeback import read_status
from reconciler.model.observed import SocketKey
from tests.engine.test_budget_apply import fleet_repo, set_usage
from tests.plugins.tmux_server import kill_server
from tests.resilience.faults import clear

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "reconciler"

#: Write sites that are not `write_atomic`, and why each is right as it is.
ALLOWED = {
    ("drivers/files.py", "write_atomic"): "the atomic write itself (a temp file, then rename)",
    ("drivers/files.py", "_probe"): "check_state_writable's probe: a temp file removed at once",
    ("drivers/lock.py", "hold_lock"): "the lock file: its text only names the holder",
    ("drivers/reports.py", "_update"): "the empty lock file beside an agent's reports or the reopens (flock only; the reports go through write_atomic)",
    ("drivers/ledger.py", "update_ledger"): "append-only log: one write of whole lines",
    ("drivers/ledger_fold.py", "update_ledger_fold"): "append-only log: one write of whole lines",
    ("drivers/audit.py", "_append_lines"): "append-only log: one write per record",
    ("drivers/ingest_cursors.py", "append_keys"): "append-only index: one write of whole lines",
    ("engine/delegate.py", "staged_specs"): "copies into a fresh private temp folder, removed after the run",
    ("engine/spec_edit.py", "edit"): "the edited file in a fresh temp copy of the specs, validated, then removed",
    ("engine/spec_edit.py", "_copy_specs"): "copies into a fresh temp folder, removed after the edit",
    ("drivers/git/branch.py", "commit_to_new_branch"): "a blob's bytes in a fresh temp folder, for git hash-object",
}
#: Not atomic yet: none left.
PENDING: dict[tuple[str, str], str] = {}
_WRITE_MODES = ("w", "a", "x", "+")
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC")


def _writes(tree: ast.AST) -> list[tuple[str, int]]:
    """(enclosing function, line) of every call in `tree` that may write a file."""
    found = []
    for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]:
        for node in ast.walk(func):
            if isinstance(node, ast.Call) and _writes_file(node):
                found.append((func.name, node.lineno))
    return found


def _writes_file(call: ast.Call) -> bool:
    """Whether a call may write a file: conservative (an `os.open` is a write unless its
    flags are spelled out and read-only)."""
    func = ast.unparse(call.func)
    name = func.rpartition(".")[2]
    if func == "os.open":
        text = ast.unparse(call)
        return "O_RDONLY" not in text or any(flag in text for flag in _WRITE_FLAGS)
    if name in {"write_text", "write_bytes", "mkstemp", "NamedTemporaryFile", "copyfile", "copy", "copy2"}:
        return True
    if name in {"open", "fdopen"}:
        modes = [a.value for a in [*call.args[1:2], *(k.value for k in call.keywords if k.arg == "mode")]
                 if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        return any(m in mode for mode in modes for m in _WRITE_MODES)
    return False


def test_no_write_site_bypasses_write_atomic() -> None:
    sites = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for func, line in _writes(ast.parse(path.read_text(), str(path))):
            sites[(rel, func)] = line
    unexpected = {f"reconciler/{rel}:{line} in {func}()" for (rel, func), line in sites.items()
                  if (rel, func) not in ALLOWED and (rel, func) not in PENDING}
    assert unexpected == set(), "write through drivers/files.write_atomic (or write_if_changed) instead"
    assert set(ALLOWED) <= set(sites), "an allowed site moved: update ALLOWED"


# --- one write, killed at each step ---------------------------------------------------------

CHILD = """
import os, sys
from pathlib import Path
from reconciler.drivers import files
target, point, payload = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
calls = {"fsync": 0}
real_fsync, real_replace = os.fsync, Path.replace
def fsync(fd):
    calls["fsync"] += 1
    if (point, calls["fsync"]) in {("data-fsync", 1), ("dir-fsync", 2)}:
        os._exit(86)
    real_fsync(fd)
def replace(self, other):
    if point == "rename":
        os._exit(86)
    return real_replace(self, other)
def write(fd, data):
    os.write(fd, data[: len(data) // 2])
    os._exit(86)
os.fsync, Path.replace = fsync, replace
if point == "mid-write":
    files.os.fdopen = lambda fd, mode: type("Half", (), {"__enter__": lambda s: s, "__exit__": lambda s, *a: None,
        "write": lambda s, data: write(fd, data), "flush": lambda s: None, "fileno": lambda s: fd})()
files.write_atomic(target, payload)
"""


class CrashCase(NamedTuple):
    test_id: str
    survivor: str  # what the target holds after the crash


CRASHES = [
    CrashCase("mid-write", "old"),
    CrashCase("data-fsync", "old"),
    CrashCase("rename", "old"),
    CrashCase("dir-fsync", "new"),
]


@pytest.mark.parametrize("case", CRASHES, ids=lambda c: c.test_id)
def test_a_crash_inside_write_atomic_leaves_the_old_or_the_new_file(tmp_path: Path, case: CrashCase) -> None:
    target = tmp_path / "status.yaml"
    target.write_text("old")

    done = subprocess.run([sys.executable, "-c", CHILD, str(target), case.test_id, "new" * 1000],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, check=False)

    assert done.returncode == 86, done.stderr
    assert target.read_text() == (case.survivor if case.survivor == "old" else "new" * 1000)
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(name.startswith(".status.yaml.") and name.endswith(".tmp") for name in leftovers)


LOOP = """
import sys
from pathlib import Path
from reconciler.drivers.files import write_atomic
target = Path(sys.argv[1])
blocks = [bytes([65 + n]) * (4 << 20) for n in range(4)]
print("ready", flush=True)
n = 0
while True:
    write_atomic(target, blocks[n % 4])
    n += 1
"""


def test_sigkill_at_random_moments_never_leaves_half_a_file(tmp_path: Path) -> None:
    target = tmp_path / "big.json"
    rng = random.Random(3)
    for _ in range(8):
        child = subprocess.Popen([sys.executable, "-c", LOOP, str(target)], stdout=subprocess.PIPE, cwd=ROOT)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.02, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        if target.exists():
            data = target.read_bytes()
            assert len(data) == 4 << 20 and data == data[:1] * len(data), "a torn file"


# --- a whole run, killed at every fsync -------------------------------------------------------

RUN = """
import os, sys
crash_at, seen = int(os.environ["FLEET_TEST_CRASH_AT"]), [0]
real = os.fsync
def fsync(fd):
    seen[0] += 1
    if seen[0] == crash_at:
        os._exit(86)
    real(fd)
os.fsync = fsync
from reconciler.cli.app import main
sys.argv = ["fleet", *sys.argv[1:]]
main()
"""


def _whole(root: Path) -> list[str]:
    """What is not a whole file among everything a run writes under `root`."""
    bad = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        text = path.read_text()
        if path.name.endswith(".tmp") and not path.name.startswith("."):
            bad.append(f"{path}: a visible temporary file")
        elif path.suffix == ".json" and path.parent.name != "usage":
            json.loads(text)
        elif path.suffix == ".jsonl":
            bad += read_audit(path)[1]
        elif path.parent.parent.name == "status" and read_status(path)[1]:
            bad.append(str(read_status(path)[1]))
        elif path.name == "TASKS.md" and not text.endswith("\n"):
            bad.append(f"{path}: cut off")
    return bad


@pytest.mark.tmux
def test_a_cold_start_killed_at_each_fsync_leaves_whole_files_and_reruns_clean(
    tmp_path: Path, tmux_socket: SocketKey
) -> None:
    """The same cold start (no sessions, no state) killed at its 1st, 2nd... fsync until
    one run gets through; after each crash every file is whole and a re-run converges."""
    assert tmux_socket.name
    now = datetime.now(UTC)
    repo = fleet_repo(tmp_path / "repo", tmux_socket.name, now + timedelta(days=3))
    state = tmp_path / "state"
    env = {**os.environ, "MOSAIC_AGENT_COMMAND": "sleep 600", "XDG_RUNTIME_DIR": str(tmp_path)}
    argv = [sys.executable, "-c", RUN, "reconcile", str(repo), "--host", "demo", "--state-dir", str(state)]
    inputs = TickInputs(repo=repo, host="demo", state_dir=state, command_override="sleep 600")

    def run(crash_at: int) -> int:
        done = subprocess.run(argv, env={**env, "FLEET_TEST_CRASH_AT": str(crash_at)}, capture_output=True,
                              text=True, timeout=60, cwd=ROOT, check=False)
        assert done.returncode in {0, 86}, done.stderr
        return done.returncode

    crashes = 0
    for crash_at in range(1, 40):
        kill_server(tmux_socket.name)
        for leftover in (state, repo / "status", repo / "TASKS.md"):
            clear(leftover)
        set_usage(state, 0.9, now + timedelta(days=3), now)  # over pace: budget memory is written too
        if run(crash_at) == 0:
            break
        crashes += 1
        assert _whole(tmp_path) == [], f"after a crash at fsync {crash_at}"
        rerun, problems = apply_and_write_back(plan_tick(inputs), None)  # in-process: the same code, faster
        assert not rerun.failed and problems == (), f"the re-run after a crash at fsync {crash_at}"
        assert sorted(tmux.observe_socket(tmux_socket).sessions) == ["coder0", "enhancer", "orchestrator"]
        assert _whole(tmp_path) == []
    assert crashes >= 6, "a cold start writes the audit log, budget memory, status and TASKS.md"
