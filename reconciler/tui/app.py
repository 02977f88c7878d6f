"""The Textual app of `fleet top`: a table, a detail pane, a screen pane and four keys;
`t` switches to the lanes and tasks (the web view's /tasks page, the same cells).

Observation and capture run in worker threads (the engine's run blocks); the table is
rebuilt from each new view with the same cells `fleet ps` prints (core/ps.py
`table_cells`). Keys never act on an agent directly: `Verbs` runs the `fleet agent`
commands, and `attach` asks first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, ContentSwitcher, DataTable, Footer, Header, Input, Label, Static

from reconciler.core.fleetview import (
    LANE_HEADERS,
    TASK_HEADERS,
    AgentDetail,
    FleetView,
    lane_cells,
    task_cells,
)
from reconciler.core.ps import HEADERS, NONE, human_age, table_cells
from reconciler.web.observer import Capture, Observation


@dataclass(frozen=True, slots=True)
class Verbs:
    """The existing verbs, as the TUI may call them (cli/top.py runs `fleet agent ...`)."""

    watch: Callable[[str], int]  # on this terminal, read-only
    attach: Callable[[str], int]  # on this terminal, a takeover
    send: Callable[[str, str], tuple[int, str]]  # --verify; exit status and what it said


def detail_text(detail: AgentDetail) -> str:
    """The agent's detail as plain lines (the web view's agent page, in a terminal)."""
    row = detail.row
    lines = [f"{detail.key}  {row.health or 'unknown'}  tmux {row.tmux.value}  systemd {row.systemd.value}", ""]
    lines += [f"{'✓' if c.ok else '✗'} {c.type:<14} {c.reason:<10} {c.message}" for c in detail.conditions]
    beat = detail.heartbeat
    lines += ["", "heartbeat: " + (f"{human_age(row.heartbeat_age_s)} ago, {beat.state}, seq {beat.seq}"
                                   if beat else "none"),
              f"model: running {detail.running_model or NONE}, desired {detail.desired_model or NONE}"
              + (f", budget {detail.budget_model}" if detail.budget_model else "")]
    if detail.rung:
        lines.append(f"budget rung {detail.rung.index}: {' → '.join(detail.rung.ladder)} ({detail.rung.state})")
    lines.append(f"restarts: {detail.restarts.attempts}"
                 + (f", backing off until {detail.restarts.backoff_until:%H:%M:%S}" if detail.restarts.backoff_until else ""))
    if detail.task:
        task = detail.task.view
        lines.append(f"task: {task.task} {task.state.value}" + (f" (lane {task.lane})" if task.lane else "")
                     + (f": {detail.task.title}" if detail.task.title else ""))
    if row.planned:
        lines.append(f"next: {row.planned}")
    return "\n".join(lines)


class Confirm(ModalScreen[bool]):
    """A yes/no question; Escape or No answers no."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "no", "Cancel"), Binding("y", "yes", "Yes")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="question")
            with Horizontal():
                yield Button("Yes, attach", id="yes", variant="warning")
                yield Button("No", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)


class Prompt(ModalScreen[str]):
    """One line of text to send; Escape sends nothing."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question)
            yield Input(placeholder="message (Enter sends, Escape cancels)", id="message")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss("")


class FleetTop(App[None]):
    """The live table of `fleet top`."""

    TITLE = "fleet top"
    CSS = """
    #agents, #tasks-view { height: 1fr; }
    #fleet { height: 1fr; }
    #lanes { height: auto; max-height: 40%; }
    #tasks { height: 1fr; }
    #below { height: 1fr; }
    #detail { width: 1fr; border: round $primary; padding: 0 1; }
    #screen { width: 1fr; border: round $secondary; padding: 0 1; }
    Confirm, Prompt { align: center middle; }
    #dialog { width: 70; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"), Binding("r", "observe", "Refresh"), Binding("w", "watch", "Watch"),
        Binding("a", "attach", "Attach"), Binding("s", "send", "Send"), Binding("t", "tasks", "Agents/Tasks"),
    ]

    def __init__(self, observe: Callable[[], Observation], capture: Capture, verbs: Verbs, *,
                 interval: float = 2.0, screen_interval: float = 1.0) -> None:
        super().__init__()
        self.observe = observe
        self.capture = capture
        self.verbs = verbs
        self.interval = interval
        self.screen_interval = screen_interval
        self.observation: Observation | None = None
        self.selected: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with ContentSwitcher(initial="agents"):
            with Vertical(id="agents"):
                yield DataTable(id="fleet", cursor_type="row", zebra_stripes=True)
                with Horizontal(id="below"):
                    yield Static("select an agent", id="detail")
                    yield Static("", id="screen")
            with Vertical(id="tasks-view"):
                yield DataTable(id="lanes", cursor_type="row", zebra_stripes=True)
                yield DataTable(id="tasks", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#fleet", DataTable).add_columns(*HEADERS)
        self.query_one("#lanes", DataTable).add_columns(*LANE_HEADERS)
        self.query_one("#tasks", DataTable).add_columns(*TASK_HEADERS)
        self.action_observe()
        self.set_interval(self.interval, self.action_observe)
        self.set_interval(self.screen_interval, self.capture_screen)

    @property
    def view(self) -> FleetView | None:
        return self.observation.view if self.observation else None

    # --- observing ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="observe")
    def action_observe(self) -> None:
        observation = self.observe()
        self.call_from_thread(self.show, observation)

    def show(self, observation: Observation) -> None:
        self.observation = observation
        self.show_tasks(observation.view)
        table = self.query_one("#fleet", DataTable)
        keep = self.selected
        table.clear()
        for row in observation.view.rows:
            table.add_row(*table_cells(row), key=f"{row.tenant}/{row.agent}")
        keys = [f"{r.tenant}/{r.agent}" for r in observation.view.rows]
        if keep in keys:
            table.move_cursor(row=keys.index(keep))
        self.sub_title = ", ".join(f"{n} {h}" for h, n in observation.view.summary().items())
        self.show_detail()

    def show_tasks(self, view: FleetView) -> None:
        lanes = self.query_one("#lanes", DataTable)
        lanes.clear()
        for lane in view.lanes:
            lanes.add_row(*lane_cells(lane), key=f"{lane.tenant}/{lane.lane}")
        tasks = self.query_one("#tasks", DataTable)
        tasks.clear()
        for task in view.tasks:
            tasks.add_row(*task_cells(task, view.taken_at), key=task.key)

    def action_tasks(self) -> None:
        """Switch between the agents and the lanes and tasks."""
        switcher = self.query_one(ContentSwitcher)
        switcher.current = "tasks-view" if switcher.current == "agents" else "agents"

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "fleet":
            return
        self.selected = str(event.row_key.value) if event.row_key is not None else None
        self.show_detail()
        self.capture_screen()

    def show_detail(self) -> None:
        detail = self.view.agents.get(self.selected) if self.view and self.selected else None
        self.query_one("#detail", Static).update(detail_text(detail) if detail else "select an agent")

    @work(thread=True, exclusive=True, group="screen")
    def capture_screen(self) -> None:
        observation, key = self.observation, self.selected
        detail = observation.view.agents.get(key) if observation and key else None
        if observation is None or detail is None:
            return
        socket = observation.sockets.get(detail.row.socket)
        # Only a session the fleet created (tmux running or dead), never a foreign one.
        lines = self.capture(socket, detail.row.agent) if socket and detail.row.tmux.value in {"running", "dead"} else None
        text = "\n".join(lines) if lines is not None else "(no screen)"
        self.call_from_thread(self.show_screen, text)

    def show_screen(self, text: str) -> None:
        """On the app's thread: a capture that finishes as the app shuts down finds no widget."""
        for pane in self.query("#screen").results(Static):
            pane.update(text)

    # --- handing over to the verbs -----------------------------------------------------------

    def action_watch(self) -> None:
        if self.selected:
            with self.suspend():
                self.verbs.watch(self.selected)

    def action_attach(self) -> None:
        key = self.selected
        if key is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                with self.suspend():
                    self.verbs.attach(key)

        self.push_screen(Confirm(f"Attach to {key}? Your keystrokes go to the agent until you detach "
                                 "(C-b d). `fleet agent watch` (w) is read-only."), answered)

    def action_send(self) -> None:
        key = self.selected
        if key is None:
            return

        def typed(text: str | None) -> None:
            if text:
                self.send_message(key, text)

        self.push_screen(Prompt(f"Send one line to {key} (fleet agent send --verify):"), typed)

    @work(thread=True, group="send")
    def send_message(self, key: str, text: str) -> None:
        code, said = self.verbs.send(key, text)
        self.call_from_thread(self.notify, said or f"exit status {code}", title=f"send to {key}",
                              severity="information" if code == 0 else "error")
