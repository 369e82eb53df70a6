#!/usr/bin/env bash
# Developer build: compile the operator library into the source tree
# (stovtal/_C.so + stovtal/_build_info.py) so that `PYTHONPATH=. pytest`
# uses it. Usage: tools/build_inplace.sh [BUILD_DIR] [extra cmake -D args]
#   STOVTAL_CUDA=OFF tools/build_inplace.sh build/dev-cpu
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build/dev}
shift || true
python=${PYTHON:-python}
cmake -S "$here" -B "$build" -G Ninja -DPython_EXECUTABLE="$(command -v "$python")" \
  -DSTOVTAL_CUDA="${STOVTAL_CUDA:-OFF}" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build"
cmake --install "$build" --prefix "$here" >/dev/null
echo "built $here/stovtal/_C.so"
