"""Pure parsers of what the runtimes already write about their own usage.

The ingesters (engine/ingest.py) read three kinds of files and hand their text here:
Codex rollouts (`$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl`, whose `token_count`
events carry the provider's rate limits and the session's token totals), Claude Code
transcripts (`~/.claude/projects/**/*.jsonl`, per-message token usage), and the records
the `fleet-claude-statusline` hook saves from Claude Code's status-line input. Nothing
here touches the disk or the clock; a line that cannot be read becomes a problem string
(`line N: what`), never an exception, because these files belong to other programs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

_T = TypeVar("_T")

#: Codex's windows when an event omits `window_minutes`: primary 5 h, secondary a week.
CODEX_DEFAULT_WINDOWS = {"primary": timedelta(hours=5), "secondary": timedelta(days=7)}
#: Claude Code's status-line windows, by their key under `rate_limits`.
CLAUDE_WINDOWS = {"five_hour": timedelta(hours=5), "seven_day": timedelta(days=7)}
#: A rate window matches an account's window only within this factor (a 5 h window
#: says little about a 30 d budget).
MAX_WINDOW_RATIO = 2.0
#: Claude Code's placeholder model for messages it made up itself (no API call).
SYNTHETIC_MODEL = "<synthetic>"


@dataclass(frozen=True, slots=True)
class RateWindow:
    """One provider rate-limit window: how much of it is used and when it resets."""

    name: str
    used_fraction: float
    window: timedelta | None
    reset_at: datetime | None


@dataclass(frozen=True, slots=True)
class RateReading:
    """Every window the provider reported at one moment."""

    observed_at: datetime
    windows: tuple[RateWindow, ...]
    plan: str | None = None


def best_window(windows: Iterable[RateWindow], account_window: timedelta) -> RateWindow | None:
    """The window whose length is nearest the account's (by ratio), or None if none is close.

    Nearness is |ln(window / account_window)|, so 5 h vs 7 d is judged by proportion,
    not by hours; ties go to the longer window. A window more than `MAX_WINDOW_RATIO`
    off is no match: the account's budget would be paced on the wrong clock.

    >>> w = [RateWindow("primary", 0.1, timedelta(hours=5), None),
    ...      RateWindow("secondary", 0.3, timedelta(days=7), None)]
    >>> best_window(w, timedelta(days=7)).name, best_window(w, timedelta(hours=4)).name
    ('secondary', 'primary')
    >>> best_window(w, timedelta(days=30)) is None
    True
    """
    target = account_window.total_seconds()
    scored = [
        (abs(math.log(w.window.total_seconds() / target)), -w.window.total_seconds(), w)
        for w in windows
        if w.window is not None and w.window.total_seconds() > 0
    ]
    if not scored or target <= 0:
        return None
    distance, _, window = min(scored, key=lambda item: item[:2])
    return window if distance <= math.log(MAX_WINDOW_RATIO) else None


# --- Codex rollouts --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodexSession:
    """What one rollout file says: who ran where, the last totals, the last rate limits.

    `total_tokens` is the session's cumulative `total_token_usage.total_tokens` from the
    latest `token_count` event whose `info` is not null; `limits` comes from the latest
    event that carries `rate_limits` (an `info: null` event still does).
    """

    session: str
    cwd: str | None = None
    model: str = "unknown"
    total_tokens: int = 0
    usage: Mapping[str, int] = field(default_factory=dict)
    limits: RateReading | None = None
    last_event: datetime | None = None


def parse_codex_rollout(text: str, fallback_session: str,
                        start: CodexSession | None = None) -> tuple[CodexSession, list[str]]:
    """Fold one rollout's lines into a `CodexSession`; unreadable lines become problems.

    Lines are read in file order (Codex appends), so the last `turn_context` names the
    model and the last `token_count` gives the totals and limits. `start` is the fold of
    the lines before `text` (an ingest cursor's), so only appended lines are parsed.

    >>> rollout = "\\n".join([
    ...   '{"timestamp":"2026-11-25T11:00:00Z","type":"session_meta","payload":{"id":"s1","cwd":"/src"}}',
    ...   '{"timestamp":"2026-11-25T11:00:01Z","type":"turn_context","payload":{"model":"gpt-5.5"}}',
    ...   '{"timestamp":"2026-11-25T11:00:02Z","type":"event_msg","payload":{"type":"token_count",'
    ...   '"info":{"total_token_usage":{"input_tokens":900,"output_tokens":100,"total_tokens":1000}},'
    ...   '"rate_limits":{"primary":{"used_percent":12.5,"window_minutes":300,"resets_at":1795611600}}}}',
    ...   'not json'])
    >>> session, problems = parse_codex_rollout(rollout, "file-stem")
    >>> session.session, session.model, session.total_tokens, session.limits.windows[0].used_fraction
    ('s1', 'gpt-5.5', 1000, 0.125)
    >>> problems
    ['line 4: not JSON (Expecting value, column 1)']
    """
    session = start if start is not None else CodexSession(session=fallback_session)
    problems: list[str] = []
    for number, record in _json_lines(text, problems):
        try:
            session = _fold_codex(session, record)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    return session, problems


def _fold_codex(session: CodexSession, record: Mapping[str, object]) -> CodexSession:
    kind, payload = record.get("type"), record.get("payload")
    if not isinstance(payload, dict):
        return session
    if kind == "session_meta":
        return replace(session, session=_str_or(payload.get("id"), session.session),
                       cwd=_str_or(payload.get("cwd"), session.cwd))
    if kind == "turn_context":
        return replace(session, model=_str_or(payload.get("model"), session.model),
                       cwd=_str_or(payload.get("cwd"), session.cwd))
    if kind == "event_msg" and payload.get("type") == "token_count":
        return _fold_token_count(session, _event_time(record), payload)
    return session


def _fold_token_count(session: CodexSession, ts: datetime, payload: Mapping[str, object]) -> CodexSession:
    info, limits = payload.get("info"), payload.get("rate_limits")
    if isinstance(info, dict) and isinstance(info.get("total_token_usage"), dict):
        usage = _int_fields(info["total_token_usage"], "info.total_token_usage")
        total = usage.get("total_tokens", usage.get("input_tokens", 0) + usage.get("output_tokens", 0))
        session = replace(session, usage=usage, total_tokens=total)
    if isinstance(limits, dict):
        session = replace(session, limits=_codex_limits(limits, ts))
    return replace(session, last_event=ts)


def _codex_limits(limits: Mapping[str, object], ts: datetime) -> RateReading:
    windows = []
    for name, default in CODEX_DEFAULT_WINDOWS.items():
        raw = limits.get(name)
        if not isinstance(raw, dict):
            continue
        minutes = _number(raw.get("window_minutes"))
        length = timedelta(minutes=minutes) if minutes is not None and minutes > 0 else default
        windows.append(RateWindow(name, _fraction(raw.get("used_percent"), f"rate_limits.{name}.used_percent"),
                                  length, _codex_reset(raw, ts, name)))
    plan = limits.get("plan_type")
    return RateReading(ts, tuple(windows), plan if isinstance(plan, str) else None)


def _codex_reset(raw: Mapping[str, object], ts: datetime, name: str) -> datetime | None:
    """`resets_at` (Unix seconds, current builds) or `resets_in_seconds` (older builds)."""
    if raw.get("resets_at") is not None:
        return _moment(raw["resets_at"], f"rate_limits.{name}.resets_at")
    raw_seconds = raw.get("resets_in_seconds")
    if raw_seconds is None:
        return None
    seconds = _number(raw_seconds)
    if seconds is None or seconds < 0:
        raise ValueError(f"rate_limits.{name}.resets_in_seconds must be a number of seconds, got {_show(raw_seconds)}")
    return ts + timedelta(seconds=seconds)


# --- Claude Code transcripts -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaudeUsage:
    """The token usage of one assistant message (one API request) in a transcript."""

    message_id: str
    request_id: str
    session: str
    model: str
    ts: datetime | None
    cwd: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        """What identifies one request across lines and files: message id + request id."""
        return (self.message_id, self.request_id)

    @property
    def total_tokens(self) -> int:
        return (self.input_tokens + self.output_tokens
                + self.cache_creation_input_tokens + self.cache_read_input_tokens)


_CLAUDE_COUNTS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def parse_claude_transcript(text: str, fallback_session: str) -> tuple[list[ClaudeUsage], list[str]]:
    """Every line of a transcript that carries `message.usage`, in file order.

    Lines without usage (user turns, summaries, tool results) are skipped silently;
    messages Claude Code synthesised itself (model `<synthetic>`) cost nothing and are
    skipped too. Duplicates are kept here; `dedupe_claude` folds them.

    >>> line = ('{"sessionId":"s1","requestId":"req_1","timestamp":"2026-11-25T12:00:00Z","cwd":"/src",'
    ...         '"message":{"id":"msg_1","model":"claude-opus-4-1","usage":{"input_tokens":4,'
    ...         '"output_tokens":10,"cache_read_input_tokens":100}}}')
    >>> usages, problems = parse_claude_transcript(line + "\\n" + line, "stem")
    >>> [(u.key, u.total_tokens) for u in usages], problems
    ([(('msg_1', 'req_1'), 114), (('msg_1', 'req_1'), 114)], [])
    """
    usages: list[ClaudeUsage] = []
    problems: list[str] = []
    for number, record in _json_lines(text, problems):
        try:
            usage = _claude_usage(record, fallback_session)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if usage is not None:
            usages.append(usage)
    return usages, problems


def _claude_usage(record: Mapping[str, object], fallback_session: str) -> ClaudeUsage | None:
    message = record.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("usage"), dict):
        return None
    model = _str_or(message.get("model"), "unknown")
    if model == SYNTHETIC_MODEL:
        return None
    counts = _int_fields(message["usage"], "message.usage")
    return ClaudeUsage(
        message_id=_str_or(message.get("id"), _str_or(record.get("uuid"), "")),
        request_id=_str_or(record.get("requestId"), ""),
        session=_str_or(record.get("sessionId"), fallback_session),
        model=model,
        ts=_event_time(record) if record.get("timestamp") is not None else None,
        cwd=_str_or(record.get("cwd"), None),
        input_tokens=counts.get("input_tokens", 0),
        output_tokens=counts.get("output_tokens", 0),
        cache_creation_input_tokens=counts.get("cache_creation_input_tokens", 0),
        cache_read_input_tokens=counts.get("cache_read_input_tokens", 0),
        cost_usd=_number(record.get("costUSD")),
    )


def dedupe_claude(usages: Iterable[ClaudeUsage]) -> list[ClaudeUsage]:
    """One entry per (message id, request id), first-seen order.

    Claude Code writes one line per content block of a streamed message, each with the
    message's usage, and a resumed session copies earlier lines into its new file; so a
    request is counted once. Copies are merged field by field with the larger count,
    since an early line of a stream may carry a partial `output_tokens`.
    """
    merged: dict[tuple[str, str], ClaudeUsage] = {}
    for usage in usages:
        seen = merged.get(usage.key)
        if seen is None:
            merged[usage.key] = usage
            continue
        costs = [c for c in (seen.cost_usd, usage.cost_usd) if c is not None]
        merged[usage.key] = replace(
            seen,
            input_tokens=max(seen.input_tokens, usage.input_tokens),
            output_tokens=max(seen.output_tokens, usage.output_tokens),
            cache_creation_input_tokens=max(seen.cache_creation_input_tokens, usage.cache_creation_input_tokens),
            cache_read_input_tokens=max(seen.cache_read_input_tokens, usage.cache_read_input_tokens),
            cost_usd=max(costs) if costs else None,
        )
    return list(merged.values())


@dataclass(frozen=True, slots=True)
class ClaudeSum:
    """One (session, model)'s spend within one transcript file, folded line by line."""

    session: str
    model: str
    tokens: int = 0
    usd: float | None = None
    cwd: str | None = None  # the first one the session reported
    ts: datetime | None = None  # the latest message's


@dataclass(frozen=True, slots=True)
class ClaudeFold:
    """What the lines of one transcript read so far add up to: an ingest cursor's state.

    `recent` holds the last few messages (streamed lines of one message are adjacent), so
    a later line of the same message adds only its growth; the file's older messages are
    not kept: the fold's size does not grow with the file.
    """

    sums: tuple[ClaudeSum, ...] = ()
    recent: tuple[ClaudeUsage, ...] = ()


#: How many of a file's latest messages a fold remembers for merging streamed lines.
RECENT_MESSAGES = 4


def fold_claude(fold: ClaudeFold, usages: Iterable[ClaudeUsage],
                seen: Callable[[tuple[str, str]], bool] = lambda _key: False) -> tuple[ClaudeFold, list[ClaudeUsage]]:
    """Add a transcript's next messages to its fold; returns the fold and the new messages.

    A message among the fold's recent ones adds only what its new line grew by (counts
    merged by maximum, as `dedupe_claude` does); one `seen` elsewhere (a resumed session
    copying earlier messages into a new file) adds nothing.

    >>> def u(mid, out):
    ...     return ClaudeUsage(mid, "r", "s1", "opus", None, "/src", input_tokens=10, output_tokens=out)
    >>> fold, new = fold_claude(ClaudeFold(), [u("m1", 1), u("m1", 5), u("m2", 5)])
    >>> [(s.session, s.model, s.tokens) for s in fold.sums], [n.message_id for n in new]
    ([('s1', 'opus', 30)], ['m1', 'm2'])
    >>> fold, new = fold_claude(fold, [u("m0", 5)], seen=lambda key: key == ("m0", "r"))
    >>> fold.sums[0].tokens, new
    (30, [])
    """
    sums = {(s.session, s.model): s for s in fold.sums}
    recent = list(fold.recent)
    new: list[ClaudeUsage] = []
    for usage in usages:
        before = next((r for r in recent if r.key == usage.key), None)
        if before is None and seen(usage.key):
            continue
        merged = usage if before is None else dedupe_claude([before, usage])[0]
        tokens = merged.total_tokens - (before.total_tokens if before else 0)
        usd = (merged.cost_usd or 0.0) - ((before.cost_usd or 0.0) if before else 0.0)
        key = (merged.session, merged.model)
        old = sums.get(key) or ClaudeSum(merged.session, merged.model, cwd=merged.cwd)
        costs = old.usd if merged.cost_usd is None else round((old.usd or 0.0) + usd, 6)
        stamps = [t for t in (old.ts, merged.ts) if t is not None]
        sums[key] = replace(old, tokens=old.tokens + tokens, usd=costs, cwd=old.cwd or merged.cwd,
                            ts=max(stamps) if stamps else None)
        if before is None:
            new.append(merged)
        recent = [*[r for r in recent if r.key != merged.key][-(RECENT_MESSAGES - 1):], merged]
    return ClaudeFold(tuple(sums.values()), tuple(recent)), new


# --- the status-line hook's record -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatuslineRecord:
    """What `fleet-claude-statusline` saved from one Claude Code status-line call."""

    tenant: str
    agent: str
    reading: RateReading
    model: str | None = None
    session_id: str | None = None


def parse_statusline_record(text: str) -> StatuslineRecord:
    """Decode a saved status-line record (reconciler/hooks/claude_statusline.py writes it).

    >>> rec = parse_statusline_record('{"tenant": "jarvis", "agent": "orchestrator",'
    ...   ' "received_at": "2026-11-25T12:00:00Z", "rate_limits": {"seven_day":'
    ...   ' {"used_percentage": 41.2, "resets_at": 1795996800}}}')
    >>> [(w.name, w.used_fraction, w.window.days) for w in rec.reading.windows]
    [('seven_day', 0.412, 7)]
    """
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    tenant, agent = record.get("tenant"), record.get("agent")
    if not isinstance(tenant, str) or not isinstance(agent, str) or not tenant or not agent:
        raise ValueError("'tenant' and 'agent' must be non-empty strings")
    limits = record.get("rate_limits")
    if not isinstance(limits, dict):
        raise ValueError("'rate_limits' must be an object")
    received = _moment(record.get("received_at"), "received_at")
    windows = tuple(_statusline_window(name, length, limits[name])
                    for name, length in CLAUDE_WINDOWS.items() if isinstance(limits.get(name), dict))
    return StatuslineRecord(tenant, agent, RateReading(received, windows),
                            model=_str_or(record.get("model"), None),
                            session_id=_str_or(record.get("session_id"), None))


def _statusline_window(name: str, length: timedelta, raw: Mapping[str, object]) -> RateWindow:
    reset = raw.get("resets_at")
    return RateWindow(name, _fraction(raw.get("used_percentage"), f"rate_limits.{name}.used_percentage"),
                      length, None if reset is None else _moment(reset, f"rate_limits.{name}.resets_at"))


# --- shared helpers --------------------------------------------------------------------------


def _json_lines(text: str, problems: list[str]) -> Iterator[tuple[int, Mapping[str, object]]]:
    """Numbered JSON objects of a JSONL text; blank lines skipped, bad ones reported."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg}, column {exc.colno})")
            continue
        if isinstance(record, dict):
            yield number, record
        else:
            problems.append(f"line {number}: expected a JSON object")


def _event_time(record: Mapping[str, object]) -> datetime:
    return _moment(record.get("timestamp"), "timestamp")


def _moment(value: object, what: str) -> datetime:
    """A time given as Unix seconds or as ISO 8601 with a zone, in UTC."""
    seconds = _number(value)
    if seconds is not None:
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{what} is out of range, got {_show(value)}") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{what} is not a time, got {_show(value)}") from None
        if parsed.utcoffset() is not None:
            return parsed.astimezone(UTC)
        raise ValueError(f"{what} has no time zone, got {_show(value)}")
    raise ValueError(f"{what} must be a time, got {_show(value)}")


def _fraction(percent: object, what: str) -> float:
    """A provider's percentage as a fraction, held to 0..1 (an overage reads as full).

    Rounded to 6 places so 41.2 % is stored as 0.412, not 0.41200000000000003.
    """
    value = _number(percent)
    if value is None:
        raise ValueError(f"{what} must be a number, got {_show(percent)}")
    return round(min(1.0, max(0.0, value / 100.0)), 6)


def _int_fields(raw: object, what: str) -> dict[str, int]:
    """The integer counts of a usage object; other fields (`service_tier`...) are skipped."""
    if not isinstance(raw, dict):
        raise ValueError(f"{what} must be an object")
    counts = {str(k): v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}
    negative = sorted(k for k, v in counts.items() if v < 0)
    if negative:
        raise ValueError(f"{what}.{negative[0]} is negative")
    return counts


def _number(value: object) -> float | None:
    """A finite JSON number as a float; None for anything else (`true` is not 1)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _str_or(value: object, default: _T) -> str | _T:
    return value if isinstance(value, str) and value else default


def _show(value: object) -> str:
    shown = json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
