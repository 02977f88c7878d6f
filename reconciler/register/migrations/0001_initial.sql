-- The register's first schema (docs/register.md, "What each table holds").
-- Every row carries tenant_id and host; row-level security on tenant_id lets a tenant's
-- role see and write only its own rows, and members of fleet_operator see every row.

CREATE SCHEMA IF NOT EXISTS fleet;

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fleet_operator') THEN
    CREATE ROLE fleet_operator NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fleet_tenant') THEN
    CREATE ROLE fleet_tenant NOLOGIN;
  END IF;
END $$;

-- Which database role acts for which tenant (a tenant's Linux user, by peer authentication).
CREATE TABLE fleet.tenant_roles (
  role name PRIMARY KEY,
  tenant_id text NOT NULL
);

-- One row per tenant and host: when the host last ran, and the last batch it wrote.
CREATE TABLE fleet.hosts (
  tenant_id text NOT NULL,
  host text NOT NULL,
  last_seen timestamptz NOT NULL,
  last_run text,
  last_batch bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, host)
);

-- Each agent's observed state and conditions, as the host's status file says it.
CREATE TABLE fleet.agents (
  tenant_id text NOT NULL,
  host text NOT NULL,
  agent text NOT NULL,
  role text NOT NULL,
  alias text,
  lifecycle text NOT NULL,
  desired_model text NOT NULL,
  running_model text,
  health text NOT NULL,
  tokens bigint NOT NULL DEFAULT 0,
  conditions jsonb NOT NULL DEFAULT '[]',
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, host, agent)
);

-- The latest heartbeat per agent (rewritten when its content changes, not on every beat).
CREATE TABLE fleet.heartbeats (
  tenant_id text NOT NULL,
  host text NOT NULL,
  agent text NOT NULL,
  seq bigint NOT NULL,
  ts timestamptz NOT NULL,
  state text NOT NULL,
  model text NOT NULL,
  pid integer,
  ack text,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, host, agent)
);

-- Runs that changed something, one row per tenant.
CREATE TABLE fleet.runs (
  tenant_id text NOT NULL,
  host text NOT NULL,
  run_id text NOT NULL,
  revision text NOT NULL,
  at timestamptz NOT NULL,
  duration_ms integer NOT NULL,
  actions jsonb NOT NULL,
  failed integer NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, host, run_id)
);

-- Tasks and who works on them (lanes): ready for the dispatcher, not written yet.
CREATE TABLE fleet.tasks (
  tenant_id text NOT NULL,
  host text NOT NULL,
  task_id text NOT NULL,
  mission text,
  title text NOT NULL,
  lane text,
  state text NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, task_id)
);

CREATE TABLE fleet.assignments (
  tenant_id text NOT NULL,
  host text NOT NULL,
  task_id text NOT NULL,
  agent text NOT NULL,
  lane text,
  state text NOT NULL,
  since timestamptz NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, task_id, agent)
);

-- Usage readings per budget account, in whole percents (they change rarely).
CREATE TABLE fleet.usage (
  tenant_id text NOT NULL,
  host text NOT NULL,
  account text NOT NULL,
  runtime text NOT NULL,
  regime text NOT NULL,
  state text NOT NULL,
  used_pct integer,
  allowed_pct integer,
  reset_at text,
  exhausts text,
  confidence text NOT NULL DEFAULT '',
  source text NOT NULL DEFAULT '',
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, host, account)
);

-- The spend ledger: append-only; the idempotency key makes a replay write nothing twice.
CREATE TABLE fleet.ledger (
  id bigserial PRIMARY KEY,
  tenant_id text NOT NULL,
  host text NOT NULL,
  idempotency_key text NOT NULL,
  ts timestamptz NOT NULL,
  agent text,
  role text,
  task text,
  account text,
  model text NOT NULL,
  source text NOT NULL,
  stream text NOT NULL,
  tokens bigint NOT NULL,
  dollars double precision,
  total_tokens bigint NOT NULL,
  total_usd double precision,
  confidence text NOT NULL,
  recorded_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, idempotency_key)
);

CREATE FUNCTION fleet.ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'fleet.ledger is append-only: % refused', TG_OP;
END $$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON fleet.ledger
  FOR EACH ROW EXECUTE FUNCTION fleet.ledger_append_only();

-- Who may see a tenant's rows: the operator's roles, and the tenant's own role. The policy
-- passes the caller's role: inside this SECURITY DEFINER function current_user is its owner.
CREATE FUNCTION fleet.visible(tenant text, who name) RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, fleet AS $$
  SELECT pg_has_role(who, 'fleet_operator', 'MEMBER')
      OR EXISTS (SELECT 1 FROM fleet.tenant_roles r WHERE r.role = who AND r.tenant_id = tenant)
$$;

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['hosts', 'agents', 'heartbeats', 'runs', 'tasks', 'assignments', 'usage', 'ledger'] LOOP
    EXECUTE format('ALTER TABLE fleet.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_rows ON fleet.%I USING (fleet.visible(tenant_id, current_user)) '
                   'WITH CHECK (fleet.visible(tenant_id, current_user))', t);
  END LOOP;
END $$;

GRANT USAGE ON SCHEMA fleet TO fleet_operator, fleet_tenant;
GRANT SELECT ON fleet.schema_migrations TO fleet_operator, fleet_tenant;
GRANT SELECT, INSERT, UPDATE, DELETE ON fleet.hosts, fleet.agents, fleet.heartbeats, fleet.tasks,
  fleet.assignments, fleet.usage TO fleet_operator, fleet_tenant;
GRANT SELECT, INSERT ON fleet.runs, fleet.ledger TO fleet_operator, fleet_tenant;
GRANT USAGE ON SEQUENCE fleet.ledger_id_seq TO fleet_operator, fleet_tenant;
GRANT SELECT, INSERT, UPDATE, DELETE ON fleet.tenant_roles TO fleet_operator;
