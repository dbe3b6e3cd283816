"""kato_gpu.cuda: the kernel source, its cubins and PTX by NVRTC (and the disk cache), what the
device tier loads, ptxas reports, and device discovery. NVRTC and ptxas come from the nvidia-cuda-nvrtc-cu12 / nvidia-cuda-nvcc-cu12
wheels (installed by the Makefile), so these run without a GPU; tests marked `gpu` need one."""

from __future__ import annotations

import importlib.util
import os
import re
import struct
import subprocess
import sys
import textwrap

import pytest

import kato_gpu
import kato_gpu.cuda as kc


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


NVRTC_WHEEL = _importable("nvidia.cuda_nvrtc")
HAS_NVRTC = NVRTC_WHEEL or kc.device_info()["nvrtc_found"]
HAS_PTXAS = kc._find_ptxas() is not None

needs_nvrtc = pytest.mark.skipif(
    not HAS_NVRTC,
    reason="NVRTC not found: the nvidia-cuda-nvrtc-cu12 wheel is not installed (pip install nvidia-cuda-nvrtc-cu12)",
)
needs_ptxas = pytest.mark.skipif(
    not (HAS_NVRTC and HAS_PTXAS),
    reason="NVRTC or ptxas not found: install the nvidia-cuda-nvrtc-cu12 and nvidia-cuda-nvcc-cu12 wheels",
)
needs_gpu = pytest.mark.skipif(not kc.available(), reason="no usable CUDA GPU here")

ARCHES = ["sm_70", "sm_80", "sm_90"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own empty PTX cache (never the user's ~/.cache)."""
    path = tmp_path / "ptx-cache"
    monkeypatch.setenv("KATO_GPU_CACHE_DIR", str(path))
    return path


def entries(ptx: str) -> list:
    return re.findall(r"^\s*\.visible\s+\.entry\s+(\w+)\(", ptx, flags=re.MULTILINE)


# --- without NVRTC or a GPU ------------------------------------------------------------------


def test_exported_from_the_package():
    assert kato_gpu.cuda is kc


def test_entry_points_are_the_kernels_of_the_source():
    names = kc.entry_points()
    # One LCS kernel per token width (u16, u32) and bit vector (32-bit, 64-bit x 1..16 words),
    # one difflib kernel per token width and state bucket, then the pipeline's three kernels.
    lcs = [f"lcs_classes_u{t}_w{w}" for t in (16, 32) for w in ("32x1", "64x1", "64x2", "64x4", "64x8", "64x16")]
    difflib = [f"difflib_classes_u{t}_b{b}" for t in (16, 32) for b in (32, 64, 128, 256)]
    assert names == lcs + difflib + ["class_histogram", "choose_cutoff", "select_candidates"]
    src = kc.kernel_source()
    for name in names:
        assert re.search(r"^(LCS_|DIFFLIB_)?ENTRY[( ]" + name + r"[,(]", src, flags=re.MULTILINE), name
    assert '#define ENTRY extern "C" __global__ void __launch_bounds__(KATO_MAX_THREADS_PER_BLOCK, 1)' in src


def test_kernel_source_starts_with_the_generated_limits():
    src = kc.kernel_source()
    defines = dict(re.findall(r"^#define (KATO_\w+) (\S+)$", src, flags=re.MULTILINE))
    assert defines == {
        "KATO_MAX_LCS_WORDS": "16",
        "KATO_MAX_DIFFLIB_STATE": "256",
        "KATO_MAX_THREADS_PER_BLOCK": "1024",
        "KATO_HISTOGRAM_CLASSES": "4096",
        "KATO_STATE_HEADER_WORDS": "16",
        "KATO_CONTROL_OUT_LEN": "0",
        "KATO_CONTROL_CUTOFF": "1",
        "KATO_CONTROL_HISTOGRAM": "4",
        "KATO_CONTROL_WORDS": "4101",
        "KATO_NO_CLASS": "0xFFFFFFFFu",
        "KATO_OVER_LIMIT": "0xFFFFFFFEu",
        "KATO_NO_SLOT": "0xFFFFFFFFu",
        "KATO_NO_SYMBOL": "0xFFFFFFFFu",
    }
    # Defined once, in front of the kernel file, which itself defines none.
    assert src.index("#error") > max(src.index(f"#define {name} ") for name in defines)


@pytest.mark.parametrize("arch", ["sm_5", "sm_49", "gfx90a", "", "sm_xx", "sm_90a", "compute_", "90", "sm_1000"])
def test_bad_arch_is_a_value_error(arch):
    for compile_for in (kc.compile_ptx, kc.compile_cubin, kc.kernel_image):
        with pytest.raises(ValueError, match="architecture"):
            compile_for(arch)


@pytest.mark.parametrize("arch", [90, None, 9.0, b"sm_90", ["sm_90"]])
def test_non_string_arch_is_a_type_error(arch):
    for compile_for in (kc.compile_ptx, kc.compile_cubin, kc.kernel_image):
        with pytest.raises(TypeError):
            compile_for(arch)
    for native in (kc._native.cuda_compile_ptx, kc._native.cuda_compile_cubin, kc._native.cuda_kernel_image):
        with pytest.raises(TypeError):
            native(arch)


def test_device_info_keys_and_consistency():
    info = kc.device_info()
    assert set(info) == {
        "available",
        "reason",
        "driver_found",
        "nvrtc_found",
        "nvrtc_version",
        "device_count",
        "name",
        "compute_capability",
        "total_memory_bytes",
        "free_memory_bytes",
    }
    assert isinstance(info["available"], bool)
    assert info["available"] == (info["reason"] is None)
    assert kc.available() == info["available"]
    assert (info["nvrtc_version"] is not None) == info["nvrtc_found"]
    if not info["available"]:
        assert isinstance(info["reason"], str) and info["reason"]


def test_without_a_driver_nothing_is_available():
    info = kc.device_info()
    if info["driver_found"]:
        pytest.skip("a CUDA driver is installed here")
    assert kc.available() is False
    assert "driver" in info["reason"]
    assert info["device_count"] == 0
    assert info["name"] is None and info["compute_capability"] is None


def test_min_compute_capability_is_checked():
    for bad in ("7.0", None, True):
        with pytest.raises(TypeError):
            kc.device_info(bad)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            kc.device_info(bad)


def test_import_needs_no_cuda():
    """A fresh interpreter that cannot see the NVIDIA wheels still imports kato_gpu, fast, and
    gets a reason instead of an exception."""
    code = textwrap.dedent(
        """
        import sys, time
        sys.modules["nvidia"] = None  # the NVIDIA wheels are not importable
        t = time.perf_counter()
        import kato_gpu
        elapsed = time.perf_counter() - t
        info = kato_gpu.cuda.device_info()
        assert info["available"] == (info["reason"] is None), info
        assert kato_gpu.cuda.entry_points()
        print(elapsed)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) < 5.0


def test_missing_nvrtc_is_a_clear_error():
    """Without the wheel (and no system NVRTC) compiling raises CudaToolError naming the wheel."""
    code = textwrap.dedent(
        """
        import kato_gpu.cuda as kc
        kc._nvrtc_wheel_library = lambda: None  # as if nvidia-cuda-nvrtc-cu12 were not installed
        info = kc.device_info()
        if info["nvrtc_found"]:
            print("system-nvrtc")
            raise SystemExit(0)
        assert info["available"] is False and info["nvrtc_version"] is None, info
        for compile_for in (kc.compile_ptx, kc.compile_cubin, kc.kernel_image):
            try:
                compile_for("sm_80")
            except kc.CudaToolError as exc:
                assert isinstance(exc, RuntimeError)
                print(exc)
            else:
                raise AssertionError("compiled without NVRTC")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "system-nvrtc":
        pytest.skip("a system NVRTC is on the loader path")
    assert "nvidia-cuda-nvrtc-cu12" in out.stdout


def test_ptxas_missing_is_a_clear_error(monkeypatch):
    if not HAS_NVRTC:
        pytest.skip("NVRTC not found (the report compiles the PTX first)")
    monkeypatch.setattr(kc, "_find_ptxas", lambda: None)
    with pytest.raises(kc.CudaToolError, match="ptxas was not found"):
        kc.ptxas_report("sm_90")


def test_ptxas_output_parsing():
    output = textwrap.dedent(
        """\
        ptxas info    : 0 bytes gmem
        ptxas info    : Compiling entry function 'k1' for 'sm_80'
        ptxas info    : Function properties for k1
            16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
        ptxas info    : Used 64 registers, used 1 barriers, 16 bytes cumulative stack size, 1024 bytes smem, 400 bytes cmem[0]
        ptxas info    : Function properties for helper
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Compiling entry function 'k2' for 'sm_80'
        ptxas info    : Function properties for k2
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 12 registers, 352 bytes cmem[0]
        """
    )
    rows = kc._parse_ptxas(output)
    assert rows == {
        "k1": {
            "kernel": "k1",
            "arch": "sm_80",
            "registers": 64,
            "stack_frame_bytes": 16,
            "spill_stores_bytes": 8,
            "spill_loads_bytes": 4,
            "shared_memory_bytes": 1024,
        },
        "k2": {
            "kernel": "k2",
            "arch": "sm_80",
            "registers": 12,
            "stack_frame_bytes": 0,
            "spill_stores_bytes": 0,
            "spill_loads_bytes": 0,
            "shared_memory_bytes": 0,
        },
    }


# --- NVRTC (the wheel; no GPU needed) --------------------------------------------------------


@pytest.mark.skipif(not NVRTC_WHEEL, reason="the nvidia-cuda-nvrtc-cu12 wheel is not installed")
def test_wheel_nvrtc_is_found():
    info = kc.device_info()
    assert info["nvrtc_found"] is True
    major, minor = info["nvrtc_version"]
    assert major >= 12 and minor >= 0


@needs_nvrtc
@pytest.mark.parametrize("arch", ARCHES)
def test_compile_ptx_has_every_entry_point(arch):
    ptx = kc.compile_ptx(arch)
    assert re.search(r"^\.target " + arch + r"\s*$", ptx, flags=re.MULTILINE), ptx[:400]
    assert sorted(entries(ptx)) == sorted(kc.entry_points())
    for name in kc.entry_points():
        assert f".entry {name}(" in ptx
    assert "\0" not in ptx


@needs_nvrtc
def test_compute_arch_is_accepted():
    ptx = kc.compile_ptx("compute_90")
    assert re.search(r"^\.target sm_90\s*$", ptx, flags=re.MULTILINE)
    assert ptx == kc.compile_ptx("sm_90")
    assert sorted(entries(ptx)) == sorted(kc.entry_points())


@needs_nvrtc
def test_default_arch_is_sm_90():
    assert re.search(r"^\.target sm_90\s*$", kc.compile_ptx(), flags=re.MULTILINE)


@needs_nvrtc
def test_disk_cache_is_written_and_reused(cache_dir):
    assert not cache_dir.exists()
    ptx = kc.compile_ptx("sm_80")
    files = sorted(cache_dir.iterdir())
    assert len(files) == 1 and "compute_80" in files[0].name and files[0].suffix == ".ptx"
    assert files[0].read_text().endswith(ptx)
    assert kc.compile_ptx("sm_80") == ptx
    # The entry is what a second call returns: replace its body, keeping its header (with the
    # body's new length).
    header, _, _ = files[0].read_text().partition("\n")
    assert header.startswith("// kato_gpu ptx cache") and header.endswith(f" len={len(ptx)}")
    body = "// from the cache\n" + ptx
    files[0].write_text(header.rpartition(" len=")[0] + f" len={len(body)}\n" + body)
    assert kc.compile_ptx("sm_80") == body
    # A different architecture is a different entry; no temporary files are left behind.
    kc.compile_ptx("sm_90")
    names = sorted(p.name for p in cache_dir.iterdir())
    assert len(names) == 2 and not any(n.startswith(".") for n in names)


@needs_nvrtc
def test_damaged_cache_entry_is_recompiled(cache_dir):
    ptx = kc.compile_ptx("sm_70")
    (entry,) = cache_dir.iterdir()
    entry.write_text("garbage\n")
    assert kc.compile_ptx("sm_70") == ptx
    assert entry.read_text().endswith(ptx)


@needs_nvrtc
def test_cubin_cache_entries_are_checked(cache_dir):
    cubin = kc.compile_cubin("sm_90")
    (entry,) = cache_dir.iterdir()
    assert "sm_90" in entry.name and entry.suffix == ".cubin"
    raw = entry.read_bytes()
    header, _, body = raw.partition(b"\n")
    assert header.startswith(b"// kato_gpu cubin cache") and header.endswith(b" len=%d" % len(cubin))
    assert body == cubin and kc.compile_cubin("sm_90") == cubin
    # Truncated, padded, not an ELF image of the stated length, garbage: each is recompiled and
    # rewritten whole.
    prefix = header.rpartition(b" len=")[0]
    for damaged in (
        raw[:-100],
        raw + b"\0",
        prefix + b" len=8\nnot-cuda",
        b"garbage\n",
        b"",
    ):
        entry.write_bytes(damaged)
        assert kc.compile_cubin("sm_90") == cubin
        assert entry.read_bytes() == raw
    # PTX and cubin entries of one architecture live side by side.
    kc.compile_ptx("sm_90")
    assert sorted(p.suffix for p in cache_dir.iterdir()) == [".cubin", ".ptx"]


@needs_nvrtc
def test_unwritable_cache_still_compiles(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("KATO_GPU_CACHE_DIR", str(blocker / "cache"))
    assert sorted(entries(kc.compile_ptx("sm_80"))) == sorted(kc.entry_points())


@needs_nvrtc
def test_cache_dir_falls_back_to_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("KATO_GPU_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    kc.compile_ptx("sm_80")
    assert len(list((tmp_path / "xdg" / "kato_gpu").iterdir())) == 1


# The PTX ISA each CUDA 12 release writes (and so the oldest driver that JIT-compiles NVRTC's PTX).
PTX_ISA = {0: (8, 0), 1: (8, 1), 2: (8, 2), 3: (8, 3), 4: (8, 4), 5: (8, 5), 6: (8, 5), 8: (8, 7), 9: (8, 8)}
EM_CUDA = 190


def elf_cuda_arch(image: bytes) -> int:
    """The sm_XY a cubin is for, read from its ELF header (CUDA ELF ABI 7: e_flags bits 0-7;
    ABI 8, sm_100 and newer: bits 8-15)."""
    assert image[:4] == b"\x7fELF", image[:16]
    assert image[4] == 2 and image[5] == 1  # ELFCLASS64, little-endian
    (e_machine,) = struct.unpack_from("<H", image, 18)
    assert e_machine == EM_CUDA
    (e_flags,) = struct.unpack_from("<I", image, 48)
    return (e_flags >> 8) & 0xFF if image[8] >= 8 else e_flags & 0xFF


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_70", "sm_80", "sm_86", "sm_90", "compute_90", "sm_120"])
def test_compile_cubin_is_an_elf_image_for_the_arch(arch):
    cubin = kc.compile_cubin(arch)
    assert isinstance(cubin, bytes)
    assert elf_cuda_arch(cubin) == int(arch.split("_")[1])
    for name in kc.entry_points():
        assert name.encode() + b"\0" in cubin, name


@needs_nvrtc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_tier_loads_a_cubin_for_the_device_arch(arch):
    """What the device tier loads on an A100/H100-class device needs no PTX JIT, so the NVRTC's
    PTX ISA (which only drivers as new as the NVRTC accept) does not matter: a cubin for the
    exact architecture, which every CUDA 12 driver (R525+) loads."""
    kind, target, image = kc.kernel_image(arch)
    assert (kind, target) == ("cubin", arch)
    assert elf_cuda_arch(image) == int(arch[3:])
    assert image == kc.compile_cubin(arch)


@needs_nvrtc
def test_ptx_is_the_fallback_for_an_arch_nvrtc_cannot_target():
    """A device newer than the NVRTC (an unknown sm_XY) gets PTX for the newest architecture NVRTC
    targets, JIT-compiled by its driver — which, supporting that device, is newer than the NVRTC
    and so accepts its PTX ISA."""
    kind, target, image = kc.kernel_image("sm_990")
    assert kind == "ptx" and target.startswith("compute_")
    ptx = image.decode()
    newest = int(target.split("_")[1])
    assert re.search(rf"^\.target sm_{newest}\s*$", ptx, flags=re.MULTILINE)
    assert sorted(entries(ptx)) == sorted(kc.entry_points())
    assert newest >= 90
    major, minor = kc.device_info()["nvrtc_version"]
    version = re.search(r"^\.version (\d+)\.(\d+)\s*$", ptx, flags=re.MULTILINE)
    assert version, ptx[:300]
    isa = (int(version.group(1)), int(version.group(2)))
    if major == 12 and minor in PTX_ISA:
        assert isa == PTX_ISA[minor], (isa, (major, minor))
    assert isa >= (8, 0)  # PTX ISA 8.0 is CUDA 12.0's, the oldest CUDA 12 NVRTC's


@needs_ptxas
@pytest.mark.parametrize("arch", ["sm_90", "sm_80", "compute_70"])
def test_ptxas_report(arch):
    rows = kc.ptxas_report(arch)
    assert [r["kernel"] for r in rows] == kc.entry_points()
    for row in rows:
        assert row["arch"] == "sm_" + arch.split("_")[1]
        keys = ("registers", "spill_stores_bytes", "spill_loads_bytes", "stack_frame_bytes", "shared_memory_bytes")
        for key in keys:
            assert isinstance(row[key], int) and row[key] >= 0, (key, row)
        assert 0 < row["registers"] <= 255
        # __launch_bounds__(1024, 1): a 1024-thread block fits the 64K-register file, no spills.
        assert row["registers"] <= 65536 // 1024, row
        assert row["spill_stores_bytes"] == 0 and row["spill_loads_bytes"] == 0, row
        if row["kernel"].startswith("lcs_classes_"):
            # The bit vector is in registers: no per-thread local array at all.
            assert row["stack_frame_bytes"] == 0, row


# --- on a GPU --------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
def test_gpu_device_is_described():
    info = kc.device_info()
    assert info["available"] is True and info["reason"] is None
    assert info["driver_found"] and info["nvrtc_found"]
    assert info["device_count"] >= 1
    assert isinstance(info["name"], str) and info["name"]
    major, minor = info["compute_capability"]
    assert isinstance(major, int) and isinstance(minor, int) and (major, minor) >= (7, 0)
    assert 0 < info["free_memory_bytes"] <= info["total_memory_bytes"]


@pytest.mark.gpu
@needs_gpu
def test_gpu_minimum_capability_above_the_device():
    major, minor = kc.device_info()["compute_capability"]
    info = kc.device_info(major + 1.0)
    assert info["available"] is False
    assert "compute capability" in info["reason"]
    assert info["compute_capability"] == (major, minor)


@pytest.mark.gpu
@needs_gpu
def test_gpu_loads_a_cubin_for_its_own_arch():
    major, minor = kc.device_info()["compute_capability"]
    kind, target, image = kc.kernel_image(f"sm_{major}{minor}")
    assert (kind, target) == ("cubin", f"sm_{major}{minor}")
    assert elf_cuda_arch(image) == major * 10 + minor


@pytest.mark.gpu
@needs_gpu
@needs_ptxas
def test_gpu_own_arch_assembles():
    major, minor = kc.device_info()["compute_capability"]
    rows = kc.ptxas_report(f"sm_{major}{minor}")
    assert [r["kernel"] for r in rows] == kc.entry_points()
