//! The CUDA device tier as the core's [`DeviceMirror`].

use super::error::CudaError;
use super::tier::{Backend, DeviceTier};
use crate::device::{CapacityInfo, DeviceError, DeviceMirror};
use crate::metrics::Metric;
use crate::ordering::{Candidate, QueryPlan};
use crate::store::PatternStore;

impl From<CudaError> for DeviceError {
    fn from(error: CudaError) -> Self {
        DeviceError { kind: error.kind(), message: error.to_string() }
    }
}

impl<B: Backend> DeviceMirror for DeviceTier<B> {
    fn sync(&mut self, store: &PatternStore, bulk_end: usize) -> Result<usize, DeviceError> {
        Ok(DeviceTier::sync(self, store, bulk_end)?)
    }
    fn kill(&mut self, slot: usize) -> Result<(), DeviceError> {
        Ok(DeviceTier::kill(self, slot)?)
    }
    fn reset(&mut self) {
        DeviceTier::reset(self)
    }
    fn mirrored(&self) -> usize {
        DeviceTier::mirrored(self)
    }
    fn query_batch(
        &self,
        metric: Metric,
        queries: &[(&[u32], &QueryPlan)],
        limit: Option<usize>,
        upto: usize,
    ) -> Result<Vec<Option<Vec<Candidate>>>, DeviceError> {
        Ok(DeviceTier::query_batch(self, metric, queries, limit, upto)?)
    }
    fn capacity_info(&self) -> CapacityInfo {
        DeviceTier::capacity_info(self)
    }
}
