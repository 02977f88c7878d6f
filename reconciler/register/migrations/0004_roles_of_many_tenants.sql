-- One database role may act for several tenants (docs/register.md, "Tenant roles"): a
-- Linux user that runs two tenants writes both as its one role. fleet.tenant_roles was
-- keyed by role alone; it is keyed by (role, tenant_id) from here on, and the rows kept.
-- The row-level security policies need no change: fleet.visible (0001) already asks
-- whether the caller's role is mapped to the row's tenant, so a role sees and writes
-- every tenant it is mapped to, and no other.

ALTER TABLE fleet.tenant_roles DROP CONSTRAINT tenant_roles_pkey, ADD PRIMARY KEY (role, tenant_id);
