"""Generate everything derived from `proto/`: Python code, stubs, descriptor set, API docs.

    python tools/gen.py            write gen/python, gen/nexus.binpb, docs/api.md
    python tools/gen.py --check    regenerate into a temp dir; exit 1 if anything differs
    python tools/gen.py --protodeps  only copy googleapis protos to build/protodeps for buf

Imports come from installed packages, never committed copies: `google/api`, `google/rpc`
and `google/type` from googleapis-common-protos, `google/protobuf` from grpcio-tools.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

import google.api
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
GOOGLE_ROOT = Path(google.api.__file__).resolve().parent.parent.parent  # site-packages
WKT_ROOT = Path(grpc_tools.__file__).resolve().parent / "_proto"
BIN = Path(sys.executable).parent
# Imports Envoy needs in the descriptor set even when no Nexus file imports them:
# without error_details, the transcoder drops google.rpc.Status details silently.
EXTRA_DESCRIPTOR_INPUTS = ["google/rpc/error_details.proto"]


def nexus_protos() -> list[str]:
    return sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))


def copy_protodeps(dest: Path) -> None:
    """Copy the googleapis protos Nexus imports to `dest`, for buf (git-ignored)."""
    for package in ("google/api", "google/rpc", "google/type"):
        target = dest / package
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted((GOOGLE_ROOT / package).glob("*.proto")):
            shutil.copyfile(src, target / src.name)


def run_protoc(args: list[str]) -> None:
    argv = ["grpc_tools.protoc", f"-I{PROTO}", f"-I{GOOGLE_ROOT}", f"-I{WKT_ROOT}", *args]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args[:3])} ...")


def generate(out: Path) -> None:
    """Write gen/python, gen/nexus.binpb and docs/api.md under `out`."""
    files = nexus_protos()
    py_out = out / "gen" / "python"
    py_out.mkdir(parents=True, exist_ok=True)
    run_protoc(
        [
            f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
            f"--python_out={py_out}",
            f"--grpc_python_out={py_out}",
            f"--mypy_out=quiet:{py_out}",
            f"--mypy_grpc_out=quiet:{py_out}",
            *files,
        ]
    )
    binpb = out / "gen" / "nexus.binpb"
    run_protoc(
        [
            f"--descriptor_set_out={binpb}",
            "--include_imports",
            "--include_source_info",
            *files,
            *EXTRA_DESCRIPTOR_INPUTS,
        ]
    )
    sys.path[:0] = [str(py_out), str(ROOT / "tools"), str(ROOT / "server")]
    from apidocs import render

    docs = out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "api.md").write_text(render(binpb.read_bytes()), encoding="utf-8")


def differences(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two trees (missing on either side included)."""
    diffs: list[str] = []
    names_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    names_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    for rel in sorted(names_a ^ names_b):
        diffs.append(str(rel))
    for rel in sorted(names_a & names_b):
        if not filecmp.cmp(a / rel, b / rel, shallow=False):
            diffs.append(str(rel))
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated files are stale")
    parser.add_argument("--protodeps", action="store_true", help="only fill build/protodeps")
    args = parser.parse_args()
    if args.protodeps:
        copy_protodeps(ROOT / "build" / "protodeps")
        return 0
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp)
            generate(fresh)
            stale = differences(fresh / "gen", ROOT / "gen")
            docs = ROOT / "docs" / "api.md"
            if not docs.exists() or not filecmp.cmp(fresh / "docs" / "api.md", docs, shallow=False):
                stale.append("docs/api.md")
        if stale:
            print("gen/ is stale; run `make gen` and commit:", *stale, sep="\n  ", file=sys.stderr)
            return 1
        print("gen/ is up to date")
        return 0
    for stale_dir in (ROOT / "gen" / "python" / "nexus",):
        shutil.rmtree(stale_dir, ignore_errors=True)
    generate(ROOT)
    os.utime(ROOT / "gen", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
