"""The compiled contract at run time: Nexus's services and each RPC's access rule.

Importing every generated module puts all of Nexus's files in the default descriptor
pool, which server reflection, the access table and the unimplemented handlers read.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path

from google.protobuf import descriptor, descriptor_pool

import nexus
from nexus.common.v1 import access_pb2

SERVICES = (
    "nexus.identity.v1.IdentityService",
    "nexus.apikey.v1.ApiKeyService",
    "nexus.tenant.v1.TenantService",
    "nexus.billing.v1.BillingService",
    "nexus.usage.v1.UsageService",
    "nexus.events.v1.EventsService",
)


@cache
def load() -> descriptor_pool.DescriptorPool:
    # The generated packages are namespace packages (no __init__.py), which pkgutil's
    # walkers skip; find the modules on disk instead.
    for root in nexus.__path__:
        for path in sorted(Path(root).rglob("*_pb2.py")):
            relative = path.relative_to(Path(root).parent).with_suffix("")
            importlib.import_module(".".join(relative.parts))
    return descriptor_pool.Default()


def services() -> list[descriptor.ServiceDescriptor]:
    pool = load()
    return [pool.FindServiceByName(name) for name in SERVICES]


def method_path(method: descriptor.MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def access_rule(method: descriptor.MethodDescriptor) -> access_pb2.AccessRule:
    rule: access_pb2.AccessRule = method.GetOptions().Extensions[access_pb2.access]
    return rule


@cache
def access_table() -> dict[str, access_pb2.AccessRule]:
    """`/pkg.Service/Method` → its AccessRule, for every Nexus RPC (the caller table)."""
    return {method_path(m): access_rule(m) for s in services() for m in s.methods}
