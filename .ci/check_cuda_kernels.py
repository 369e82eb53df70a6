"""CI check: the extension was built with CUDA and every stovtal op has a CUDA kernel.

No GPU is needed: the dispatcher knows which kernels the library registered.
"""

import sys

import stovtal
from stovtal.ops import info

report = info()
ops = report["ops"]
if not ops:
    sys.exit("no stovtal ops are registered")
if not report["build"]["with_cuda"]:
    sys.exit(f"stovtal was built without CUDA: {report['build']}")
missing = [op for op, backends in ops.items() if "CUDA" not in backends]
missing_cpu = [op for op, backends in ops.items() if "CPU" not in backends]
for op, backends in sorted(ops.items()):
    print(f"  {op}: {', '.join(backends)}")
if missing or missing_cpu:
    sys.exit(f"ops without a CUDA kernel: {missing}; without a CPU kernel: {missing_cpu}")
print(f"stovtal {stovtal.__version__}: all {len(ops)} ops have CPU and CUDA kernels "
      f"(CUDA archs {report['build']['cuda_architectures']})")
