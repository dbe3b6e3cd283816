"""kato_gpu: exact, parallel pattern matching for KATO.

Drop-in replacements for KATO's ``kato.gpu`` classes::

    from kato_gpu import SymbolVocabularyEncoder, HybridGPUMatcher, GPUConfig
"""

import logging

from . import _native
from . import cuda
from .config import DEFAULT_GPU_CONFIG, GPUConfig
from .encoder import SymbolVocabularyEncoder
from .errors import GPUUnavailableError, KatoGpuError
from .matcher import HybridGPUMatcher
from .metrics import similarity

__version__ = _native.__version__
MatchResult = _native.MatchResult

#: Whether a usable GPU tier exists in this build (KATO's ``kato.gpu.GPU_AVAILABLE``).
GPU_AVAILABLE = False

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
    "similarity",
    "__version__",
]
