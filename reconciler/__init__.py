"""Mosaic Fleet: a GitOps reconciler that keeps tmux-hosted AI agents matching a Git repository."""

__version__ = "0.1.0"
