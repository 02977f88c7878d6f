"""Shared fixtures: real tmux per test (tests/plugins/tmux_server.py) and systemd --user."""

pytest_plugins = [
    "tests.plugins.tmux_server",
    "tests.plugins.systemd_user",
    "tests.plugins.git_remote",
    "tests.plugins.linux_users",
    "tests.plugins.otlp_receiver",
    "tests.plugins.postgres",
]
