//! Compiling [`KERNEL_SOURCE`] with NVRTC (loaded at run time) to a cubin for a real
//! architecture or to PTX for a virtual one, the on-disk cache of both, and the choice of what the
//! device tier loads ([`kernel_image_cached`]).
//!
//! Why cubins: the driver JIT-compiles PTX only when the driver is at least as new as the PTX ISA
//! NVRTC wrote (NVRTC 12.9 writes `.version 8.8`, which needs R575), whereas a cubin built by any
//! CUDA 12.x compiler loads on every CUDA 12 driver (R525 and newer: CUDA's minor-version
//! compatibility). So the tier loads a cubin for the device's exact `sm_XY`, and PTX only for a
//! device NVRTC cannot target — one newer than the NVRTC, whose driver is then newer too.
//!
//! NVRTC is looked up by cudarc (`libnvrtc.so`, `libnvrtc.so.12`, ...) through the normal loader
//! path; the Python package preloads the copy in the `nvidia-cuda-nvrtc-cu12` wheel so that the
//! same lookup finds it. Presence is checked before any other NVRTC call (cudarc panics on a
//! missing library), and every call is wrapped in `catch_unwind`.

use std::ffi::{c_char, CString};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cudarc::nvrtc::result::{self as nvrtc_result, NvrtcError};
use cudarc::nvrtc::sys as nvrtc_sys;

use super::error::{catch, CudaError};
use super::KERNEL_SOURCE;

/// Bumped whenever the layout of a cache file or the compile options change.
const CACHE_FORMAT: u32 = 2;

/// The oldest architecture accepted (`sm_50`, Maxwell).
const MIN_ARCH: u32 = 50;

/// ELF `e_machine` of a CUDA cubin (`EM_CUDA`).
pub const EM_CUDA: u16 = 190;

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

/// The virtual architecture PTX is generated for: `"compute_XY"`.
pub fn virtual_arch(arch: &str) -> Result<String, CudaError> {
    parse_arch(arch).map(|n| format!("compute_{n}"))
}

/// The real architecture a cubin is built for: `"sm_XY"`.
pub fn real_arch(arch: &str) -> Result<String, CudaError> {
    parse_arch(arch).map(|n| format!("sm_{n}"))
}

/// Whether cudarc can load an NVRTC library now. Never panics.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    std::panic::catch_unwind(|| unsafe { nvrtc_sys::is_culib_present() }).unwrap_or(false)
}

/// The version of the NVRTC that would compile the kernels, or `None` when none can be loaded.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_present() {
        return None;
    }
    catch(|| {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: both pointers are valid for writes; the library is present.
        unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|_| CudaError::NvrtcMissing)?;
        Ok((major, minor))
    })
    .ok()
}

/// The real architectures (`XY` of `sm_XY`) this NVRTC compiles for, ascending.
pub fn supported_archs() -> Result<Vec<u32>, CudaError> {
    if !nvrtc_present() {
        return Err(CudaError::NvrtcMissing);
    }
    catch(|| {
        let failed = |e: NvrtcError| CudaError::Compile { arch: "-".to_string(), log: format!("{e:?}") };
        let mut count = 0;
        // SAFETY: the pointer is valid for a write; the library is present.
        unsafe { nvrtc_sys::nvrtcGetNumSupportedArchs(&mut count) }.result().map_err(failed)?;
        let mut archs = vec![0i32; usize::try_from(count).unwrap_or(0)];
        // SAFETY: `archs` has room for the `count` entries NVRTC writes.
        unsafe { nvrtc_sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }.result().map_err(failed)?;
        let mut archs: Vec<u32> = archs.into_iter().filter_map(|a| u32::try_from(a).ok()).collect();
        archs.sort_unstable();
        Ok(archs)
    })
}

/// What NVRTC is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    /// PTX text for `compute_XY`.
    Ptx,
    /// An ELF image for `sm_XY`.
    Cubin,
}

impl Output {
    fn name(self) -> &'static str {
        match self {
            Output::Ptx => "ptx",
            Output::Cubin => "cubin",
        }
    }
}

/// The NVRTC options for `target` (`compute_XY` or `sm_XY`; also part of the cache key).
fn compile_options(target: &str) -> Vec<String> {
    vec![format!("--gpu-architecture={target}")]
}

/// Compiles [`KERNEL_SOURCE`] to PTX for `compute_XY` (`arch` is `"sm_XY"` or `"compute_XY"`).
/// The kernels keep their `extern "C"` names. The bindings compile through the cache
/// ([`compile_ptx_cached`]); this uncached form is for the tests.
#[cfg(test)]
pub fn compile_ptx(arch: &str) -> Result<String, CudaError> {
    let target = virtual_arch(arch)?;
    if !nvrtc_present() {
        return Err(CudaError::NvrtcMissing);
    }
    compile(&target, Output::Ptx).map(ptx_text)
}

/// Compiles [`KERNEL_SOURCE`] to a cubin for `sm_XY` (uncached; for the tests).
#[cfg(test)]
pub fn compile_cubin(arch: &str) -> Result<Vec<u8>, CudaError> {
    let target = real_arch(arch)?;
    if !nvrtc_present() {
        return Err(CudaError::NvrtcMissing);
    }
    compile(&target, Output::Cubin)
}

/// PTX as text (NVRTC writes ASCII).
fn ptx_text(image: Vec<u8>) -> String {
    String::from_utf8_lossy(&image).into_owned()
}

/// An NVRTC program, destroyed on drop.
struct Program(nvrtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram and destroyed only here.
        let _ = unsafe { nvrtc_result::destroy_program(self.0) };
    }
}

/// NVRTC's output for `target`: PTX (without its terminating NUL) or a cubin.
fn compile(target: &str, output: Output) -> Result<Vec<u8>, CudaError> {
    let failed =
        |what: &str, e: NvrtcError| CudaError::Compile { arch: target.to_string(), log: format!("{what}: {e:?}") };
    catch(|| {
        let source = CString::new(KERNEL_SOURCE.as_str()).map_err(|_| CudaError::Compile {
            arch: target.to_string(),
            log: "the kernel source contains a NUL byte".to_string(),
        })?;
        let program = Program(
            nvrtc_result::create_program(&source, Some(c"match.cu")).map_err(|e| failed("nvrtcCreateProgram", e))?,
        );
        let options = compile_options(target);
        // SAFETY: the program is valid; cudarc copies the options into C strings for the call.
        if let Err(e) = unsafe { nvrtc_result::compile_program(program.0, &options) } {
            // SAFETY: the program is valid.
            let log = unsafe { nvrtc_result::get_program_log(program.0) }.unwrap_or_default();
            let log: Vec<u8> = log.into_iter().map(|c| c as u8).take_while(|&b| b != 0).collect();
            let log = String::from_utf8_lossy(&log);
            let log = log.trim();
            return Err(CudaError::Compile {
                arch: target.to_string(),
                log: if log.is_empty() { format!("{e:?}") } else { format!("{log}\n({e:?})") },
            });
        }
        let mut size = 0usize;
        let image = match output {
            Output::Ptx => {
                // SAFETY: the program compiled; `size` is valid for a write.
                unsafe { nvrtc_sys::nvrtcGetPTXSize(program.0, &mut size) }
                    .result()
                    .map_err(|e| failed("nvrtcGetPTXSize", e))?;
                let mut image = vec![0u8; size];
                // SAFETY: `image` has the `size` bytes NVRTC writes.
                unsafe { nvrtc_sys::nvrtcGetPTX(program.0, image.as_mut_ptr() as *mut c_char) }
                    .result()
                    .map_err(|e| failed("nvrtcGetPTX", e))?;
                let end = image.iter().position(|&b| b == 0).unwrap_or(image.len());
                image.truncate(end);
                image
            }
            Output::Cubin => {
                // SAFETY: as above.
                unsafe { nvrtc_sys::nvrtcGetCUBINSize(program.0, &mut size) }
                    .result()
                    .map_err(|e| failed("nvrtcGetCUBINSize", e))?;
                let mut image = vec![0u8; size];
                // SAFETY: as above.
                unsafe { nvrtc_sys::nvrtcGetCUBIN(program.0, image.as_mut_ptr() as *mut c_char) }
                    .result()
                    .map_err(|e| failed("nvrtcGetCUBIN", e))?;
                if cubin_arch(&image).is_none() {
                    return Err(CudaError::Compile {
                        arch: target.to_string(),
                        log: format!("NVRTC returned no CUDA ELF image ({size} bytes)"),
                    });
                }
                image
            }
        };
        Ok(image)
    })
}

/// The `XY` of `sm_XY` a cubin is built for, read from its ELF header; `None` when `image` is not a
/// 64-bit little-endian ELF for `EM_CUDA`. The CUDA ELF ABI keeps the architecture in `e_flags`:
/// bits 0-7 up to ABI version 7 (`sm_90` and older), bits 8-15 from version 8 (`sm_100` and newer).
pub fn cubin_arch(image: &[u8]) -> Option<u32> {
    if image.len() < 64 || &image[..4] != b"\x7fELF" || image[4] != 2 || image[5] != 1 {
        return None;
    }
    let e_machine = u16::from_le_bytes([image[18], image[19]]);
    if e_machine != EM_CUDA {
        return None;
    }
    let e_flags = u32::from_le_bytes([image[48], image[49], image[50], image[51]]);
    let arch = if image[8] >= 8 { (e_flags >> 8) & 0xff } else { e_flags & 0xff };
    (arch >= MIN_ARCH).then_some(arch)
}

/// What the device tier loads for a device of architecture `arch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelImage {
    /// An ELF image for the device's exact `sm_XY`.
    Cubin { arch: String, image: Vec<u8> },
    /// PTX for `compute_XY`, the newest virtual architecture NVRTC targets below a device it
    /// cannot build for; the driver JIT-compiles it (its driver is newer than the NVRTC).
    Ptx { arch: String, ptx: String },
}

/// The kernels as the device tier loads them on a device of architecture `arch` (`"sm_XY"`):
/// a cubin for `sm_XY` when NVRTC targets it, else PTX for the newest `compute_VW` below it that
/// NVRTC targets. Through the disk cache.
pub fn kernel_image_cached(arch: &str) -> Result<KernelImage, CudaError> {
    let n = parse_arch(arch)?;
    match image_target(n, &supported_archs()?)? {
        (Output::Cubin, arch) => compile_cubin_cached(&arch).map(|image| KernelImage::Cubin { arch, image }),
        (Output::Ptx, arch) => {
            log::info!("kato_gpu: NVRTC cannot build for sm_{n}; loading PTX for {arch} (JIT-compiled by the driver)");
            compile_ptx_cached(&arch).map(|ptx| KernelImage::Ptx { arch, ptx })
        }
    }
}

/// What to build for a device of architecture `n` with an NVRTC that targets `supported`: a
/// cubin for `sm_n`, else PTX for the newest `compute_m` below it.
fn image_target(n: u32, supported: &[u32]) -> Result<(Output, String), CudaError> {
    if supported.contains(&n) {
        return Ok((Output::Cubin, format!("sm_{n}")));
    }
    match supported.iter().copied().filter(|&a| a <= n).max() {
        Some(older) => Ok((Output::Ptx, format!("compute_{older}"))),
        None => Err(CudaError::Compile {
            arch: format!("sm_{n}"),
            log: format!("this NVRTC targets none of sm_{MIN_ARCH}..sm_{n} (it supports {supported:?})"),
        }),
    }
}

/// [`compile_ptx`] through the on-disk cache (see [`cached`]).
pub fn compile_ptx_cached(arch: &str) -> Result<String, CudaError> {
    let target = virtual_arch(arch)?;
    cached(&target, Output::Ptx).map(ptx_text)
}

/// [`compile_cubin`] through the on-disk cache (see [`cached`]).
pub fn compile_cubin_cached(arch: &str) -> Result<Vec<u8>, CudaError> {
    let target = real_arch(arch)?;
    cached(&target, Output::Cubin)
}

/// NVRTC's `output` for `target` through an on-disk cache keyed by the kernel source, the target,
/// the output kind, the compile options and the NVRTC version. The directory is
/// `$KATO_GPU_CACHE_DIR`, else `$XDG_CACHE_HOME/kato_gpu`, else `~/.cache/kato_gpu`, read at each
/// call. A cache that cannot be read or written only logs a warning: the kernels are then
/// compiled in memory.
fn cached(target: &str, output: Output) -> Result<Vec<u8>, CudaError> {
    let version = nvrtc_version().ok_or(CudaError::NvrtcMissing)?;
    let kind = output.name();
    let Some(dir) = cache_dir() else {
        log::warn!("kato_gpu kernel cache disabled: none of KATO_GPU_CACHE_DIR, XDG_CACHE_HOME, HOME is set");
        return compile(target, output);
    };
    let key = cache_key(target, output, version);
    let path = dir.join(format!("match-{target}-{key:032x}.{kind}"));
    let header = format!(
        "// kato_gpu {kind} cache v{CACHE_FORMAT} key={key:032x} target={target} nvrtc={}.{}",
        version.0, version.1
    );
    match read_cached(&path, &header, output) {
        Ok(Some(image)) => {
            log::debug!("kato_gpu {kind} for {target} read from {}", path.display());
            return Ok(image);
        }
        Ok(None) => {}
        Err(e) => log::warn!("kato_gpu kernel cache: cannot read {}: {e}; compiling", path.display()),
    }
    let image = compile(target, output)?;
    match write_atomic(&dir, &path, &header, &image) {
        Ok(()) => log::debug!("kato_gpu {kind} for {target} cached at {}", path.display()),
        Err(e) => log::warn!("kato_gpu kernel cache: cannot write {}: {e}", path.display()),
    }
    Ok(image)
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
fn cache_key(target: &str, output: Output, version: (i32, i32)) -> u128 {
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
    feed(target.as_bytes());
    feed(output.name().as_bytes());
    for option in compile_options(target) {
        feed(option.as_bytes());
    }
    feed(&version.0.to_le_bytes());
    feed(&version.1.to_le_bytes());
    hash
}

/// The cached image, `None` when there is no entry or it is not a valid one. An entry is
/// `header`, ` len=N`, a newline, then N bytes of image: a wrong header, a length that is not the
/// rest of the file (a truncated or padded write), PTX that is empty or not text, or a cubin that
/// is not a CUDA ELF image all read as no entry, so the image is compiled and written again.
fn read_cached(path: &Path, header: &str, output: Output) -> std::io::Result<Option<Vec<u8>>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let image = bytes
        .strip_prefix(header.as_bytes())
        .and_then(|rest| rest.strip_prefix(b" len="))
        .and_then(|rest| {
            let newline = rest.iter().take(21).position(|&b| b == b'\n')?;
            let len: usize = std::str::from_utf8(&rest[..newline]).ok()?.parse().ok()?;
            let image = &rest[newline + 1..];
            (image.len() == len).then_some(image)
        })
        .filter(|image| match output {
            Output::Ptx => !image.is_empty() && !image.contains(&0) && std::str::from_utf8(image).is_ok(),
            Output::Cubin => cubin_arch(image).is_some(),
        });
    if image.is_none() {
        log::warn!("kato_gpu kernel cache: {} is not a valid entry; recompiling", path.display());
    }
    Ok(image.map(<[u8]>::to_vec))
}

/// Writes the entry (`header`, its length line, `image`) to a temporary file in `dir`, then
/// renames it over `path`, so a reader never sees a partial entry (concurrent writers all write
/// the same bytes).
fn write_atomic(dir: &Path, path: &Path, header: &str, image: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    fs::create_dir_all(dir)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("match");
    let tmp = dir.join(format!(".{file_name}.{}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(format!("{header} len={}\n", image.len()).as_bytes())?;
        file.write_all(image)?;
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
        assert_eq!(real_arch("compute_86").unwrap(), "sm_86");
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
        assert!(matches!(compile_cubin("sm_49"), Err(CudaError::InvalidArch(_))));
        assert!(matches!(compile_cubin_cached(""), Err(CudaError::InvalidArch(_))));
        assert!(matches!(kernel_image_cached("sm_9"), Err(CudaError::InvalidArch(_))));
    }

    #[test]
    fn cache_key_depends_on_target_kind_and_version() {
        let key = |t, o, v| cache_key(t, o, v);
        assert_ne!(key("compute_80", Output::Ptx, (12, 9)), key("compute_90", Output::Ptx, (12, 9)));
        assert_ne!(key("compute_90", Output::Ptx, (12, 8)), key("compute_90", Output::Ptx, (12, 9)));
        assert_ne!(key("sm_90", Output::Cubin, (12, 9)), key("sm_90", Output::Ptx, (12, 9)));
        assert_eq!(key("sm_90", Output::Cubin, (12, 9)), key("sm_90", Output::Cubin, (12, 9)));
    }

    /// A minimal CUDA ELF header: 64-bit, little-endian, `EM_CUDA`, the arch in `e_flags`.
    fn fake_cubin(abi: u8, e_flags: u32) -> Vec<u8> {
        let mut image = vec![0u8; 96];
        image[..4].copy_from_slice(b"\x7fELF");
        (image[4], image[5], image[7], image[8]) = (2, 1, 51, abi);
        image[18..20].copy_from_slice(&EM_CUDA.to_le_bytes());
        image[48..52].copy_from_slice(&e_flags.to_le_bytes());
        image
    }

    #[test]
    fn cubin_arch_reads_both_elf_abis() {
        // e_flags as NVRTC 12.9 writes them for sm_80, sm_90 (ABI 7) and sm_100, sm_120 (ABI 8).
        assert_eq!(cubin_arch(&fake_cubin(7, 0x0050_0550)), Some(80));
        assert_eq!(cubin_arch(&fake_cubin(7, 0x005a_055a)), Some(90));
        assert_eq!(cubin_arch(&fake_cubin(8, 0x0600_6402)), Some(100));
        assert_eq!(cubin_arch(&fake_cubin(8, 0x0600_7802)), Some(120));
        let mut not_cuda = fake_cubin(7, 0x50);
        not_cuda[18] = 62; // EM_X86_64
        assert_eq!(cubin_arch(&not_cuda), None);
        assert_eq!(cubin_arch(&fake_cubin(7, 0x50)[..40]), None);
        assert_eq!(cubin_arch(b".version 8.8\n.target sm_80\n"), None);
    }

    #[test]
    fn atomic_write_then_checked_read() {
        let dir = std::env::temp_dir().join(format!("kato_gpu_nvrtc_test_{}", std::process::id()));
        let (ptx_path, cubin_path) = (dir.join("entry.ptx"), dir.join("entry.cubin"));
        let header = "// header";
        write_atomic(&dir, &ptx_path, header, b".version 8.0\n").unwrap();
        assert_eq!(fs::read(&ptx_path).unwrap(), b"// header len=13\n.version 8.0\n");
        assert_eq!(read_cached(&ptx_path, header, Output::Ptx).unwrap().as_deref(), Some(&b".version 8.0\n"[..]));
        assert_eq!(read_cached(&ptx_path, "// other", Output::Ptx).unwrap(), None);
        assert_eq!(read_cached(&dir.join("missing.ptx"), header, Output::Ptx).unwrap(), None);
        let cubin = fake_cubin(7, 0x005a_055a);
        write_atomic(&dir, &cubin_path, header, &cubin).unwrap();
        assert_eq!(read_cached(&cubin_path, header, Output::Cubin).unwrap(), Some(cubin.clone()));
        // A PTX entry is not a cubin.
        assert_eq!(read_cached(&ptx_path, header, Output::Cubin).unwrap(), None);
        // Truncated, padded, or a length line that is not a number: no entry.
        let entry = fs::read(&cubin_path).unwrap();
        for damaged in [&entry[..entry.len() - 1], &[&entry[..], b"\0"].concat()[..], b"// header len=x\n"] {
            fs::write(&cubin_path, damaged).unwrap();
            assert_eq!(read_cached(&cubin_path, header, Output::Cubin).unwrap(), None);
        }
        // The length matches but the image is not a CUDA ELF.
        write_atomic(&dir, &cubin_path, header, &cubin[..40]).unwrap();
        assert_eq!(read_cached(&cubin_path, header, Output::Cubin).unwrap(), None);
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "temporary files left behind: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs only where NVRTC can be loaded (e.g. `LD_LIBRARY_PATH` pointing at the wheel's lib;
    /// the Python suite runs the same checks through the wheel's NVRTC everywhere).
    #[test]
    fn compiles_every_entry_point_where_nvrtc_is_present() {
        if !nvrtc_present() {
            assert_eq!(compile_ptx("sm_80"), Err(CudaError::NvrtcMissing));
            assert_eq!(compile_cubin("sm_80"), Err(CudaError::NvrtcMissing));
            assert_eq!(nvrtc_version(), None);
            return;
        }
        let ptx = compile_ptx("sm_80").unwrap();
        assert!(ptx.contains(".target sm_80"));
        for name in super::super::entry_points() {
            assert!(ptx.contains(&format!(".entry {name}(")), "{name} missing from the PTX");
        }
        for (arch, n) in [("sm_80", 80), ("sm_90", 90)] {
            let cubin = compile_cubin(arch).unwrap();
            assert_eq!(cubin_arch(&cubin), Some(n));
            for name in super::super::entry_points() {
                let symbol = [name.as_bytes(), b"\0"].concat();
                assert!(cubin.windows(symbol.len()).any(|w| w == symbol), "{name} missing from the {arch} cubin");
            }
        }
    }

    /// The choice of image, for the architecture lists of NVRTC 12.4 and 12.9: a cubin for every
    /// device NVRTC targets; PTX for the newest target below a device it does not know.
    #[test]
    fn the_tier_loads_a_cubin_wherever_nvrtc_targets_the_device() {
        let nvrtc_12_4 = [50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90];
        let nvrtc_12_9 = [50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 120, 121];
        let cubin = |arch: &str| Ok((Output::Cubin, arch.to_string()));
        let ptx = |arch: &str| Ok((Output::Ptx, arch.to_string()));
        for supported in [&nvrtc_12_4[..], &nvrtc_12_9[..]] {
            for n in [70, 75, 80, 86, 89, 90] {
                assert_eq!(image_target(n, supported), cubin(&format!("sm_{n}")));
            }
            assert_eq!(image_target(130, supported), ptx(&format!("compute_{}", supported.last().unwrap())));
            assert!(image_target(MIN_ARCH - 1, supported).is_err());
        }
        assert_eq!(image_target(100, &nvrtc_12_4), ptx("compute_90"));
        assert_eq!(image_target(120, &nvrtc_12_4), ptx("compute_90"));
        assert_eq!(image_target(120, &nvrtc_12_9), cubin("sm_120"));
        assert_eq!(image_target(91, &nvrtc_12_9), ptx("compute_90"));
    }

    /// Where NVRTC is present: its own list, and what the tier builds for sm_80 and sm_90 is a
    /// cubin for the exact architecture (which any CUDA 12 driver loads).
    #[test]
    fn the_tier_builds_cubins_for_sm_80_and_sm_90_where_nvrtc_is_present() {
        if !nvrtc_present() {
            return;
        }
        let supported = supported_archs().unwrap();
        for (arch, n) in [("sm_80", 80), ("sm_90", 90)] {
            assert_eq!(image_target(n, &supported).unwrap(), (Output::Cubin, arch.to_string()));
            assert_eq!(cubin_arch(&compile_cubin(arch).unwrap()), Some(n));
        }
    }
}
