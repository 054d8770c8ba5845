"""Tenants, memberships, custom roles, groups, project grants and invitations.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_NOT_DELETED = sa.text("status <> 'deleted'")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("slug", sa.String(63), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("domain", sa.String(253), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("suspension_cause", sa.String(32), nullable=True),
        sa.Column("plan_id", sa.String(64), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delete_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("suspend_reason", sa.String(500), nullable=True),
        sa.Column("suspend_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
    )
    # Slugs and domains are unique among tenants that are not deleted.
    op.create_index(
        "uq_tenants_slug",
        "tenants",
        ["slug"],
        unique=True,
        postgresql_where=_NOT_DELETED,
        sqlite_where=_NOT_DELETED,
    )
    op.create_index(
        "uq_tenants_domain",
        "tenants",
        ["domain"],
        unique=True,
        postgresql_where=_NOT_DELETED,
        sqlite_where=_NOT_DELETED,
    )
    op.create_index("ix_tenants_create_time_id", "tenants", ["create_time", "id"])
    op.create_table(
        "memberships",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_owner", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("added_by", sa.String(40), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_memberships_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", name="pk_memberships"),
    )
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"])
    op.create_index(
        "ix_memberships_tenant_id_create_time_user_id", "memberships", ["tenant_id", "create_time", "user_id"]
    )
    op.create_table(
        "tenant_roles",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("name_key", sa.String(64), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_tenant_roles_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_tenant_roles"),
        sa.UniqueConstraint("tenant_id", "name_key", name="uq_tenant_roles_tenant_id_name_key"),
    )
    op.create_table(
        "tenant_groups",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("name_key", sa.String(64), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_tenant_groups_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_tenant_groups"),
        sa.UniqueConstraint("tenant_id", "name_key", name="uq_tenant_groups_tenant_id_name_key"),
    )
    op.create_table(
        "tenant_group_members",
        sa.Column("group_id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["tenant_groups.id"], name="fk_tenant_group_members_group_id_tenant_groups"
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name="pk_tenant_group_members"),
    )
    op.create_index(
        "ix_tenant_group_members_tenant_id_user_id", "tenant_group_members", ["tenant_id", "user_id"]
    )
    op.create_table(
        "project_grants",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("granted_by", sa.String(40), nullable=True),
        sa.Column("grant_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_project_grants_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", "project", name="pk_project_grants"),
    )
    op.create_index("ix_project_grants_user_id", "project_grants", ["user_id"])
    op.create_table(
        "invitations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("invited_by", sa.String(40), nullable=True),
        sa.Column("accepted_by", sa.String(40), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("send_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accept_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_invitations_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_invitations"),
        sa.UniqueConstraint("token_hash", name="uq_invitations_token_hash"),
    )
    op.create_index("ix_invitations_tenant_id_email", "invitations", ["tenant_id", "email"])
    op.create_index("ix_invitations_email_state", "invitations", ["email", "state"])


def downgrade() -> None:
    op.drop_table("invitations")
    op.drop_table("project_grants")
    op.drop_table("tenant_group_members")
    op.drop_table("tenant_groups")
    op.drop_table("tenant_roles")
    op.drop_table("memberships")
    op.drop_table("tenants")
