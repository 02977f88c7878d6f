"""The small value parsers of the spec models: durations and runtime command templates."""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.spec.models import MAX_DURATION_S, command_argv, format_duration, parse_duration

# --- durations ---------------------------------------------------------------------------


class DurationCase(NamedTuple):
    test_id: str
    text: str
    value: timedelta


DURATIONS = [
    DurationCase("seconds", "90s", timedelta(seconds=90)),
    DurationCase("minutes", "5m", timedelta(minutes=5)),
    DurationCase("hours-and-minutes", "1h30m", timedelta(hours=1, minutes=30)),
    DurationCase("days", "7d", timedelta(days=7)),
    DurationCase("weeks", "2w", timedelta(days=14)),
    DurationCase("every-unit", "1w1d1h1m1s", timedelta(days=8, hours=1, minutes=1, seconds=1)),
    DurationCase("units-in-any-order", "30m1h", timedelta(minutes=90)),
    DurationCase("leading-zeros", "007s", timedelta(seconds=7)),
]


@pytest.mark.parametrize("case", DURATIONS, ids=[c.test_id for c in DURATIONS])
def test_parse_duration(case: DurationCase) -> None:
    assert parse_duration(case.text) == case.value


def test_parse_duration_passes_a_timedelta_through() -> None:
    assert parse_duration(timedelta(minutes=3)) == timedelta(minutes=3)


class BadDuration(NamedTuple):
    test_id: str
    value: object
    says: str


BAD_DURATIONS = [
    BadDuration("words", "90 seconds", "'90 seconds' is not a duration; write a number with a unit"),
    BadDuration("no-unit", "90", "'90' is not a duration"),
    BadDuration("number-not-text", 90, "90 is not a duration"),
    BadDuration("empty", "", "'' is not a duration"),
    BadDuration("fraction", "1.5h", "'1.5h' is not a duration"),
    BadDuration("negative", "-5m", "'-5m' is not a duration"),
    BadDuration("upper-case-unit", "5M", "'5M' is not a duration"),
    BadDuration("inner-space", "1h 30m", "'1h 30m' is not a duration"),
    BadDuration("none", None, "None is not a duration"),
    BadDuration("zero", "0s", "'0s' is zero; a duration must be longer than 0s"),
    BadDuration("zero-in-parts", "0h0m", "'0h0m' is zero"),
    BadDuration(
        "over-ten-years", "99999999999w", "'99999999999w' is longer than 10 years; use a shorter duration"
    ),
]


@pytest.mark.parametrize("case", BAD_DURATIONS, ids=[c.test_id for c in BAD_DURATIONS])
def test_parse_duration_rejects(case: BadDuration) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration(case.value)
    assert case.says in str(raised.value)


#: The largest unit that divides the duration exactly; weeks are spelt in days.
FORMATS = [
    DurationCase("seconds", "90s", timedelta(seconds=90)),
    DurationCase("whole-minutes", "90m", timedelta(seconds=5400)),
    DurationCase("whole-hours", "2h", timedelta(hours=2)),
    DurationCase("weeks-as-days", "14d", timedelta(weeks=2)),
    DurationCase("mixed-units-as-seconds", "93784s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    DurationCase("zero", "0s", timedelta(0)),
    DurationCase("sub-second-dropped", "1s", timedelta(seconds=1, milliseconds=500)),
]


@pytest.mark.parametrize("case", FORMATS, ids=[c.test_id for c in FORMATS])
def test_format_duration(case: DurationCase) -> None:
    assert format_duration(case.value) == case.text


@given(st.integers(min_value=1, max_value=MAX_DURATION_S).map(lambda s: timedelta(seconds=s)))
def test_format_then_parse_is_identity(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


# --- runtime command templates -----------------------------------------------------------

VALUES = {"model": "opus", "agent": "coder0-0", "tenant": "jarvis", "role": "coder"}


class ArgvCase(NamedTuple):
    test_id: str
    template: str
    values: dict[str, str]
    argv: tuple[str, ...]


ARGV = [
    ArgvCase("plain", "claude --model {model}", VALUES, ("claude", "--model", "opus")),
    ArgvCase(
        "every-placeholder",
        "run {tenant}/{agent} --role={role} -m {model}",
        VALUES,
        ("run", "jarvis/coder0-0", "--role=coder", "-m", "opus"),
    ),
    ArgvCase("no-placeholder", "fleet-stub-agent", VALUES, ("fleet-stub-agent",)),
    ArgvCase(
        "quoted-argument",
        "sh -c 'exec agent --model {model}'",
        VALUES,
        ("sh", "-c", "exec agent --model opus"),
    ),
    ArgvCase("escaped-brace", "agent --json {{}} {model}", VALUES, ("agent", "--json", "{}", "opus")),
    ArgvCase(
        "value-with-spaces",
        "agent --model {model}",
        {**VALUES, "model": "big model"},
        ("agent", "--model", "big model"),
    ),
    ArgvCase(
        "value-with-semicolon",
        "agent --model {model}",
        {**VALUES, "model": "opus; rm -rf ~"},
        ("agent", "--model", "opus; rm -rf ~"),
    ),
    ArgvCase("value-with-quotes", "agent {agent}", {**VALUES, "agent": 'it\'s "x"'}, ("agent", 'it\'s "x"')),
    ArgvCase(
        "value-is-not-expanded-again", "agent {model}", {**VALUES, "model": "{tenant}"}, ("agent", "{tenant}")
    ),
    ArgvCase(
        "empty-value-stays-an-argument",
        "agent --model {model} --x",
        {**VALUES, "model": ""},
        ("agent", "--model", "", "--x"),
    ),
]


@pytest.mark.parametrize("case", ARGV, ids=[c.test_id for c in ARGV])
def test_command_argv(case: ArgvCase) -> None:
    assert command_argv(case.template, case.values) == case.argv


@given(st.text())
def test_a_value_is_always_exactly_one_argument(value: str) -> None:
    assert command_argv("agent --model {model} --tenant {tenant}", {**VALUES, "model": value}) == (
        "agent",
        "--model",
        value,
        "--tenant",
        "jarvis",
    )


class BadTemplate(NamedTuple):
    test_id: str
    template: str
    says: str


BAD_TEMPLATES = [
    BadTemplate(
        "unknown-placeholder",
        "claude --model {modle}",
        "unknown placeholder {modle}; use one of {agent}, {model}, {role}, {tenant}",
    ),
    BadTemplate("positional-placeholder", "claude --model {}", "unknown placeholder {}"),
    BadTemplate("attribute-placeholder", "claude {model.__class__}", "unknown placeholder {model.__class__}"),
    BadTemplate("unbalanced-quote", "claude --model '{model}", "does not split into arguments"),
    BadTemplate("stray-brace", "claude --model {model", "stray brace"),
    BadTemplate("empty", "   ", "command is empty"),
]


@pytest.mark.parametrize("case", BAD_TEMPLATES, ids=[c.test_id for c in BAD_TEMPLATES])
def test_command_argv_rejects(case: BadTemplate) -> None:
    with pytest.raises(ValueError) as raised:
        command_argv(case.template, VALUES)
    assert case.says in str(raised.value)


@pytest.mark.parametrize("template", ["claude {model!r}", "claude {model:>20}", "claude {model:{size}}"])
def test_command_argv_rejects_conversions_and_format_specs(template: str) -> None:
    with pytest.raises(ValueError, match="placeholder"):
        command_argv(template, VALUES)
