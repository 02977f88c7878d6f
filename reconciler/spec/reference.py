"""The field tables of docs/reference.md, generated from the spec models so they cannot drift.

Outside the loop: nothing in a tick calls this. docs/reference.md is hand-written prose
around marker comments (`<!-- fields:Roster -->` ... `<!-- /fields -->`); everything
between a pair is `render_fields(kind)` (or, for `<!-- fields:values -->`, the legend of
value types), and tests/spec/test_reference.py fails when the file holds anything else.
Types, patterns, bounds, defaults and which keys are required come from the models and
their JSON Schemas; what a field means comes from the model's own
`description=` where it has one, else from `NOTES` below (a test checks that every field
has exactly one of the two, so a new field cannot go undocumented).

Pure, like the rest of `spec/`: text in, text out. The test reads and checks the file,
and rewrites it when asked, through the drivers' atomic write:

    UPDATE_REFERENCE=1 pytest -n 0 tests/spec/test_reference.py
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from reconciler.spec import models
from reconciler.spec.models import KINDS, format_duration

#: The `id` of missions and tasks (models.py writes it inline).
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"

#: Markers around a generated block; `name` is a key of `KINDS`, or `VALUES`.
BEGIN = re.compile(r"^<!-- fields:(?P<name>[A-Za-z]+) -->$", re.MULTILINE)
VALUES = "values"
END = "<!-- /fields -->"

#: The patterns of models.py as value types: the label the tables use, and what it accepts.
#: A pattern not listed here is shown as it is.
VALUE_TYPES = {
    models.NAME_PATTERN: ("name", "lower-case letters, digits and `-`, starting with a letter; at most 40"),
    models.HOST_PATTERN: ("host name", "letters, digits, `.` and `-`, starting with a letter or digit; at most 63"),
    models.USER_PATTERN: ("user name", "a Linux user: lower-case letters, digits, `_` and `-`, not starting with a digit or `-`; at most 32"),
    models.SOCKET_PATTERN: ("socket name", "letters, digits, `_`, `.` and `-`, not starting with `.` or `-`; at most 64"),
    models.MODEL_PATTERN: ("model name", "letters, digits and `.` `_` `:` `/` `@` `-`, starting with a letter or digit; at most 64"),
    models.LANE_PATTERN: ("lane name", "lower-case letters, digits, `.`, `_` and `-`, starting with a letter or digit; at most 64"),
    TASK_ID_PATTERN: ("id", "letters, digits, `.`, `_` and `-`, starting with a letter or digit; at most 40"),
    models.BRANCH_PATTERN: ("branch template", "a git branch name (letters, digits, `.` `_` `/` `-`) with `{agent}`, `{task}`, `{lane}` placeholders"),
    models.ENV_NAME_PATTERN: ("variable name", "letters, digits and `_`, not starting with a digit; at most 128"),
    models.SHARE_PATTERN: ("percentage", "a share of an account's limit: `5%`, `12.5%`; at least 0%, below 100%"),
    models.DURATION_PATTERN: ("duration", "numbers with units `w`, `d`, `h`, `m`, `s`: `90s`, `5m`, `1h30m`, `7d`; more than 0s, at most 10 years"),
    models.TEXT_PATTERN: ("line of text", "one line that people read: no control characters (C0, C1, DEL), no bidirectional overrides, no U+2028/U+2029"),
    models.LINES_PATTERN: ("lines of text", "like a line of text, but tabs and line breaks are allowed"),
    models.NO_CONTROL_PATTERN: ("raw text", "paths and variable values: no C0 control character and no DEL"),
}

#: What a field means, for fields whose model gives no `description=` ("Model.field").
NOTES = {
    "Fleet.kind": "The document's kind.",
    "Fleet.name": "The fleet's name.",
    "Fleet.defaults": "Settings of every agent that does not set its own.",
    "Fleet.runtimes": "How each runtime is launched, by runtime name.",
    "FleetDefaults.socket_name": "tmux socket (`tmux -L NAME`) of every tenant without its own; absent: tmux's default socket.",
    "FleetDefaults.heartbeat_timeout": "Healthy means a heartbeat answered within this.",
    "FleetDefaults.runtime": "Runtime of an agent whose roster entry and role name none; must be a key of `runtimes`.",
    "FleetDefaults.model": "Model of an agent that names none; must be on the default runtime's ladder.",
    "Runtime.command": "Program and arguments, split like a shell line (nothing runs through a shell); "
    "required for adapters `command` and `stub`; with `claude` or `codex` only the program (default: the adapter's name); "
    "`{model}`, `{agent}`, `{tenant}`, `{role}` are filled in per argument.",
    "Role.kind": "The document's kind.",
    "Role.name": "The role's name; the file is `roles/<name>.yaml`.",
    "Role.persona": "Who the role's agents are, in words: runtimes with an adapter (claude, codex) get it as part of their system prompt; a change restarts the role's agents.",
    "Role.skills": "What the role is good at, one line each; runtimes with an adapter get them after the persona, as a list.",
    "Role.defaults": "What the role's agents inherit: below an agent's own keys, above fleet.yaml's `defaults`.",
    "RoleDefaults.runtime": "As the agent's `runtime`.",
    "RoleDefaults.model": "As the agent's `model` (used when the agent's runtime is this runtime, or none is given).",
    "RoleDefaults.lifecycle": "As the agent's `lifecycle`.",
    "RoleDefaults.workdir": "As the agent's `workdir`.",
    "Roster.kind": "The document's kind.",
    "Roster.tenant": "Must equal the folder name, `tenants/<tenant>/`.",
    "Roster.host": "Host of this tenant's agents that do not name one.",
    "Roster.user": "The Linux user the tenant's agents run as; absent: whoever runs fleet.",
    "Roster.socket_name": "tmux socket of this tenant; absent: the fleet default.",
    "Roster.agents": "The tenant's agents: exactly one `orchestrator`, at least one `enhancer`.",
    "Agent.role": "The agent's role: `orchestrator`, `enhancer`, or any other name (a file of `roles/` gives it defaults).",
    "Agent.alias": "Presentation only (status, TASKS.md).",
    "Agent.runtime": "A runtime of fleet.yaml; default: the role's, else the fleet's.",
    "Agent.model": "A model on the runtime's ladder; default: the role's, else the fleet's, else the ladder's first.",
    "Agent.lane": "The lane (stream of work) an ephemeral worker serves.",
    "Agent.workdir": "The pane's working folder: absolute, or under `~/` (the tenant user's home); absent: that home.",
    "Agent.host": "Overrides the roster's `host`.",
    "Budget.kind": "The document's kind.",
    "Budget.tenant": "Must equal the folder name, `tenants/<tenant>/`.",
    "Budget.pacing": "`even-spread` keeps each account on its even pace; `rapid` spends ahead and needs `authorized_by`.",
    "Budget.accounts": "The provider accounts the tenant's agents spend; names are unique.",
    "Budget.concurrency": "At most this many agents running at once (core agents always run; workers queue).",
    "Budget.policy": "Tuning of the pacing policy (see below the tables); absent: today's values.",
    "Account.name": "The account's name, unique in the tenant (usage records are `usage/<name>.json`).",
    "Account.provider": "Who sells it, e.g. `anthropic`, `openai`.",
    "Account.runtime": "The runtime of fleet.yaml whose agents spend this account.",
    "Account.regime": "`subscription`: usage against a limit in a rolling window; `api`: metered, with a hard dollar ceiling.",
    "Account.window": "Subscription: the rolling window's length (required).",
    "Account.reset_at": "When the window resets next, as far as you know.",
    "Account.reset_confidence": "How sure `reset_at` is.",
    "Account.hard_cap_usd": "API: the dollar ceiling per `period` (required).",
    "Account.period": "API: the period the ceiling applies to (required).",
    "Tasks.kind": "The document's kind.",
    "Tasks.tenant": "Must equal the folder name, `tenants/<tenant>/`.",
    "Tasks.missions": "The tenant's missions, each a list of tasks.",
    "Mission.id": "Unique among the tenant's missions.",
    "Mission.title": "What the mission is.",
    "Mission.tasks": "The mission's tasks.",
    "Task.id": "Unique among all the tenant's tasks.",
    "Task.title": "What the task is.",
    "Task.agent": "An agent of the tenant's roster that works on it.",
    "Task.projected_tokens": "Expected spend in tokens; TASKS.md sets the learned spend against it.",
    "Task.urgency": "Which queued workers start first when slots free.",
}


def _type_descriptions() -> frozenset[str]:
    """Descriptions that belong to a shared type (Name, EnvName), not to one field."""
    found = set()
    for alias in (models.Name, models.EnvName):
        for meta in typing.get_args(alias)[1:]:
            if isinstance(meta, FieldInfo) and meta.description:
                found.add(meta.description)
    return frozenset(found)


_TYPE_DESCRIPTIONS = _type_descriptions()


def own_description(field: FieldInfo) -> str | None:
    """The field's own `description=`, not the one its type carries."""
    if field.description and field.description not in _TYPE_DESCRIPTIONS:
        return " ".join(field.description.split())
    return None


def nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """`model` and every model its fields hold, in the order fields name them."""
    found: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                for field in annotation.model_fields.values():
                    visit(field.annotation)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(model)
    return found


def anchor(model: type[BaseModel]) -> str:
    return f"fields-{model.__name__.lower()}"


def _cell(text: str) -> str:
    """A table cell: a `|`, even inside backticks, would start a new column."""
    return text.replace("|", "\\|").replace("\n", " ")


def describe_type(schema: dict[str, Any]) -> str:
    """One JSON Schema (of a property) in words, e.g. `list of [Agent](#fields-agent), at least 1`."""
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s != {"type": "null"}]
        return " or ".join(describe_type(s) for s in options)
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#fields-{name.lower()})"
    if "const" in schema:
        return f"`{schema['const']}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        text = f"list of {describe_type(schema.get('items', {}))}"
        return text + _bounds(schema, "minItems", "maxItems", "item")
    if kind == "object":
        return _describe_map(schema)
    if kind == "string":
        return _describe_string(schema)
    if kind in ("integer", "number"):
        words = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
        limits = [f"{sign} {schema[key]}" for key, sign in words.items() if key in schema]
        return f"{kind}{' ' + ', '.join(limits) if limits else ''}"
    return str(kind or "any value")


def _describe_map(schema: dict[str, Any]) -> str:
    if isinstance(schema.get("additionalProperties"), dict):
        keys, values = schema.get("propertyNames", {}), schema["additionalProperties"]
    elif schema.get("patternProperties"):
        pattern, values = next(iter(schema["patternProperties"].items()))
        keys = {"type": "string", "pattern": pattern}
    else:
        return "mapping"
    key_words = _describe_string(keys) if keys.get("pattern") else "string"
    return f"mapping of {key_words} to {describe_type(values)}" + _bounds(schema, "minProperties", "maxProperties", "entry")


def _describe_string(schema: dict[str, Any]) -> str:
    if schema.get("format") == "date-time":
        return "time with a zone (ISO 8601, e.g. `2026-11-30T00:00:00Z`)"
    pattern = schema.get("pattern")
    text = VALUE_TYPES[pattern][0] if pattern in VALUE_TYPES else f"string matching `{pattern}`" if pattern else "string"
    return text + _bounds(schema, "minLength", "maxLength", "character")


PLURAL = {"item": "items", "entry": "entries", "character": "characters"}


def _bounds(schema: dict[str, Any], low: str, high: str, unit: str) -> str:
    parts = []
    if schema.get(low, 0) > 1 or (schema.get(low) == 1 and unit != "character"):
        parts.append(f"at least {schema[low]}")
    if high in schema:
        parts.append(f"at most {schema[high]} {PLURAL[unit]}")
    return f" ({', '.join(parts)})" if parts else ""


def describe_default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "absent"
    if isinstance(value, timedelta):
        return f"`{format_duration(value)}`"
    if any(getattr(m, "func", None) is models.format_fraction for m in field.metadata):
        return f"`{models.format_fraction(value)}`"
    if isinstance(value, BaseModel):
        return "its defaults"
    if isinstance(value, (list, dict)) and not value:
        return "`[]`" if isinstance(value, list) else "`{}`"
    return f"`{value}`"


def field_rows(model: type[BaseModel], schema: dict[str, Any]) -> Iterator[str]:
    """One table row per field of `model`, in declaration order; `schema` is its JSON Schema."""
    properties = schema["properties"]
    for name, field in model.model_fields.items():
        meaning = own_description(field) or NOTES.get(f"{model.__name__}.{name}", "")
        cells = [f"`{name}`", describe_type(properties[name]), describe_default(field), meaning]
        yield "| " + " | ".join(_cell(c) for c in cells) + " |"


def render_fields(kind: str) -> str:
    """The generated block for one kind: a table per model, the kind's own first."""
    top = KINDS[kind]
    schema = top.model_json_schema()
    out: list[str] = []
    for model in nested_models(top):
        own = schema if model is top else schema["$defs"][model.__name__]
        doc = model.__dict__.get("__doc__")
        out += [f'<a id="{anchor(model)}"></a>', "", f"**{model.__name__}**" + (f": {' '.join(doc.split())}" if doc else ""), ""]
        out += ["| field | type | default | meaning |", "|---|---|---|---|", *field_rows(model, own), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def render_value_types() -> str:
    """The legend of the labels the field tables use for patterned strings."""
    rows = [f"| {_cell(label)} | {_cell(words)} | `{_cell(pattern)}` |" for pattern, (label, words) in VALUE_TYPES.items()]
    return "\n".join(["| type | accepts | pattern |", "|---|---|---|", *rows]) + "\n"


def render_block(name: str) -> str:
    """What goes between `<!-- fields:NAME -->` and `<!-- /fields -->`: a kind's tables, or `values`."""
    if name == VALUES:
        return render_value_types()
    if name not in KINDS:
        raise ValueError(f"<!-- fields:{name} -->: no such block; use {VALUES} or one of {', '.join(KINDS)}")
    return render_fields(name)


def update(text: str) -> str:
    """`text` with every marker block replaced by its generated table; markers are kept."""
    out, pos = [], 0
    for begin in BEGIN.finditer(text):
        name = begin["name"]
        end = text.find(END, begin.end())
        if end < 0:
            raise ValueError(f"<!-- fields:{name} --> has no {END} after it")
        out += [text[pos:begin.end()], "\n", render_block(name)]
        pos = end
    out.append(text[pos:])
    return "".join(out)
