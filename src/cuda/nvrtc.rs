//! Compiling [`KERNEL_SOURCE`] to PTX with NVRTC, loaded at run time, and an on-disk PTX cache.
//!
//! NVRTC is looked up by cudarc (`libnvrtc.so`, `libnvrtc.so.12`, ...) through the normal loader
//! path; the Python package preloads the copy in the `nvidia-cuda-nvrtc-cu12` wheel so that the
//! same lookup finds it. Presence is checked before any other NVRTC call (cudarc panics on a
//! missing library), and every call is wrapped in `catch_unwind`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cudarc::nvrtc::{self, CompileError, CompileOptions};

use super::error::{catch, CudaError};
use super::KERNEL_SOURCE;

/// Bumped whenever the layout of a cache file or the compile options change.
const CACHE_FORMAT: u32 = 1;

/// The oldest architecture accepted (`sm_50`, Maxwell).
const MIN_ARCH: u32 = 50;

/// The validated number `XY` of `"sm_XY"` or `"compute_XY"`: two or three digits, no leading
/// zero, at least 50.
pub fn parse_arch(arch: &str) -> Result<u32, CudaError> {
    let invalid = || CudaError::InvalidArch(arch.to_string());
    let digits = arch.strip_prefix("sm_").or_else(|| arch.strip_prefix("compute_")).ok_or_else(invalid)?;
    let well_formed =
        matches!(digits.len(), 2 | 3) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    if !well_formed {
        return Err(invalid());
    }
    let number: u32 = digits.parse().map_err(|_| invalid())?;
    if number < MIN_ARCH {
        return Err(invalid());
    }
    Ok(number)
}

/// The virtual architecture the PTX is generated for: `"compute_XY"`.
pub fn virtual_arch(arch: &str) -> Result<String, CudaError> {
    parse_arch(arch).map(|n| format!("compute_{n}"))
}

/// Whether cudarc can load an NVRTC library now. Never panics.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    std::panic::catch_unwind(|| unsafe { nvrtc::sys::is_culib_present() }).unwrap_or(false)
}

/// The version of the NVRTC that would compile the kernels, or `None` when none can be loaded.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_present() {
        return None;
    }
    catch(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: both pointers are valid for writes; the library is present.
        unsafe { nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|_| CudaError::NvrtcMissing)?;
        Ok((major, minor))
    })
    .ok()
}

/// The NVRTC options for `compute_arch` (also part of the cache key).
fn compile_options(compute_arch: &str) -> Vec<String> {
    vec![format!("--gpu-architecture={compute_arch}")]
}

/// Compiles [`KERNEL_SOURCE`] to PTX for `compute_XY` (`arch` is `"sm_XY"` or `"compute_XY"`).
/// The kernels keep their `extern "C"` names. The bindings compile through the cache
/// ([`compile_ptx_cached`]); this uncached form is for the tests.
#[cfg(test)]
pub fn compile_ptx(arch: &str) -> Result<String, CudaError> {
    let compute_arch = virtual_arch(arch)?;
    if !nvrtc_present() {
        return Err(CudaError::NvrtcMissing);
    }
    compile_for(&compute_arch)
}

fn compile_for(compute_arch: &str) -> Result<String, CudaError> {
    catch(|| {
        let opts = CompileOptions {
            options: compile_options(compute_arch),
            name: Some("match.cu".to_string()),
            ..Default::default()
        };
        let ptx = nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts).map_err(|e| compile_error(compute_arch, e))?;
        let text = ptx.to_src();
        // The image is NUL-terminated C text; keep only the text.
        Ok(text.trim_end_matches('\0').to_string())
    })
}

fn compile_error(compute_arch: &str, err: CompileError) -> CudaError {
    let log = match err {
        CompileError::CompileError { nvrtc, log, .. } => {
            let log = log.to_string_lossy();
            let log = log.trim();
            if log.is_empty() {
                format!("{nvrtc:?}")
            } else {
                format!("{log}\n({nvrtc:?})")
            }
        }
        other => format!("{other:?}"),
    };
    CudaError::Compile { arch: compute_arch.to_string(), log }
}

/// [`compile_ptx`] through an on-disk cache keyed by the kernel source, the architecture, the
/// compile options and the NVRTC version. The directory is `$KATO_GPU_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/kato_gpu`, else `~/.cache/kato_gpu`, read at each call. A cache that cannot
/// be read or written only logs a warning: the kernels are then compiled in memory.
pub fn compile_ptx_cached(arch: &str) -> Result<String, CudaError> {
    let compute_arch = virtual_arch(arch)?;
    let version = nvrtc_version().ok_or(CudaError::NvrtcMissing)?;
    let Some(dir) = cache_dir() else {
        log::warn!("kato_gpu PTX cache disabled: none of KATO_GPU_CACHE_DIR, XDG_CACHE_HOME, HOME is set");
        return compile_for(&compute_arch);
    };
    let key = cache_key(&compute_arch, version);
    let path = dir.join(format!("match-{compute_arch}-{key:032x}.ptx"));
    let header = format!(
        "// kato_gpu PTX cache v{CACHE_FORMAT} key={key:032x} arch={compute_arch} nvrtc={}.{}\n",
        version.0, version.1
    );
    match read_cached(&path, &header) {
        Ok(Some(ptx)) => {
            log::debug!("kato_gpu PTX for {compute_arch} read from {}", path.display());
            return Ok(ptx);
        }
        Ok(None) => {}
        Err(e) => log::warn!("kato_gpu PTX cache: cannot read {}: {e}; compiling", path.display()),
    }
    let ptx = compile_for(&compute_arch)?;
    match write_atomic(&dir, &path, &header, &ptx) {
        Ok(()) => log::debug!("kato_gpu PTX for {compute_arch} cached at {}", path.display()),
        Err(e) => log::warn!("kato_gpu PTX cache: cannot write {}: {e}", path.display()),
    }
    Ok(ptx)
}

/// The cache directory, from the environment at the time of the call.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("KATO_GPU_CACHE_DIR") {
        return Some(dir);
    }
    if let Some(dir) = var("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
        return Some(dir.join("kato_gpu"));
    }
    var("HOME").map(|home| home.join(".cache").join("kato_gpu"))
}

/// 128-bit FNV-1a over length-prefixed fields: stable across Rust releases and platforms.
fn cache_key(compute_arch: &str, version: (i32, i32)) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    let mut hash = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            hash ^= u128::from(b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    feed(&CACHE_FORMAT.to_le_bytes());
    feed(KERNEL_SOURCE.as_bytes());
    feed(compute_arch.as_bytes());
    for option in compile_options(compute_arch) {
        feed(option.as_bytes());
    }
    feed(&version.0.to_le_bytes());
    feed(&version.1.to_le_bytes());
    hash
}

/// The cached PTX, `None` when there is no entry or it is not a valid one (wrong header, empty).
fn read_cached(path: &Path, header: &str) -> std::io::Result<Option<String>> {
    let text = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Ok(text) = String::from_utf8(text) else {
        log::warn!("kato_gpu PTX cache: {} is not UTF-8; recompiling", path.display());
        return Ok(None);
    };
    match text.strip_prefix(header) {
        Some(ptx) if !ptx.trim().is_empty() => Ok(Some(ptx.to_string())),
        _ => {
            log::warn!("kato_gpu PTX cache: {} is not a valid entry; recompiling", path.display());
            Ok(None)
        }
    }
}

/// Writes `header` + `ptx` to a temporary file in `dir`, then renames it over `path`, so a
/// reader never sees a partial entry (concurrent writers all write the same text).
fn write_atomic(dir: &Path, path: &Path, header: &str, ptx: &str) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("match.ptx");
    let tmp = dir.join(format!(".{file_name}.{}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(header.as_bytes())?;
        file.write_all(ptx.as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_parsing() {
        for (arch, n) in [("sm_50", 50), ("sm_70", 70), ("compute_90", 90), ("sm_100", 100), ("compute_120", 120)] {
            assert_eq!(parse_arch(arch), Ok(n), "{arch}");
        }
        assert_eq!(virtual_arch("sm_86").unwrap(), "compute_86");
        for bad in [
            "", "sm_", "sm_5", "sm_49", "sm_30", "sm_xx", "sm_90a", "sm_1000", "sm_080", "SM_90", "gfx90a", "90",
            "compute_", "sm_+90", " sm_90", "sm_90 ", "sm_9٠",
        ] {
            assert!(matches!(parse_arch(bad), Err(CudaError::InvalidArch(s)) if s == bad), "{bad:?}");
        }
    }

    #[test]
    fn bad_arch_is_reported_before_looking_for_nvrtc() {
        assert!(matches!(compile_ptx("sm_5"), Err(CudaError::InvalidArch(_))));
        assert!(matches!(compile_ptx_cached("gfx90a"), Err(CudaError::InvalidArch(_))));
    }

    #[test]
    fn cache_key_depends_on_arch() {
        assert_ne!(cache_key("compute_80", (12, 9)), cache_key("compute_90", (12, 9)));
        assert_ne!(cache_key("compute_90", (12, 8)), cache_key("compute_90", (12, 9)));
        assert_eq!(cache_key("compute_90", (12, 9)), cache_key("compute_90", (12, 9)));
    }

    #[test]
    fn atomic_write_then_read() {
        let dir = std::env::temp_dir().join(format!("kato_gpu_nvrtc_test_{}", std::process::id()));
        let path = dir.join("entry.ptx");
        let header = "// header\n";
        write_atomic(&dir, &path, header, ".version 8.0\n").unwrap();
        assert_eq!(read_cached(&path, header).unwrap().as_deref(), Some(".version 8.0\n"));
        assert_eq!(read_cached(&path, "// other\n").unwrap(), None);
        assert_eq!(read_cached(&dir.join("missing.ptx"), header).unwrap(), None);
        let leftovers = fs::read_dir(&dir).unwrap().filter(|e| e.as_ref().unwrap().file_name() != "entry.ptx").count();
        assert_eq!(leftovers, 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs only where NVRTC can be loaded (e.g. `LD_LIBRARY_PATH` pointing at the wheel's lib).
    #[test]
    fn compiles_every_entry_point_where_nvrtc_is_present() {
        if !nvrtc_present() {
            assert_eq!(compile_ptx("sm_80"), Err(CudaError::NvrtcMissing));
            assert_eq!(nvrtc_version(), None);
            return;
        }
        let ptx = compile_ptx("sm_80").unwrap();
        assert!(ptx.contains(".target sm_80"));
        for name in super::super::ENTRY_POINTS {
            assert!(ptx.contains(&format!(".entry {name}(")), "{name} missing from the PTX");
        }
    }
}
