"""kato_gpu: exact, parallel pattern matching for KATO.

Drop-in replacements for KATO's ``kato.gpu`` classes::

    from kato_gpu import SymbolVocabularyEncoder, HybridGPUMatcher, GPUConfig
"""

import atexit
import logging
import os

from . import _native, cuda
from .config import DEFAULT_GPU_CONFIG, GPUConfig
from .encoder import SymbolVocabularyEncoder
from .errors import GPUUnavailableError, KatoGpuError
from .matcher import HybridGPUMatcher
from .metrics import similarity
from .sync import SyncManager

__version__ = _native.__version__
MatchResult = _native.MatchResult


def __getattr__(name: str):
    # KATO's ``kato.gpu.GPU_AVAILABLE``, answered when asked: probing the driver at import would
    # create a CUDA context in every process that imports the package.
    if name == "GPU_AVAILABLE":
        return cuda.available()
    raise AttributeError(f"module 'kato_gpu' has no attribute {name!r}")


logging.getLogger("kato_gpu").addHandler(logging.NullHandler())

# Fork: the native code finishes every operation in flight and holds new ones off across the fork,
# and a child gets its own thread pool (see docs/OPERATIONS.md, "Fork and exit").
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_native.before_fork,
        after_in_parent=lambda: _native.after_fork(False),
        after_in_child=lambda: _native.after_fork(True),
    )

# Exit: registered after the sync module's hook, so it runs before it (atexit is last in, first
# out). From then on a thread coming back from native code parks instead of taking the GIL from a
# finalising interpreter, which would abort the process.
atexit.register(_native.interpreter_exiting)

__all__ = [
    "DEFAULT_GPU_CONFIG",
    "GPUConfig",
    "GPU_AVAILABLE",
    "GPUUnavailableError",
    "HybridGPUMatcher",
    "KatoGpuError",
    "MatchResult",
    "SymbolVocabularyEncoder",
    "SyncManager",
    "similarity",
    "__version__",
]
