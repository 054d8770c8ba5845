#!/usr/bin/env bash
# Check one service's protos on their own: compile, format, lint, and report uncommented elements.
# Usage: tools/check_proto.sh <service>   (identity | apikey | tenant | billing | usage | events)
set -euo pipefail
cd "$(dirname "$0")/.."
svc=$1
wkt=$(.venv/bin/python -c 'import grpc_tools, os; print(os.path.dirname(grpc_tools.__file__))')/_proto
site=$(.venv/bin/python -c 'import google.api, os; print(os.path.dirname(os.path.dirname(os.path.dirname(google.api.__file__))))')
out=$(mktemp -d)
.venv/bin/python -m grpc_tools.protoc -Iproto -I"$site" -I"$wkt" --include_source_info --include_imports \
  --descriptor_set_out="$out/d.binpb" proto/nexus/"$svc"/v1/*.proto
node_modules/.bin/buf format -w --path proto/nexus/"$svc"
.venv/bin/python tools/gen.py --protodeps
node_modules/.bin/buf lint --path proto/nexus/"$svc"
PYTHONPATH=server .venv/bin/python - "$out/d.binpb" "$svc" <<'PY'
import sys
from pathlib import Path
from nexus_server.common.descriptors import load_descriptor_set, elements
fds = load_descriptor_set(Path(sys.argv[1]))
missing = [e for f in fds.file if f.name.startswith(f"nexus/{sys.argv[2]}/") for e in elements(f) if not e.comment]
for e in missing:
    print(f"no comment: {e.kind} {e.name} ({e.file})")
print(f"{len(missing)} uncommented elements")
sys.exit(1 if missing else 0)
PY
rm -rf "$out"
echo "OK: $svc compiles, is formatted, lints clean, and every element is commented"
