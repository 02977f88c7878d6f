"""What people and scripts read: plans, outcomes, errors and reports as text or JSON.

Rendering only; no decision is made here, and nothing here observes or acts. Text output
is stable (sorted, no times that change per run) so it can be diffed and snapshot-tested.
"""
