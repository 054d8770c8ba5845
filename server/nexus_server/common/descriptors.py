"""Reading Nexus's own contract: the descriptor set that `make gen` writes.

Used by the docs renderer, the contract tests and the server (caller table, routes),
so that every consumer reads the same comments and options from one place.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

# Field numbers inside FileDescriptorProto / DescriptorProto / ... used by SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM = 2, 3, 4
_ENUM_VALUE = 2
_SERVICE_METHOD = 2

DESCRIPTOR_SET = Path(__file__).resolve().parents[3] / "gen" / "nexus.binpb"


@dataclass(frozen=True)
class Element:
    """One commentable element of a proto file: service, method, message, field, enum, value."""

    file: str
    kind: str
    name: str  # fully qualified, e.g. nexus.tenant.v1.TenantService.CreateTenant
    comment: str


def load_descriptor_set(path: Path = DESCRIPTOR_SET) -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(path.read_bytes())
    return fds


def nexus_files(fds: descriptor_pb2.FileDescriptorSet) -> list[descriptor_pb2.FileDescriptorProto]:
    return [f for f in fds.file if f.name.startswith("nexus/")]


def comments_by_path(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): (loc.leading_comments or loc.trailing_comments).strip()
        for loc in file.source_code_info.location
    }


def elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[Element]:
    """Every element of `file` that must carry a comment, with its comment ('' if none)."""
    comments = comments_by_path(file)
    pkg = file.package

    def enum(e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str) -> Iterator[Element]:
        name = f"{scope}.{e.name}"
        yield Element(file.name, "enum", name, comments.get(path, ""))
        for i, v in enumerate(e.value):
            yield Element(
                file.name, "enum value", f"{name}.{v.name}", comments.get((*path, _ENUM_VALUE, i), "")
            )

    def message(m: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str) -> Iterator[Element]:
        name = f"{scope}.{m.name}"
        if m.options.map_entry:
            return
        yield Element(file.name, "message", name, comments.get(path, ""))
        for i, f in enumerate(m.field):
            yield Element(file.name, "field", f"{name}.{f.name}", comments.get((*path, _MSG_FIELD, i), ""))
        for i, n in enumerate(m.nested_type):
            yield from message(n, (*path, _MSG_NESTED, i), name)
        for i, e in enumerate(m.enum_type):
            yield from enum(e, (*path, _MSG_ENUM, i), name)

    for i, m in enumerate(file.message_type):
        yield from message(m, (_FILE_MESSAGE, i), pkg)
    for i, e in enumerate(file.enum_type):
        yield from enum(e, (_FILE_ENUM, i), pkg)
    for i, s in enumerate(file.service):
        sname = f"{pkg}.{s.name}"
        yield Element(file.name, "service", sname, comments.get((_FILE_SERVICE, i), ""))
        for j, meth in enumerate(s.method):
            yield Element(
                file.name,
                "rpc",
                f"{sname}.{meth.name}",
                comments.get((_FILE_SERVICE, i, _SERVICE_METHOD, j), ""),
            )
