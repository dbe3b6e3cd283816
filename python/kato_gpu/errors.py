"""Exception types of kato_gpu.

Bad arguments raise the built-in ``TypeError`` / ``ValueError`` (as Python users expect); errors
that are about kato_gpu itself derive from :class:`KatoGpuError`.
"""


class KatoGpuError(Exception):
    """Base class for kato_gpu's own errors."""


class GPUUnavailableError(KatoGpuError, RuntimeError):
    """A GPU was required (``fallback_to_cpu=False``) but none can be used."""
