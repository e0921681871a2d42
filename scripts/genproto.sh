#!/usr/bin/env bash
# Regenerate src/petcd/pb from proto/ (messages, .pyi stubs for mypy, and gRPC stubs).
# The generated files are committed; run this after editing anything under proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
rm -f src/petcd/pb/*_pb2.py src/petcd/pb/*_pb2.pyi src/petcd/pb/*_pb2_grpc.py
"$PY" -m grpc_tools.protoc -Iproto \
  --python_out=src --pyi_out=src --grpc_python_out=src \
  proto/petcd/pb/*.proto
# grpc_tools emits a stub module for every file; drop the empty ones (no services).
for f in src/petcd/pb/*_pb2_grpc.py; do
  grep -q 'class .*Servicer' "$f" || rm -f "$f"
done
# petcd serves through its own handler table: keep only the client stubs.
"$PY" scripts/strip_grpc.py src/petcd/pb/*_pb2_grpc.py
echo "generated: $(ls src/petcd/pb/*_pb2.py | wc -l) message modules"
