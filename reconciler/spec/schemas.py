"""JSON Schemas of every kind, rendered from the pydantic models (for `fleet schema`)."""

from __future__ import annotations

import json

from reconciler.spec.models import KINDS, json_schema


def render_schemas() -> dict[str, str]:
    """File name -> text; stable bytes so a stale file is detected by comparison."""
    return {f"{kind.lower()}.schema.json": json.dumps(json_schema(kind), indent=2, sort_keys=True) + "\n" for kind in KINDS}
