"""The Postgres register's pure parts (docs/register.md): rows, batches, what changed, migrations.

Nothing here talks to Postgres or reads a file: drivers/register.py holds the psycopg
I/O (imported only when fleet.yaml has `register:`), drivers/register_spool.py the local
digest and spool, and engine/register_sync.py composes them after write-back.
"""
