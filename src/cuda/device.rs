//! What CUDA this process can use: the driver library, device 0, NVRTC. [`probe`] never panics
//! and says in [`DeviceInfo::reason`] why no GPU can be used.

use cudarc::driver::result::{self as driver, DriverError};
use cudarc::driver::sys::{CUdevice_attribute, CUresult};
use cudarc::driver::CudaContext;

use super::error::{catch, CudaError};
use super::nvrtc;

/// The result of [`probe`]: everything found, and the first reason the GPU tier cannot run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceInfo {
    /// A device and NVRTC are usable: `reason` is `None`.
    pub available: bool,
    /// Why the GPU tier cannot run, when it cannot.
    pub reason: Option<String>,
    /// The CUDA driver library (`libcuda`) can be loaded.
    pub driver_found: bool,
    /// The NVRTC library can be loaded.
    pub nvrtc_found: bool,
    pub nvrtc_version: Option<(i32, i32)>,
    /// Devices the driver reports (0 without a driver).
    pub device_count: usize,
    /// Device 0's name, compute capability and memory, when there is a device 0.
    pub name: Option<String>,
    pub compute_capability: Option<(i32, i32)>,
    pub total_memory_bytes: Option<u64>,
    /// Free memory, from `cuMemGetInfo` in device 0's primary context.
    pub free_memory_bytes: Option<u64>,
}

/// Inspects the driver, device 0 and NVRTC. `min_compute_capability` is e.g. `7.0`; a device
/// below it is reported but not available. Never panics.
pub fn probe(min_compute_capability: f64) -> DeviceInfo {
    let mut info = DeviceInfo::default();
    let reason = match catch(|| probe_into(&mut info, min_compute_capability)) {
        Ok(()) => None,
        Err(e) => Some(e.to_string()),
    };
    info.available = reason.is_none();
    info.reason = reason;
    info
}

/// Fills `info` and returns the first reason the GPU tier cannot run, in this order: no driver,
/// no device, device below the minimum, device unusable, no NVRTC.
fn probe_into(info: &mut DeviceInfo, min_compute_capability: f64) -> Result<(), CudaError> {
    info.nvrtc_found = nvrtc::nvrtc_present();
    info.nvrtc_version = nvrtc::nvrtc_version();
    // SAFETY: only tries to dlopen the candidate library names.
    info.driver_found = catch(|| Ok(unsafe { cudarc::driver::sys::is_culib_present() })).unwrap_or(false);
    if !info.driver_found {
        return Err(CudaError::DriverMissing);
    }
    if let Err(e) = driver::init() {
        return Err(if e.0 == CUresult::CUDA_ERROR_NO_DEVICE {
            CudaError::NoDevice
        } else {
            CudaError::Driver(format!("cuInit failed: {}", describe(e)))
        });
    }
    let count = driver::device::get_count()
        .map_err(|e| CudaError::Driver(format!("cuDeviceGetCount failed: {}", describe(e))))?;
    info.device_count = usize::try_from(count).unwrap_or(0);
    if info.device_count == 0 {
        return Err(CudaError::NoDevice);
    }
    let device =
        driver::device::get(0).map_err(|e| CudaError::Driver(format!("cuDeviceGet(0) failed: {}", describe(e))))?;
    info.name = driver::device::get_name(device).ok();
    // SAFETY: `device` was returned by cuDeviceGet.
    let attribute = |a| unsafe { driver::device::get_attribute(device, a) };
    let major = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    let minor = attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    let capability = match (major, minor) {
        (Ok(major), Ok(minor)) => (major, minor),
        (Err(e), _) | (_, Err(e)) => {
            return Err(CudaError::Driver(format!("cannot read device 0's compute capability: {}", describe(e))))
        }
    };
    info.compute_capability = Some(capability);
    // SAFETY: `device` was returned by cuDeviceGet.
    info.total_memory_bytes = unsafe { driver::device::total_mem(device) }.ok().map(|b| b as u64);
    // Free memory needs a context; creating it also proves the device can be used.
    let free = CudaContext::new(0)
        .and_then(|ctx| ctx.mem_get_info())
        .map_err(|e| CudaError::Driver(format!("cannot create a context on device 0: {}", describe(e))));
    let below_minimum = !meets(capability, min_compute_capability);
    match free {
        Ok((free, total)) => {
            info.free_memory_bytes = Some(free as u64);
            info.total_memory_bytes.get_or_insert(total as u64);
        }
        Err(e) if !below_minimum => return Err(e),
        Err(_) => {}
    }
    if below_minimum {
        return Err(CudaError::ComputeCapabilityTooLow { found: capability, required: min_compute_capability });
    }
    if !info.nvrtc_found {
        return Err(CudaError::NvrtcMissing);
    }
    Ok(())
}

/// `(major, minor) >= minimum`, compared in tenths so that e.g. (8, 6) meets 8.6 exactly.
fn meets((major, minor): (i32, i32), minimum: f64) -> bool {
    if minimum.is_nan() {
        return false;
    }
    let found = i64::from(major) * 10 + i64::from(minor);
    found as f64 >= (minimum * 10.0 - 1e-6).ceil()
}

fn describe(e: DriverError) -> String {
    format!("{e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_comparison() {
        assert!(meets((7, 0), 7.0));
        assert!(meets((8, 6), 8.6));
        assert!(meets((9, 0), 8.6));
        assert!(!meets((8, 0), 8.6));
        assert!(!meets((6, 1), 7.0));
        assert!(meets((5, 0), 0.0));
        assert!(!meets((9, 0), f64::NAN));
    }

    #[test]
    fn probe_explains_itself() {
        let info = probe(7.0);
        assert_eq!(info.available, info.reason.is_none());
        if !info.driver_found {
            assert!(!info.available);
            assert_eq!(info.device_count, 0);
            assert!(info.reason.as_deref().unwrap().contains("driver"), "{:?}", info.reason);
        }
        if info.available {
            assert!(info.device_count >= 1 && info.nvrtc_found);
            assert!(info.compute_capability.unwrap() >= (7, 0));
        }
        assert_eq!(info.nvrtc_found, info.nvrtc_version.is_some());
    }
}
