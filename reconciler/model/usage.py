"""Usage signals: what each budget account has used, as one record per account (docs/reference.md, "Usage signals").

Written atomically to `$FLEET_STATE_DIR/<tenant>/usage/<account>.json` by a person
(`fleet budget set-usage`) or an ingester (Codex rollouts, Claude Code transcripts and
status line, stub heartbeats); read once per tick by the observe step and handed to the
pure budget policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: Most authoritative first: a fresher signal wins, and between equally fresh signals the
#: more authoritative one; a stale signal ages toward `estimated`.
CONFIDENCE_ORDER = ("user", "provider", "estimated", "unknown")


@dataclass(frozen=True, slots=True)
class UsageSignal:
    tenant: str
    account: str
    used_fraction: float | None  # subscription accounts: 0..1 of the window's limit
    spent_usd: float | None  # api accounts: spent in the current period
    reset_at: datetime | None
    window: timedelta | None
    confidence: str
    source: str
    observed_at: datetime
