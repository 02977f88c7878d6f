-- Projections from the register (docs/register.md, "Projections"): each host's whole
-- tenant status document, from which TASKS.md and MISSION-MANIFEST.md are rendered, and
-- the lease that lets one host at a time render and commit them.

-- One row per tenant and host: the status document of status/<host>/<tenant>.yaml, as JSON.
CREATE TABLE fleet.status_docs (
  tenant_id text NOT NULL,
  host text NOT NULL,
  doc jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, host)
);

ALTER TABLE fleet.status_docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON fleet.status_docs USING (fleet.visible(tenant_id, current_user))
  WITH CHECK (fleet.visible(tenant_id, current_user));
GRANT SELECT, INSERT, UPDATE, DELETE ON fleet.status_docs TO fleet_operator, fleet_tenant;

-- Leases: who does a fleet-wide job (name 'projections') for a fleet (scope: fleet.yaml's
-- name) until when. Taken or renewed by one INSERT ... ON CONFLICT DO UPDATE ... WHERE
-- the lease expired or is the caller's own; times are the database's clock, never a host's.
-- Not tenant data: the operator's roles take them, a tenant's role may only look.
CREATE TABLE fleet.leases (
  scope text NOT NULL,
  name text NOT NULL,
  holder text NOT NULL,
  acquired_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (scope, name)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON fleet.leases TO fleet_operator;
GRANT SELECT ON fleet.leases TO fleet_tenant;
