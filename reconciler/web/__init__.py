"""`fleet serve`: a live, read-only web view of the fleet (docs/surfaces.md).

Above the views and the engine, below the CLI: one observer loop (observer.py) runs the
engine's read-only run and publishes the one view (core/fleetview.py) to every open
page; app.py serves pages rendered from templates/ with assets from static/ (nothing
from a CDN); auth.py keeps it on loopback unless a token guards it. No route changes
the fleet: only GET and HEAD are answered.
"""
