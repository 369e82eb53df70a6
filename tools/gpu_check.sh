#!/usr/bin/env bash
# The prepared GPU check (README, "GPU check"): build in place with STOVTAL_CUDA=ON, run the
# CUDA tests and the CUDA-vs-CPU parity tests, compute-sanitizer on every kernel, the GPU
# benchmarks and tiny selftrain/feel runs on CUDA; summary.json + gpu_check.log in OUTDIR.
#   bash tools/gpu_check.sh [--dry-run] [--skip-build] [--budget S] [--only PARTS] OUTDIR
#   bash tools/gpu_check.sh --fetch-wheels [DIR]   (here, with a package index: the pure-Python
#       wheels the pipelines need where they are missing, into DIR, default .whl)
# Options and parts: python3 tools/gpu_check.py --help.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
if [[ "${1:-}" == "--fetch-wheels" ]]; then
  dest=${2:-$here/.whl}
  mkdir -p "$dest"
  "$python" -m pip download -q --no-deps --only-binary=:all: -d "$dest" "omegaconf>=2.3"
  # omegaconf's own needs, except PyYAML (preinstalled where torch is): pure-Python wheels
  for whl in "$dest"/omegaconf-*.whl; do
    "$python" - "$whl" <<'PY' | while read -r req; do
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    for line in z.read(meta).decode().splitlines():
        if line.startswith("Requires-Dist:") and "extra ==" not in line:
            req = line.split(":", 1)[1].split(";")[0].strip().replace(" ", "")
            if not req.lower().startswith("pyyaml"):
                print(req)
PY
      "$python" -m pip download -q --no-deps --only-binary=:all: -d "$dest" "$req"
    done
  done
  ls -l "$dest"
  exit 0
fi
exec "$python" "$here/tools/gpu_check.py" "$@"
