#!/bin/sh
# Regenerate src/alexnet/formats/caffe_pb2.py from the trimmed caffe.proto beside it, with the protoc
# that grpcio-tools bundles (a development tool, not a dependency: pip install grpcio-tools).
# The generated module checks at import that the protobuf runtime is at least the version of this
# protoc and of the same major version; pyproject.toml's protobuf bound says the same.
set -eu
cd "$(dirname "$0")/../src/alexnet/formats"
PYTHON="${PYTHON:-../../../.venv/bin/python}"
"$PYTHON" -m grpc_tools.protoc --proto_path=. --python_out=. caffe.proto
echo "wrote src/alexnet/formats/caffe_pb2.py"
