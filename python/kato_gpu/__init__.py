"""kato_gpu: exact, parallel pattern matching for KATO.

Drop-in replacements for KATO's ``kato.gpu`` classes::

    from kato_gpu import SymbolVocabularyEncoder, HybridGPUMatcher, GPUConfig
"""

import logging

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
