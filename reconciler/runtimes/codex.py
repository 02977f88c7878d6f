"""The Codex adapter (measured with 0.169.0): `config.toml` trust, notices and `notify`.

Codex has no hooks, only `notify`: a command it runs with one JSON argument when a turn
completes. So a Codex agent's heartbeat moves on turn ends (and acks the turn's
messages then), never at a turn's start; its first heartbeat comes from launching it
through `fleet-hook launch --`, which writes `idle` and execs Codex in its place. Its interactive start stops on two dialogs,
both pre-answered in `$CODEX_HOME/config.toml`: the folder-trust dialog
(`[projects."WORKDIR"] trust_level = "trusted"`) and the model-upgrade announcement
(`[notice.model_migrations] MODEL = UPGRADE`, what Codex writes once it is answered).
The merge uses tomlkit, so the user's comments, order and other keys survive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tomlkit is imported when a config is merged, not by every `fleet` start
    import tomlkit
    from tomlkit.items import Table

from reconciler.runtimes.base import (
    AdapterError,
    AgentRun,
    ConfigFile,
    Deliver,
    Launch,
    RuntimePaths,
    identity_env,
    replace_with,
)

#: Codex 0.169.0's bundled model catalog: models that announce an upgrade at start-up
#: (`upgrade.model`), read from the binary. A model not here shows no announcement.
MODEL_UPGRADES = {
    "gpt-5.5": "gpt-6-sol",
    "gpt-5.6-sol": "gpt-6-sol",
    "gpt-5.6-terra": "gpt-6-sol",
    "gpt-5.6-luna": "gpt-6-luna",
}


#: Codex 0.169.0 may start a per-user `codex app-server` daemon beside the TUI that
#: outlives it (reparented to init) and runs an update loop fetching an installer from
#: the vendor: an agent must not update itself nor leave processes behind, so it is
#: switched off per launch (measured: with it, no daemon and no `packages/` appear).
NO_DAEMON = ("-c", "features.daemon_auto_start=false")

#: HTTP statuses and `codex_error_info` kinds of a failed turn that hold the agent.
HELD_STATUSES = {401: "auth", 403: "auth", 429: "usage-limit"}
HELD_ERROR_KINDS = {"usage_limit_exceeded": "usage-limit", "unauthorized": "auth"}


def turn_failure(text: str) -> tuple[str, str, str] | None:
    """(held kind, Codex's words, the event's timestamp) when the last turn in a rollout's
    text ended on a failure that holds the agent; None when it did not, or a turn began since.

    Codex 0.169.0 runs no `notify` for a failed turn (measured against the fake answering
    401 and 429): the only record is its rollout's `task_complete` event with an `error`
    (`codex_error_info` {"http_connection_failed": {"http_status_code": 401}}, or
    {"response_too_many_failed_attempts": {"http_status_code": 429}} after its retries).

    >>> line = ('{"timestamp":"2026-12-06T04:50:57.849Z","type":"event_msg","payload":{"type":"task_complete",'
    ...         '"error":{"message":"unexpected status 401 Unauthorized","codex_error_info":'
    ...         '{"http_connection_failed":{"http_status_code":401}}}}}')
    >>> turn_failure(line)
    ('auth', 'unexpected status 401 Unauthorized', '2026-12-06T04:50:57.849Z')
    >>> turn_failure(line + chr(10) + '{"type":"event_msg","payload":{"type":"task_started"}}') is None
    True
    """
    last: dict[str, object] | None = None
    for raw in text.splitlines():
        if '"task_complete"' not in raw and '"task_started"' not in raw:
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            continue  # the tail's first line may be cut
        payload = record.get("payload") if isinstance(record, dict) else None
        if isinstance(payload, dict) and payload.get("type") in ("task_complete", "task_started"):
            last = {**payload, "timestamp": record.get("timestamp")}
    error = last.get("error") if last and last.get("type") == "task_complete" else None
    if not isinstance(error, dict):
        return None
    kind = _held_kind(error.get("codex_error_info"))
    if kind is None or not isinstance(last, dict) or not isinstance(last.get("timestamp"), str):
        return None
    return kind, str(error.get("message") or "")[:300], str(last["timestamp"])


def _held_kind(info: object) -> str | None:
    """The held kind in a `codex_error_info` (a kind name, or {kind: {http_status_code}})."""
    if isinstance(info, str):
        return HELD_ERROR_KINDS.get(info)
    if not isinstance(info, dict):
        return None
    for kind, detail in info.items():
        if kind in HELD_ERROR_KINDS:
            return HELD_ERROR_KINDS[kind]
        status = detail.get("http_status_code") if isinstance(detail, dict) else None
        if isinstance(status, int) and status in HELD_STATUSES:
            return HELD_STATUSES[status]
    return None


def merge_codex_config(current: str | None, workdir: str, trust: bool, model: str, notify: list[str]) -> str:
    """`config.toml` with `notify`, the workdir trusted and the model's announcement seen.

    >>> text = '# mine\\nmodel_provider = "fake"  # keep\\n\\n[projects."/a"]\\ntrust_level = "untrusted"\\n'
    >>> print(merge_codex_config(text, "/w", True, "gpt-5.5", ["/bin/fleet-hook", "codex-notify"]), end="")
    # mine
    model_provider = "fake"  # keep
    notify = ["/bin/fleet-hook", "codex-notify"]
    <BLANKLINE>
    [projects."/a"]
    trust_level = "untrusted"
    <BLANKLINE>
    [projects."/w"]
    trust_level = "trusted"
    <BLANKLINE>
    [notice.model_migrations]
    "gpt-5.5" = "gpt-6-sol"
    """
    import tomlkit  # noqa: PLC0415 - only apply merges a config
    from tomlkit.exceptions import TOMLKitError  # noqa: PLC0415

    try:
        doc = tomlkit.parse(current or "")
    except TOMLKitError as exc:
        raise AdapterError(f"not TOML ({exc})") from exc
    doc["notify"] = notify
    if trust:
        _table(_table(doc, "projects", super_table=True), workdir)["trust_level"] = "trusted"
    if upgrade := MODEL_UPGRADES.get(model):
        _table(_table(doc, "notice", super_table=True), "model_migrations")[model] = upgrade
    return tomlkit.dumps(doc)


def _table(parent: tomlkit.TOMLDocument | Table, key: str, super_table: bool = False) -> Table:
    """`parent[key]` as a table, created when missing; anything else there is refused."""
    import tomlkit  # noqa: PLC0415
    from tomlkit.items import Table  # noqa: PLC0415

    if key not in parent:
        parent[key] = tomlkit.table(is_super_table=super_table)
    found = parent[key]
    if not isinstance(found, Table):
        raise AdapterError(f"{key!r} is not a table")
    return found


class CodexAdapter:
    """Codex: `codex --model M -c model_instructions_file=PERSONA`, config in CODEX_HOME."""

    name = "codex"
    deliver = Deliver.PASTE_ACK_ON_TURN_END
    #: Codex 0.169.0 has no flag to start on a given session id (it picks its own), so the
    #: fleet does not name it: it reads the id back (the thread its `notify` names, whose
    #: rollout file holds the agent's workdir; engine/observe.py) and resumes that.
    fixes_session = False

    def codex_home(self, run: AgentRun, paths: RuntimePaths) -> Path:
        """The agent's `CODEX_HOME` when its environment sets one, else `~/.codex`."""
        return Path(run.env["CODEX_HOME"]) if run.env.get("CODEX_HOME") else paths.home / ".codex"

    def persona_path(self, run: AgentRun, paths: RuntimePaths) -> Path:
        return paths.agent_dir(run) / "persona.md"

    def prepare(self, run: AgentRun, paths: RuntimePaths) -> list[ConfigFile]:
        notify = [paths.hook, "codex-notify"]
        files = [ConfigFile(
            self.codex_home(run, paths) / "config.toml",
            lambda current: merge_codex_config(current, str(run.workdir), run.trust_workdir, run.model, notify),
        )]
        if run.persona:
            files.append(ConfigFile(self.persona_path(run, paths), replace_with(run.persona), owned=True))
        return files

    def launch(self, run: AgentRun, paths: RuntimePaths) -> Launch:
        """`codex resume ID` when the observe step read this agent's thread back (the earlier
        turns are sent again, on `--model`: measured with 0.169.0), else a new session.
        Never `resume --last`: it could pick another agent's session.

        >>> paths = RuntimePaths(Path("/h"), Path("/s"), "fleet-hook", "codex")
        >>> run = AgentRun("t", "h", "a", "gpt-5.5", Path("/w"), "01a249b6-a332-7350-b445-9998cb79cd53", resume=True)
        >>> CodexAdapter().launch(run, paths).argv[3:7]
        ('codex', 'resume', '01a249b6-a332-7350-b445-9998cb79cd53', '--model')
        """
        persona = ("-c", f"model_instructions_file={self.persona_path(run, paths)}") if run.persona else ()
        env = identity_env(run, paths)  # CODEX_HOME only as the agent's own env sets it: Codex defaults to ~/.codex
        resume = ("resume", run.session_id) if run.resume and run.session_id else ()
        argv = (paths.hook, "launch", "--", paths.binary, *resume, "--model", run.model, *NO_DAEMON, *persona)
        return Launch(argv, env)
