"""Print the facts about the importable torch that CMakeLists.txt needs (KEY=VALUE)."""

import os
import sysconfig

import torch

torch_dir = os.path.dirname(torch.__file__)
site = os.path.dirname(torch_dir)
cuda = torch.version.cuda
major = cuda.split(".")[0] if cuda else ""
print(f"TORCH_VERSION={torch.__version__}")
print(f"TORCH_DIR={torch_dir}")
print(f"TORCH_CUDA_VERSION={cuda}")
print(f"TORCH_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
print(f"TORCH_NVIDIA_INCLUDE={os.path.join(site, 'nvidia', f'cu{major}', 'include')}")
print(f"PYTHON_PLATLIB={sysconfig.get_paths()['platlib']}")
