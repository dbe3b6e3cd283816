//! Errors of the GPU tier. Every one is a value: a missing library, a missing device or an NVRTC
//! failure never panics (and a panic inside cudarc is caught and reported as [`CudaError::Panic`]).

use std::any::Any;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum CudaError {
    #[error(
        "the NVRTC library (libnvrtc.so.12) was not found: install the nvidia-cuda-nvrtc-cu12 wheel \
         (`pip install kato-gpu[gpu]`) or a CUDA 12 toolkit on the loader path"
    )]
    NvrtcMissing,

    #[error("the CUDA driver library (libcuda.so.1) was not found: no NVIDIA driver is installed")]
    DriverMissing,

    #[error("no CUDA device was found (the driver reports 0 devices)")]
    NoDevice,

    #[error(
        "device 0 has compute capability {}.{}, below the required {required}",
        found.0,
        found.1
    )]
    ComputeCapabilityTooLow { found: (i32, i32), required: f64 },

    #[error(
        "invalid CUDA architecture {0:?}: expected \"sm_XY\" or \"compute_XY\" with XY a number >= 50 \
         of two or three digits (e.g. \"sm_80\", \"compute_90\")"
    )]
    InvalidArch(String),

    #[error("NVRTC failed to compile the kernels for {arch}:\n{log}")]
    Compile { arch: String, log: String },

    #[error("CUDA driver error: {0}")]
    Driver(String),

    #[error("internal error in the CUDA bindings: {0}")]
    Panic(String),

    /// No usable GPU, with the reason `device::probe` gave.
    #[error("{0}")]
    Unavailable(String),
}

impl CudaError {
    /// A short, stable name of the variant (the `error_type` label of `kato_gpu_errors_total`).
    pub fn kind(&self) -> &'static str {
        match self {
            CudaError::NvrtcMissing => "nvrtc_missing",
            CudaError::DriverMissing => "driver_missing",
            CudaError::NoDevice => "no_device",
            CudaError::ComputeCapabilityTooLow { .. } => "compute_capability",
            CudaError::InvalidArch(_) => "invalid_arch",
            CudaError::Compile { .. } => "compile",
            CudaError::Driver(_) => "driver",
            CudaError::Panic(_) => "panic",
            CudaError::Unavailable(_) => "unavailable",
        }
    }

    /// The message of a caught panic payload.
    pub(crate) fn from_panic(payload: Box<dyn Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        CudaError::Panic(message)
    }
}

/// Runs `f` (which calls into cudarc), turning a panic into [`CudaError::Panic`].
pub(crate) fn catch<T>(f: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|payload| Err(CudaError::from_panic(payload)))
}
