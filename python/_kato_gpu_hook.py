"""Switches kato_gpu on inside an unmodified KATO when ``KATO_GPU_ACCELERATE`` is set.

The wheel installs ``kato_gpu_hook.pth``, which imports this module at interpreter start. Without
the variable it does nothing else (kato_gpu itself is not imported). With it, the first import of
KATO's ``kato.workers.pattern_processor`` is followed by ``kato_gpu.kato.install()``, which routes
KATO's prediction paths through kato_gpu (see ``kato_gpu.kato``). Unset the variable to roll back.
"""

import os
import sys

# What to do after each KATO module has executed.
_AFTER = {
    "kato.workers.pattern_processor": "install",
    "kato.services.kato_fastapi": "add_status_route",
}
_ON = {"1", "true", "yes", "on"}


def _wanted() -> bool:
    return os.environ.get("KATO_GPU_ACCELERATE", "").strip().lower() in _ON


class _InstallAfterImport:
    """A meta-path finder that lets the normal finders locate KATO's module, then installs
    kato_gpu right after that module has executed (and adds ``GET /kato-gpu/status`` to KATO's app)."""

    def find_spec(self, fullname, path, target=None):
        action = _AFTER.get(fullname)
        if action is None:
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
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            original(module)
            import kato_gpu.kato

            if action == "install":
                kato_gpu.kato.install()
            else:
                kato_gpu.kato.add_status_route(module.app)

        if isinstance(loader, importlib.machinery.SourceFileLoader):
            loader.exec_module = exec_module
        else:  # pragma: no cover - KATO is always loaded from source files
            return spec
        return spec


if _wanted() and not any(name in sys.modules for name in _AFTER):
    sys.meta_path.insert(0, _InstallAfterImport())
