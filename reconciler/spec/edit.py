"""Round-trip edits of the spec files: the orchestrator's hands (`fleet task add`, ...).

Text in, text out, nothing else: a file's YAML is loaded round-trip (comments, key
order, quotes and flow style kept), one change is made, and it is dumped with the
indentation that reproduces the untouched file byte for byte. engine/spec_edit.py
validates the result with the loader and writes and commits it; nothing here reads
or writes a file.
"""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString
from ruamel.yaml.tokens import CommentToken

from reconciler.errors import UserError
from reconciler.spec.models import API_VERSION, TASK_STATES
from reconciler.spec.yamlsource import editor_yaml

#: (mapping, sequence, offset) indentations tried, the project's own style first.
INDENTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0), (4, 2, 0), (3, 3, 0))
_BLOCK = (LiteralScalarString, FoldedScalarString)
#: Task ids fleet generates: tasks.yaml's id rule (letters, digits, '.', '_', '-'; 40 at most).
MAX_ID = 40


@dataclass(frozen=True)
class Document:
    """A loaded file: its round-trip tree, the YAML that dumps it as it was, and how many
    lines of the untouched file that dump would change (0 in every file we wrote)."""

    tree: Any
    yaml: YAML
    drift: int

    def dump(self) -> str:
        return _dump(self.yaml, self.tree)


def load(text: str) -> Document:
    """`text` loaded for editing, with the indentation that reproduces it best."""
    best: Document | None = None
    for mapping, sequence, offset in INDENTS:
        yaml = editor_yaml()
        yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        try:
            tree = yaml.load(text)
        except YAMLError as exc:
            raise UserError(f"the file is not valid YAML ({str(exc).splitlines()[0]}); fix it first") from None
        if not isinstance(tree, CommentedMap):
            raise UserError("the document is not a mapping; fix the file first (`fleet validate`)")
        again = _dump(yaml, tree)
        drift = 0 if again == text else _changed_lines(text, again)
        if best is None or drift < best.drift:
            best = Document(tree, yaml, drift)
        if drift == 0:
            break
    assert best is not None
    return best


def _dump(yaml: YAML, tree: Any) -> str:
    stream = io.StringIO()
    yaml.dump(tree, stream)
    return stream.getvalue()


def _changed_lines(old: str, new: str) -> int:
    diff = difflib.ndiff(old.splitlines(), new.splitlines())
    return sum(1 for line in diff if line.startswith(("- ", "+ ")))


# --- tasks.yaml ------------------------------------------------------------------------


@dataclass(frozen=True)
class NewTask:
    """What `fleet task add` was given; `id` empty: one is made from the title."""

    title: str
    lane: str
    brief: str
    id: str = ""
    mission: str = ""
    projected_tokens: int | None = None
    urgency: str | None = None
    depends_on: Sequence[str] = field(default_factory=tuple)


def new_tasks_file(tenant: str) -> str:
    """A tenant's tasks.yaml before its first task."""
    return f"apiVersion: {API_VERSION}\nkind: Tasks\ntenant: {tenant}\nmissions: []\n"


def task_ids(tree: Any) -> list[str]:
    """Every task id of a tasks.yaml tree, in file order (missing or odd entries skipped)."""
    return [str(t["id"]) for m in _missions(tree) for t in _list(m, "tasks")
            if isinstance(t, dict) and "id" in t]


def task_states(tree: Any) -> dict[str, str]:
    """Each task id of a tasks.yaml tree with the `state:` people set (open when it has none).

    >>> task_states({"missions": [{"tasks": [{"id": "T1"}, {"id": "T2", "state": "done"}]}]})
    {'T1': 'open', 'T2': 'done'}
    """
    return {str(t["id"]): str(t.get("state") or "open") for m in _missions(tree) for t in _list(m, "tasks")
            if isinstance(t, dict) and "id" in t}


def slug_id(title: str, taken: Iterable[str]) -> str:
    """A stable, readable id from the title: its words, lower-case, joined by '-', cut at
    a word to fit the id rule; `-2`, `-3`... when another task has it.

    >>> slug_id("Paginate the list endpoint!", [])
    'paginate-the-list-endpoint'
    >>> slug_id("Paginate the list endpoint", ["paginate-the-list-endpoint"])
    'paginate-the-list-endpoint-2'
    """
    words = re.findall(r"[a-z0-9]+", title.lower()) or ["task"]
    base = ""
    for word in words:
        joined = f"{base}-{word}" if base else word
        if len(joined) > MAX_ID - 4:
            break
        base = joined
    base = base or words[0][: MAX_ID - 4]
    used = {t.lower() for t in taken}
    candidate, n = base, 1
    while candidate in used:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def add_task(text: str, task: NewTask) -> tuple[str, str]:
    """tasks.yaml with `task` appended to its mission; returns the text and the task's id.

    The mission is `task.mission` (a new one, titled by its id, when the file has none
    of that id), else the file's only mission (a new `inbox` one when there is none).
    """
    doc = load(text)
    ids = task_ids(doc.tree)
    task_id = task.id or slug_id(task.title, ids)
    if task_id in ids:
        raise UserError(f"task id {task_id!r} is already in tasks.yaml; pick another --id")
    missions = doc.tree.get("missions")
    if not isinstance(missions, CommentedSeq):
        missions = CommentedSeq()
        doc.tree["missions"] = missions
    mission = _mission(missions, task.mission)
    tasks = mission.get("tasks")
    if not isinstance(tasks, CommentedSeq) or tasks.fa.flow_style():
        tasks = CommentedSeq(tasks or [])
        mission["tasks"] = tasks
    append(tasks, _task_map(task_id, task))
    return doc.dump(), task_id


def _mission(missions: CommentedSeq, wanted: str) -> CommentedMap:
    found = [m for m in missions if isinstance(m, CommentedMap)]
    if wanted:
        for m in found:
            if str(m.get("id")) == wanted:
                return m
    elif len(found) == 1:
        return found[0]
    elif found:
        names = ", ".join(str(m.get("id")) for m in found)
        raise UserError(f"tasks.yaml has several missions ({names}); say which with --mission ID")
    mission = CommentedMap()
    mission["id"] = wanted or "inbox"
    mission["title"] = wanted or "Inbox"
    mission["tasks"] = CommentedSeq()
    if missions.fa.flow_style():
        missions.fa.set_block_style()
    append(missions, mission)
    return mission


def _task_map(task_id: str, task: NewTask) -> CommentedMap:
    entry = CommentedMap()
    entry["id"] = task_id
    entry["title"] = task.title
    entry["lane"] = task.lane
    brief = "\n".join(line.rstrip() for line in task.brief.strip("\n").splitlines())
    if brief:
        entry["brief"] = LiteralScalarString(brief + "\n")
    if task.depends_on:
        deps = CommentedSeq(task.depends_on)
        deps.fa.set_flow_style()
        entry["depends_on"] = deps
    if task.projected_tokens is not None:
        entry["projected_tokens"] = task.projected_tokens
    if task.urgency is not None:
        entry["urgency"] = task.urgency
    return entry


def set_task_state(text: str, task_id: str, state: str) -> tuple[str, str]:
    """tasks.yaml with task `task_id`'s `state:` set; returns the text and the old state.

    A task without `state:` is open, so setting it open changes nothing; otherwise the
    key is set where it is, or added as the task's last key.
    """
    if state not in TASK_STATES:
        raise UserError(f"state {state!r} is not one people set; use {', '.join(TASK_STATES)}")
    doc = load(text)
    for mission in _missions(doc.tree):
        for task in _list(mission, "tasks"):
            if isinstance(task, CommentedMap) and str(task.get("id")) == task_id:
                old = str(task.get("state", "open"))
                if "state" in task:
                    task["state"] = state
                elif state != old:
                    tail = _take_tail(task)
                    task["state"] = state
                    if tail:
                        _give_tail(task, tail)
                return doc.dump(), old
    ids = task_ids(doc.tree)
    hint = f"ids here: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}" if ids else "it has no tasks"
    raise UserError(f"no task {task_id!r} in tasks.yaml ({hint})")


# --- roster.yaml -----------------------------------------------------------------------


@dataclass(frozen=True)
class NewAgent:
    """What `fleet agent add` was given; unset fields stay out of the file."""

    name: str
    role: str
    runtime: str | None = None
    model: str | None = None
    workdir: str | None = None


def add_agent(text: str, agent: NewAgent) -> str:
    """roster.yaml with `agent` appended to `agents:`."""
    doc = load(text)
    agents = doc.tree.get("agents")
    if not isinstance(agents, CommentedSeq):
        agents = CommentedSeq()
        doc.tree["agents"] = agents
    if agent.name in _names(agents):
        raise UserError(f"agent {agent.name!r} is already in roster.yaml; choose another name")
    entry = CommentedMap()
    entry["name"] = agent.name
    entry["role"] = agent.role
    for key in ("runtime", "model", "workdir"):
        value = getattr(agent, key)
        if value is not None:
            entry[key] = value
    append(agents, entry)
    return doc.dump()


def remove_agent(text: str, name: str) -> str:
    """roster.yaml without agent `name` (its comments and blank lines go with it)."""
    doc = load(text)
    agents = doc.tree.get("agents")
    names = _names(agents) if isinstance(agents, CommentedSeq) else []
    if name not in names:
        raise UserError(f"no agent {name!r} in roster.yaml (agents here: {', '.join(names) or 'none'})")
    remove(agents, names.index(name))
    return doc.dump()


def _names(agents: Any) -> list[str]:
    return [str(a.get("name")) if isinstance(a, dict) else "" for a in agents or []]


# --- comments that belong between items -------------------------------------------------
# ruamel keeps the blank lines and comments that follow a node with that node's last
# scalar, so after `agents:`'s last item it holds whatever precedes the next top-level
# key. Appending or removing an item moves that tail, else it would end up inside the list.


def append(seq: CommentedSeq, item: Any) -> None:
    """Append `item`, keeping what followed the list's last item after the new one."""
    tail = _take_tail(seq[-1]) if len(seq) else None
    seq.append(item)
    if tail:
        _give_tail(item, tail)


def remove(seq: CommentedSeq, index: int) -> None:
    """Remove item `index`; the comments above it go with it, those after it stay."""
    tail = _take_tail(seq[index])
    before = seq[index - 1] if index > 0 else None
    if before is not None:
        _take_tail(before)  # the comments above the removed item were its own
    del seq[index]
    if tail and before is not None:
        _give_tail(before, tail)


def _last_holder(node: Any) -> tuple[Any, Any, bool] | None:
    """The comment slot after `node`'s last scalar: (its `ca.items`, key, whether that
    scalar is a block scalar), or None."""
    while True:
        if isinstance(node, CommentedMap) and node and not node.fa.flow_style():
            key = list(node.keys())[-1]
            child = node[key]
            if isinstance(child, CommentedMap | CommentedSeq) and child and not child.fa.flow_style():
                node = child
                continue
            return node.ca.items, key, isinstance(child, _BLOCK)
        if isinstance(node, CommentedSeq) and node and not node.fa.flow_style():
            child = node[-1]
            if isinstance(child, CommentedMap | CommentedSeq) and child and not child.fa.flow_style():
                node = child
                continue
            return node.ca.items, len(node) - 1, isinstance(child, _BLOCK)
        return None


def _take_tail(node: Any) -> str:
    """Cut and return the lines after the end of `node`'s last line (its own end-of-line
    comment stays)."""
    holder = _last_holder(node)
    if holder is None:
        return ""
    items, key, block = holder
    entry = items.get(key)
    slot = 0 if isinstance(key, int) else 2
    token = entry[slot] if entry and len(entry) > slot else None
    if not isinstance(token, CommentToken):
        return ""
    if block:  # a block scalar ends with its own line end: all of the token follows it
        entry[slot] = None
        return str(token.value)
    if "\n" not in token.value:
        return ""
    head, tail = token.value.split("\n", 1)
    token.value = head + "\n"
    return tail


def _give_tail(node: Any, tail: str) -> None:
    holder = _last_holder(node)
    if holder is None:
        return
    items, key, block = holder
    slot = 0 if isinstance(key, int) else 2
    entry = items.setdefault(key, [None, None, None, None])
    token = entry[slot]
    if isinstance(token, CommentToken) and not block:
        token.value = token.value.split("\n", 1)[0] + "\n" + tail
    else:
        entry[slot] = CommentToken(tail if block else "\n" + tail, CommentMark(0), None)


def _missions(tree: Any) -> list[Any]:
    missions = tree.get("missions") if isinstance(tree, dict) else None
    return [m for m in missions if isinstance(m, dict)] if isinstance(missions, list) else []


def _list(node: Any, key: str) -> list[Any]:
    value = node.get(key) if isinstance(node, dict) else None
    return list(value) if isinstance(value, list) else []
