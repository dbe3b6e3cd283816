"""Switches kato_gpu on inside an unmodified KATO when ``KATO_GPU_ACCELERATE`` is set.

The wheel installs ``kato_gpu_hook.pth``, which imports this module at interpreter start. Without
the variable it does nothing else (kato_gpu itself is not imported). With it, the first import of
KATO's ``kato.workers.pattern_processor`` is followed by ``kato_gpu.kato.install()``, which routes
KATO's prediction paths through kato_gpu (see ``kato_gpu.kato``). Unset the variable to roll back.
"""

import os
import sys

_TARGET = "kato.workers.pattern_processor"
_ON = {"1", "true", "yes", "on"}


def _wanted() -> bool:
    return os.environ.get("KATO_GPU_ACCELERATE", "").strip().lower() in _ON


class _InstallAfterImport:
    """A meta-path finder that lets the normal finders locate KATO's module, then installs
    kato_gpu right after that module has executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        import importlib.machinery

        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        sys.meta_path.remove(self)
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            original(module)
            import kato_gpu.kato

            kato_gpu.kato.install()

        if isinstance(loader, importlib.machinery.SourceFileLoader):
            loader.exec_module = exec_module
        else:  # pragma: no cover - KATO is always loaded from source files
            return spec
        return spec


if _wanted() and _TARGET not in sys.modules:
    sys.meta_path.insert(0, _InstallAfterImport())
