// The stovtal operator library. Each op family adds its schemas with
// TORCH_LIBRARY_FRAGMENT in its own file beside this one (bindings/<op>.cpp);
// the shared library is loaded from Python with torch.ops.load_library
// (see stovtal/_loader.py).
#include <torch/library.h>

TORCH_LIBRARY(stovtal, m) {}
