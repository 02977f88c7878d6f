"""`fleet top`: the fleet as a live terminal table (Textual), beside `fleet ps` and the web view.

It renders the same view (core/fleetview.py) from the same read-only run, refreshes it
every few seconds, shows the selected agent's detail and screen read-only, and hands
over to the existing verbs (`fleet agent watch`, `attach` after a confirmation, `send
--verify` with a prompt) rather than acting itself.
"""
