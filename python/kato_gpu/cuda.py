"""The GPU tier's toolchain: device discovery, the kernel source, its cubins and PTX, and ptxas
reports.

Nothing here needs CUDA to import, and nothing touches the driver until called::

    import kato_gpu.cuda as kc
    kc.available()                 # False without a usable GPU; device_info()["reason"] says why
    kc.compile_cubin("sm_90")      # ELF image of the kernels for sm_90, by NVRTC (cached on disk)
    kc.compile_ptx("sm_90")        # PTX of the kernels for compute_90 (cached on disk)
    kc.kernel_image("sm_90")       # what the device tier loads there: ("cubin", "sm_90", image)
    kc.ptxas_report("sm_90")       # registers / spills per kernel, by ptxas

NVRTC is found by the extension at run time (``libnvrtc.so.12``). When the
``nvidia-cuda-nvrtc-cu12`` wheel is installed (``pip install kato-gpu[gpu]``), its copy is
preloaded first, so it is the one used; otherwise a CUDA toolkit on the loader path is.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import _native
from .errors import KatoGpuError

__all__ = [
    "CudaToolError",
    "available",
    "compile_cubin",
    "compile_ptx",
    "device_info",
    "entry_points",
    "kernel_image",
    "kernel_source",
    "ptxas_report",
]

_NVRTC_SONAME = "libnvrtc.so.12"


class CudaToolError(KatoGpuError, RuntimeError):
    """NVRTC or ptxas is missing, or failed (the message says which, with its log)."""


# --- NVRTC preload ---------------------------------------------------------------------------

_preload_lock = threading.Lock()
_preload_done = False
_preloaded_path: Optional[str] = None


def _wheel_dirs(package: str) -> List[Path]:
    """Directories of ``nvidia.<package>`` (a namespace package in the NVIDIA wheels), from the
    import system first, then from every site directory on ``sys.path``."""
    dirs: List[Path] = []
    try:
        import importlib.util

        spec = importlib.util.find_spec(f"nvidia.{package}")
    except (ImportError, ValueError, AttributeError):
        spec = None
    if spec is not None:
        if spec.submodule_search_locations:
            dirs.extend(Path(p) for p in spec.submodule_search_locations)
        elif spec.origin:
            dirs.append(Path(spec.origin).parent)
    for entry in sys.path:
        if entry:
            dirs.append(Path(entry) / "nvidia" / package)
    unique: List[Path] = []
    for d in dirs:
        if d.is_dir() and d not in unique:
            unique.append(d)
    return unique


def _nvrtc_wheel_library() -> Optional[Path]:
    """``libnvrtc.so.12`` of the ``nvidia-cuda-nvrtc-cu12`` wheel, if installed."""
    for d in _wheel_dirs("cuda_nvrtc"):
        candidate = d / "lib" / _NVRTC_SONAME
        if candidate.is_file():
            return candidate
    return None


def _preload_nvrtc() -> Optional[str]:
    """Loads the wheel's NVRTC once, globally, so the extension's ``dlopen("libnvrtc.so.12")``
    resolves to it. Without the wheel nothing is loaded and the normal loader path applies.
    Returns the path loaded, if any. Never raises."""
    global _preload_done, _preloaded_path
    if _preload_done:
        return _preloaded_path
    with _preload_lock:
        if _preload_done:
            return _preloaded_path
        if sys.platform.startswith("linux"):
            path = _nvrtc_wheel_library()
            if path is not None:
                try:
                    import ctypes

                    ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                    _preloaded_path = str(path)
                except OSError as exc:
                    import logging

                    logging.getLogger(__name__).warning("kato_gpu: cannot load NVRTC from %s: %s", path, exc)
        _preload_done = True
        return _preloaded_path


# --- device and kernels ----------------------------------------------------------------------


def _check_min_cc(min_compute_capability: object) -> float:
    if isinstance(min_compute_capability, bool) or not isinstance(min_compute_capability, (int, float)):
        raise TypeError(f"min_compute_capability must be a number, got {type(min_compute_capability).__name__}")
    return float(min_compute_capability)


def device_info(min_compute_capability: float = 7.0) -> Dict[str, Any]:
    """What CUDA this process can use. Keys: ``available``, ``reason`` (why not, or ``None``),
    ``driver_found``, ``nvrtc_found``, ``nvrtc_version`` ((major, minor) or ``None``),
    ``device_count``, and for device 0: ``name``, ``compute_capability`` ((major, minor)),
    ``total_memory_bytes``, ``free_memory_bytes`` (``None`` without a device).

    A device below ``min_compute_capability`` is described but not available. Never raises
    for a missing driver, device or NVRTC."""
    minimum = _check_min_cc(min_compute_capability)
    _preload_nvrtc()
    return dict(_native.cuda_probe(minimum))


def available(min_compute_capability: float = 7.0) -> bool:
    """Whether device 0 (of at least ``min_compute_capability``) and NVRTC can be used."""
    return bool(device_info(min_compute_capability)["available"])


def entry_points() -> List[str]:
    """The ``extern "C"`` kernel names in :func:`kernel_source`."""
    return list(_native.cuda_entry_points())


def kernel_source() -> str:
    """The CUDA C++ source of the kernels exactly as NVRTC compiles it: the ``#define`` block of
    the kernels' limits (generated from the Rust constants, their one definition), then
    ``kernels/match.cu``."""
    return _native.cuda_kernel_source()


def _check_arch(arch: object) -> str:
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a str such as 'sm_90', got {type(arch).__name__}")
    return arch


def compile_ptx(arch: str = "sm_90") -> str:
    """PTX of the kernels for ``arch`` (``"sm_XY"`` or ``"compute_XY"``, XY >= 50), generated
    for ``compute_XY`` by NVRTC. Results are cached on disk under ``$KATO_GPU_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/kato_gpu``, else ``~/.cache/kato_gpu``.

    Raises ``TypeError``/``ValueError`` for a bad ``arch`` and :class:`CudaToolError` when NVRTC
    is missing or fails (with its log)."""
    _check_arch(arch)
    _preload_nvrtc()
    try:
        return _native.cuda_compile_ptx(arch)
    except ValueError:
        raise
    except RuntimeError as exc:
        raise CudaToolError(str(exc)) from exc


def _nvrtc_call(function: Any, arch: object) -> Any:
    _check_arch(arch)
    _preload_nvrtc()
    try:
        return function(arch)
    except ValueError:
        raise
    except RuntimeError as exc:
        raise CudaToolError(str(exc)) from exc


def compile_cubin(arch: str = "sm_90") -> bytes:
    """A cubin of the kernels for ``arch`` (``"sm_XY"`` or ``"compute_XY"``, XY >= 50): the ELF
    image NVRTC builds for the real architecture ``sm_XY``, which every CUDA 12 driver (R525 and
    newer) loads. Cached on disk beside :func:`compile_ptx`'s entries.

    Raises ``TypeError``/``ValueError`` for a bad ``arch`` and :class:`CudaToolError` when NVRTC
    is missing, cannot target ``sm_XY`` or fails (with its log)."""
    return bytes(_nvrtc_call(_native.cuda_compile_cubin, arch))


def kernel_image(arch: str = "sm_90") -> Tuple[str, str, bytes]:
    """What the device tier loads on a device of architecture ``arch``: ``("cubin", "sm_XY",
    image)`` when NVRTC can build for ``sm_XY`` (every architecture it lists), else ``("ptx",
    "compute_VW", text)`` for the newest architecture below it that NVRTC targets, which the
    driver JIT-compiles (a device newer than the NVRTC has a driver newer than it too). Errors
    as :func:`compile_cubin`."""
    kind, target, image = _nvrtc_call(_native.cuda_kernel_image, arch)
    return str(kind), str(target), bytes(image)


# --- ptxas -----------------------------------------------------------------------------------


def _find_ptxas() -> Optional[str]:
    """``ptxas`` from the ``nvidia-cuda-nvcc-cu12`` wheel, else ``$CUDA_HOME/bin``, else PATH."""
    exe = "ptxas.exe" if sys.platform == "win32" else "ptxas"
    for d in _wheel_dirs("cuda_nvcc"):
        candidate = d / "bin" / exe
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root:
            candidate = Path(root) / "bin" / exe
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    import shutil

    return shutil.which(exe)


# Lines of `ptxas -v` (CUDA 11 and 12 formats).
_ENTRY_RE = r"Compiling entry function '([^']+)' for '([^']+)'"
_PROPS_RE = r"Function properties for (\S+)"
_FRAME_RE = r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
_USED_RE = r"Used (\d+) registers"
_SMEM_RE = r"(\d+) bytes smem"


def _parse_ptxas(output: str) -> Dict[str, Dict[str, Any]]:
    """Per-function facts from ``ptxas -v`` output, for the entry functions only."""
    import re

    rows: Dict[str, Dict[str, Any]] = {}
    current: Optional[str] = None  # the entry being compiled ("Used N registers" follows)
    props: Optional[str] = None  # the function whose properties line comes next
    for line in output.splitlines():
        m = re.search(_ENTRY_RE, line)
        if m:
            current = m.group(1)
            rows.setdefault(current, {"kernel": current, "arch": m.group(2)})
            continue
        m = re.search(_PROPS_RE, line)
        if m:
            props = m.group(1)
            continue
        m = re.search(_FRAME_RE, line)
        if m and props is not None:
            if props in rows:
                rows[props].update(
                    stack_frame_bytes=int(m.group(1)),
                    spill_stores_bytes=int(m.group(2)),
                    spill_loads_bytes=int(m.group(3)),
                )
            props = None
            continue
        m = re.search(_USED_RE, line)
        if m and current is not None:
            smem = re.search(_SMEM_RE, line)
            rows[current].update(registers=int(m.group(1)), shared_memory_bytes=int(smem.group(1)) if smem else 0)
            current = None
    return rows


def ptxas_report(arch: str = "sm_90") -> List[Dict[str, Any]]:
    """Assembles the kernels' PTX for ``arch`` with ``ptxas -v`` and returns, per entry point
    (in :func:`entry_points` order), a dict with ``kernel``, ``arch``, ``registers``,
    ``spill_stores_bytes``, ``spill_loads_bytes``, ``stack_frame_bytes`` and
    ``shared_memory_bytes`` (static). ``ptxas`` comes from the ``nvidia-cuda-nvcc-cu12`` wheel,
    ``$CUDA_HOME/bin`` or PATH; :class:`CudaToolError` when it is missing or fails."""
    _check_arch(arch)
    ptx = compile_ptx(arch)  # also validates arch
    sm = "sm_" + arch.split("_", 1)[1]
    ptxas = _find_ptxas()
    if ptxas is None:
        raise CudaToolError(
            "ptxas was not found: install the nvidia-cuda-nvcc-cu12 wheel "
            "(pip install nvidia-cuda-nvcc-cu12) or put a CUDA toolkit's bin/ on PATH"
        )
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kato_gpu_ptxas_") as tmp:
        src = Path(tmp) / "match.ptx"
        src.write_text(ptx)
        cmd = [ptxas, "-v", f"-arch={sm}", "-o", str(Path(tmp) / "match.cubin"), str(src)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise CudaToolError(f"cannot run {ptxas}: {exc}") from exc
    output = proc.stdout + "\n" + proc.stderr
    if proc.returncode != 0:
        raise CudaToolError(f"ptxas failed for {sm} (exit {proc.returncode}):\n{output.strip()}")
    rows = _parse_ptxas(output)
    report = []
    for name in entry_points():
        row = rows.get(name)
        if row is None or "registers" not in row:
            raise CudaToolError(f"no ptxas -v report for kernel {name!r} ({sm}):\n{output.strip()}")
        row.setdefault("stack_frame_bytes", 0)
        row.setdefault("spill_stores_bytes", 0)
        row.setdefault("spill_loads_bytes", 0)
        report.append(row)
    return report
