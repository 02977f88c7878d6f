"""Hostile values, and every field of every spec kind to throw them at.

`spec_fields()` walks the pydantic models of `reconciler/spec/models.py` (KINDS)
recursively, so a field added to a model is attacked without a change here. `FULL` is
a valid repository that sets every field (`test_full_repo_sets_every_field` keeps it
so), and `with_value` puts one hostile value into one field of it: a scalar replaced, a
mapping key renamed, a list's first item replaced. The files are written by a YAML
dumper, so the loader receives exactly the hostile string, whatever it contains.
"""

from __future__ import annotations

import copy
import io
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Union, get_args, get_origin

from pydantic import BaseModel
from ruamel.yaml import YAML

from reconciler.spec.models import KINDS

#: Stands for a path in payloads; `hostile_values` puts a real one in its place. A payload
#: that a shell or tmux ever ran would create that file.
PWNED = "@PWNED@"
BIG = 10 * 1024


class Hostile(NamedTuple):
    test_id: str
    value: str


def hostile_values(pwned: Path) -> list[Hostile]:
    """Shell, tmux, systemd, terminal and YAML syntax; control characters; unicode; 10 KB."""
    big = ("'\"$(touch @PWNED@) `touch @PWNED@` ; #{session_name} %n ${HOME} \\ " * 200).replace(PWNED, str(pwned))
    table = [
        Hostile("shell-rm", "; rm -rf ~"),
        Hostile("shell-command-substitution", "$(touch @PWNED@)"),
        Hostile("shell-backticks", "`touch @PWNED@`"),
        Hostile("shell-chain", "x; touch @PWNED@ && touch @PWNED@ | tee @PWNED@"),
        Hostile("shell-variables", "$HOME ${HOME} $$ $0"),
        Hostile("quotes-and-backslash", "'\"\\"),
        Hostile("glob", "*?[a-z]"),
        Hostile("trailing-semicolon", "x ;"),
        Hostile("lone-semicolon", ";"),
        Hostile("escaped-semicolon", "a\\;"),
        Hostile("systemd-specifiers", "%n%h%%"),
        Hostile("tmux-format", "#{session_name}#(touch @PWNED@)##"),
        Hostile("format-placeholders", "{model}{0}{__class__}"),
        Hostile("rich-markup", "[bold red]x[/] [link=file:///etc/passwd]y[/link]"),
        Hostile("tilde", "~"),
        Hostile("newline", "a\nb"),
        Hostile("carriage-return", "a\rb"),
        Hostile("tab", "a\tb"),
        Hostile("nul", "a\x00b"),
        Hostile("escape-sequences", "\x1b[31mred\x1b]0;title\x07"),
        Hostile("del", "a\x7fb"),
        Hostile("c1-next-line", "a\x85b"),
        Hostile("line-separator", "a\u2028b"),
        Hostile("rtl-override", "abc\u202edcba"),
        Hostile("emoji", "😀🚀"),
        Hostile("combining-marks", "e\u0301\u0338"),
        Hostile("non-bmp", "\U00010348\U0001d518"),
        Hostile("cjk", "日本語"),
        Hostile("leading-dash", "-rf"),
        Hostile("long-option", "--help"),
        Hostile("spaces", "  two  words  "),
        Hostile("empty", ""),
        Hostile("dot-dot", "../../etc/passwd"),
        Hostile("absolute", "/etc/passwd"),
        Hostile("4-kb", big[:4096]),  # the longest env value, path or command a spec may hold
        Hostile("10-kb", big[:BIG]),
    ]
    return [Hostile(h.test_id, h.value.replace(PWNED, str(pwned))) for h in table]


# --- the repository every field lives in --------------------------------------------------

KIND_FILES = {
    "Fleet": "fleet.yaml",
    "Role": "roles/enhancer.yaml",
    "Roster": "tenants/demo/roster.yaml",
    "Budget": "tenants/demo/budget.yaml",
    "Tasks": "tenants/demo/tasks.yaml",
}
V1 = "fleet.mosaicstack.dev/v1"

#: A valid repository with every field set: the orchestrator carries every agent field,
#: the enhancer (no keys of its own) takes every default of its role.
FULL: dict[str, dict[str, Any]] = {
    "fleet.yaml": {
        "apiVersion": V1, "kind": "Fleet", "name": "full",
        "defaults": {"socket_name": "full-sock", "heartbeat_timeout": "90s", "startup_grace": "30s",
                     "working_timeout": "30m", "usage_limit_retry": "15m", "runtime": "stub", "model": "stub-large"},
        "runtimes": {
            "stub": {"adapter": "stub", "command": "fleet-stub-agent --model {model}",
                     "ladder": ["stub-large", "stub-small"]},
            "alt": {"command": "alt-agent --model {model} --agent {agent}", "ladder": ["alt-1"]},
        },
        "downgrade": ["alt"],
        "register": {"url_from": {"file": "/etc/mosaic-fleet/register.url"}, "projection_lease": "10m"},
    },
    "roles/enhancer.yaml": {
        "apiVersion": V1, "kind": "Role", "name": "enhancer", "persona": "You improve the fleet.",
        "skills": ["planning"],
        "defaults": {"runtime": "stub", "model": "stub-small", "lifecycle": "core", "workdir": "/srv/fleet"},
    },
    "tenants/demo/roster.yaml": {
        "apiVersion": V1, "kind": "Roster", "tenant": "demo", "host": "demo", "user": "demo",
        "socket_name": "demo-sock",
        "agents": [
            {"name": "orchestrator", "role": "orchestrator", "alias": "Mos", "runtime": "stub",
             "model": "stub-large", "lifecycle": "core", "lane": "main", "workdir": "/srv/fleet/orchestrator",
             "host": "demo", "env": {"LOG_LEVEL": "info"},
             "env_from": [{"name": "API_KEY", "file": "~/.config/fleet/key"}, {"name": "GH_TOKEN", "env": "GH_SRC"}],
             "trust_workdir": True},
            {"name": "enhancer", "role": "enhancer"},
        ],
        "lanes": [
            {"name": "api", "role": "coder", "min": 0, "max": 2, "cooldown": "5m", "reuse": True, "runtime": "stub",
             "model": "stub-small", "workdir": "/srv/fleet/api", "host": "demo",
             "worktree": {"repo": "~/src/api", "branch": "fleet/{agent}/{task}"}, "env": {"LANE": "api"},
             "env_from": [{"name": "LANE_KEY", "file": "~/.config/fleet/lane-key"}, {"name": "LANE_GH", "env": "GH_SRC"}],
             "trust_workdir": True},
        ],
    },
    "tenants/demo/budget.yaml": {
        "apiVersion": V1, "kind": "Budget", "tenant": "demo", "pacing": "rapid", "authorized_by": "Ana",
        "accounts": [
            {"name": "stub-plan", "provider": "local", "runtime": "stub", "regime": "subscription", "window": "7d",
             "reset_at": "2026-11-30T00:00:00Z", "reset_confidence": "provider"},
            {"name": "alt-api", "provider": "local", "runtime": "alt", "regime": "api", "hard_cap_usd": 200,
             "period": "30d"},
        ],
        "concurrency": 4,
        "policy": {"tolerance": "5%", "margin": "5%", "reserve": "2%", "hysteresis": "30m"},
    },
    "tenants/demo/tasks.yaml": {
        "apiVersion": V1, "kind": "Tasks", "tenant": "demo",
        "missions": [{"id": "M1", "title": "First light", "tasks": [
            {"id": "T1", "title": "Say hello", "agent": "orchestrator", "projected_tokens": 1000, "urgency": "high",
             "state": "open"},
            {"id": "T2", "title": "Paginate", "lane": "api", "brief": "Paginate the list endpoint.\nKeep the API.",
             "depends_on": ["T1"], "projected_tokens": 2000},
        ]}],
    },
}


#: FULL sets one key of an exclusive pair inside an object; the other is attacked in a copy
#: of its file with the object at (file, path) replaced by this one.
ALTERNATES: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {
    ("fleet.yaml", ("register", "url_from")): {"env": "FLEET_REGISTER_URL"},
}


@dataclass(frozen=True)
class _Step:
    """A path step that is not a key or an index: `KEY` renames the mapping's first key to
    the hostile value, `EXTRA` adds an unknown key spelt as the hostile value."""

    shown: str


KEY = _Step("{key}")
EXTRA = _Step(".<unknown key>")
Step = str | int | _Step
#: A plain scalar that appears nowhere else: where it lands is where the field's line is.
SENTINEL = "HOSTILE-SENTINEL-7F3A"


@dataclass(frozen=True)
class Field:
    """One place a value can stand: the kind, its file, the steps from the document's root."""

    kind: str
    steps: tuple[Step, ...]

    @property
    def file(self) -> str:
        return KIND_FILES[self.kind]

    @property
    def is_key(self) -> bool:
        return bool(self.steps) and self.steps[-1] in (KEY, EXTRA)

    def __str__(self) -> str:
        """`Roster.agents[].env{key}`: `[]` an item, `{key}` a mapping's key."""
        words = [s.shown if isinstance(s, _Step) else "[]" if isinstance(s, int) else f".{s}" for s in self.steps]
        return self.kind + "".join(words)


def _strip(annotation: Any) -> Any:
    """`X | None` -> X and `Annotated[X, ...]` -> X, until neither is left."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(annotation) if a is not type(None)]
            if len(rest) != 1:
                return annotation
            annotation = rest[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _model_steps(model: type[BaseModel], data: Any, path: tuple[Step, ...]) -> Iterator[tuple[Step, ...]]:
    data = data if isinstance(data, Mapping) else {}
    yield (*path, EXTRA)
    for name, info in model.model_fields.items():
        yield from _steps(info.annotation, data.get(name), (*path, name))


def _steps(annotation: Any, data: Any, path: tuple[Step, ...]) -> Iterator[tuple[Step, ...]]:
    annotation = _strip(annotation)
    origin = get_origin(annotation)
    if _is_model(annotation):
        yield from _model_steps(annotation, data, path)
    elif origin is list:
        (item,) = get_args(annotation)
        item = _strip(item)
        items = data or []
        assert items, f"{path}: FULL must give this list an item"
        if not _is_model(item):
            yield from _steps(item, items[0], (*path, 0))
            return
        yield (*path, 0, EXTRA)
        for name, info in item.model_fields.items():
            # each field in the first item that sets it, so an exclusive pair is attacked apart
            at = next((i for i, entry in enumerate(items) if name in entry), 0)
            yield from _steps(info.annotation, items[at].get(name), (*path, at, name))
    elif origin is dict:
        assert data, f"{path}: FULL must give this mapping an entry"
        first = next(iter(data))
        yield (*path, KEY)
        yield from _steps(get_args(annotation)[1], data[first], (*path, first))
    else:
        yield path


def spec_fields() -> list[Field]:
    """Every leaf of every kind, every mapping key, and an unknown key in every mapping."""
    return [
        Field(kind, steps)
        for kind, model in KINDS.items()
        for steps in _model_steps(model, FULL[KIND_FILES[kind]], ())
    ]


def base_document(field: Field) -> dict[str, Any]:
    """A copy of `field`'s document from FULL, or of its variant in ALTERNATES when FULL
    sets the field's exclusive partner instead of the field."""
    doc = copy.deepcopy(FULL[field.file])
    for (file, path), replacement in ALTERNATES.items():
        steps = field.steps
        if file == field.file and steps[: len(path)] == path and len(steps) == len(path) + 1:
            node: Any = doc
            for step in path[:-1]:
                node = node[step]
            if steps[-1] not in node[path[-1]] and not isinstance(steps[-1], _Step):
                node[path[-1]] = copy.deepcopy(replacement)
    return doc


def with_value(field: Field, value: Any) -> dict[str, Any]:
    """A copy of `field`'s document (base_document) with `value` put at the field."""
    doc = base_document(field)
    node: Any = doc
    *head, last = field.steps
    if last is KEY:
        *head, parent = head
    for step in head:
        node = node.setdefault(step, {}) if isinstance(step, str) else node[step]
    if last is KEY:
        first = next(iter(node[parent]))
        node[parent] = {(value if k == first else k): v for k, v in node[parent].items()}
    elif last is EXTRA:
        node[value] = "x"
    else:
        node[last] = value
    return doc


def value_at(document: Any, field: Field) -> Any:
    """What a loaded model (or plain data) holds at `field`; a KEY step gives the first key."""
    node = document
    for step in field.steps:
        if isinstance(step, _Step):
            return next(iter(node))
        node = node[step] if isinstance(step, int) or isinstance(node, Mapping) else getattr(node, step)
    return node


def yaml_quoted(value: str) -> str:
    r"""`value` as a YAML double-quoted scalar on one line: what YAML cannot carry raw
    (controls, DEL, C1, the line and paragraph separators, BOM) is escaped.

    >>> print(yaml_quoted('say "hi"\\\n\x85\u2028é'))
    "say \"hi\"\\\u000a\u0085\u2028é"
    """
    out = []
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029, 0xFEFF):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def dump(document: Mapping[str, Any]) -> str:
    """YAML text for plain data (C emitter; the documents here are small and tame)."""
    yaml = YAML(typ="safe", pure=False)
    yaml.width = 4096
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(dict(document), out)
    return out.getvalue()


@cache
def _sentinel_lines(field: Field) -> tuple[str, ...]:
    return tuple(dump(with_value(field, SENTINEL)).split("\n"))


def field_text(field: Field, value: str) -> tuple[str, int]:
    """`field`'s file with `value` in the field, and the 1-based line the field is on.

    The document is dumped with SENTINEL in the field, then the sentinel is replaced by
    the value double-quoted on one line (a key in YAML's explicit `? KEY` form, which has
    no 1024-character limit), so the line is known whatever the value holds.
    """
    lines = list(_sentinel_lines(field))
    (at,) = [i for i, line in enumerate(lines) if SENTINEL in line]
    if field.is_key:
        indent, rest = lines[at].split(f"{SENTINEL}:", 1)
        assert not indent.strip(" -"), lines[at]
        lines[at] = f"{indent}? {yaml_quoted(value)}\n{' ' * len(indent)}:{rest}"
    else:
        lines[at] = lines[at].replace(SENTINEL, yaml_quoted(value))
    return "\n".join(lines), at + 1


def write_repo(root: Path, documents: Mapping[str, Mapping[str, Any]] = FULL) -> Path:
    for rel, document in documents.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump(document), encoding="utf-8")
    return root
