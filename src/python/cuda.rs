//! `kato_gpu._native.cuda_*`: the kernel source, its compilation by NVRTC and device discovery.
//! The public wrapper is `kato_gpu.cuda`, which preloads the NVRTC wheel before calling these.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::error::guard;
use super::lifecycle::unlocked;
use crate::cuda::device::{self, DeviceInfo};
use crate::cuda::error::CudaError;
use crate::cuda::nvrtc::{self, KernelImage};
use crate::cuda::{entry_points, KERNEL_SOURCE};

impl From<CudaError> for PyErr {
    fn from(err: CudaError) -> PyErr {
        match err {
            CudaError::InvalidArch(_) => PyValueError::new_err(err.to_string()),
            _ => PyRuntimeError::new_err(err.to_string()),
        }
    }
}

/// PTX of the kernels for `arch` ("sm_XY" or "compute_XY"), through the on-disk cache.
#[pyfunction]
fn cuda_compile_ptx(py: Python<'_>, arch: &str) -> PyResult<String> {
    Ok(unlocked(py, || guard(|| nvrtc::compile_ptx_cached(arch)))??)
}

/// A cubin (ELF image) of the kernels for `arch` ("sm_XY" or "compute_XY"), through the cache.
#[pyfunction]
fn cuda_compile_cubin<'py>(py: Python<'py>, arch: &str) -> PyResult<Bound<'py, PyBytes>> {
    let image = unlocked(py, || guard(|| nvrtc::compile_cubin_cached(arch)))??;
    Ok(PyBytes::new(py, &image))
}

/// What the device tier loads on a device of architecture `arch`: ("cubin", "sm_XY", ELF image)
/// or ("ptx", "compute_VW", PTX text as bytes).
#[pyfunction]
fn cuda_kernel_image<'py>(py: Python<'py>, arch: &str) -> PyResult<(&'static str, String, Bound<'py, PyBytes>)> {
    Ok(match unlocked(py, || guard(|| nvrtc::kernel_image_cached(arch)))?? {
        KernelImage::Cubin { arch, image } => ("cubin", arch, PyBytes::new(py, &image)),
        KernelImage::Ptx { arch, ptx } => ("ptx", arch, PyBytes::new(py, ptx.as_bytes())),
    })
}

/// What CUDA this process can use, as a dict (see `kato_gpu.cuda.device_info`).
#[pyfunction]
#[pyo3(signature = (min_compute_capability = 7.0))]
fn cuda_probe(py: Python<'_>, min_compute_capability: f64) -> PyResult<Bound<'_, PyDict>> {
    if !min_compute_capability.is_finite() || min_compute_capability < 0.0 {
        return Err(PyValueError::new_err(format!(
            "min_compute_capability must be a finite number >= 0, got {min_compute_capability}"
        )));
    }
    let info: DeviceInfo = unlocked(py, || guard(|| device::probe(min_compute_capability)))?;
    let dict = PyDict::new(py);
    dict.set_item("available", info.available)?;
    dict.set_item("reason", info.reason)?;
    dict.set_item("driver_found", info.driver_found)?;
    dict.set_item("nvrtc_found", info.nvrtc_found)?;
    dict.set_item("nvrtc_version", info.nvrtc_version)?;
    dict.set_item("device_count", info.device_count)?;
    dict.set_item("name", info.name)?;
    dict.set_item("compute_capability", info.compute_capability)?;
    dict.set_item("total_memory_bytes", info.total_memory_bytes)?;
    dict.set_item("free_memory_bytes", info.free_memory_bytes)?;
    Ok(dict)
}

/// The `extern "C"` kernel names of the kernel source.
#[pyfunction]
fn cuda_entry_points() -> Vec<String> {
    entry_points()
}

/// The CUDA C++ source of the kernels, as shipped.
#[pyfunction]
fn cuda_kernel_source() -> &'static str {
    KERNEL_SOURCE.as_str()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cuda_compile_ptx, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_compile_cubin, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_kernel_image, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_probe, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_entry_points, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_kernel_source, m)?)
}
