//! Reading GPU buffers back, written once: a staging buffer's map for reading
//! is requested (`Mapping::request`), its state polled without blocking
//! (`Mapping::state`), and its bytes read and the buffer unmapped
//! (`Mapping::read`). The metrics ring and the prediction capture use it
//! asynchronously; `Tensor::read_bytes` and the profiler through
//! `read_blocking`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(not(target_arch = "wasm32"))]
use super::GpuContext;
use super::GpuError;

/// Where a requested map stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapState {
    /// The callback has not run yet (it runs during a device poll).
    Pending,
    Mapped,
    /// wgpu reported a failure (device lost, or the buffer destroyed).
    Failed,
}

impl MapState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => MapState::Pending,
            1 => MapState::Mapped,
            _ => MapState::Failed,
        }
    }

    fn to_u8(self) -> u8 {
        self as u8
    }
}

/// A MAP_READ staging buffer whose map for reading was requested.
pub struct Mapping {
    buffer: wgpu::Buffer,
    state: Arc<AtomicU8>,
    /// What it holds, for errors ("training metrics").
    what: String,
}

impl Mapping {
    /// Requests the map of the whole buffer; call after the submit that fills it.
    pub fn request(buffer: wgpu::Buffer, what: impl Into<String>) -> Self {
        let state = Arc::new(AtomicU8::new(MapState::Pending.to_u8()));
        let flag = state.clone();
        buffer.map_async(wgpu::MapMode::Read, .., move |result| {
            let s = if result.is_ok() {
                MapState::Mapped
            } else {
                MapState::Failed
            };
            flag.store(s.to_u8(), Ordering::Release);
        });
        Mapping {
            buffer,
            state,
            what: what.into(),
        }
    }

    /// Never blocks.
    pub fn state(&self) -> MapState {
        MapState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Passes the mapped bytes to `read`, unmaps, and hands the buffer back
    /// for reuse. An error when the map failed or has not completed.
    pub fn read<T>(self, read: impl FnOnce(&[u8]) -> T) -> Result<(T, wgpu::Buffer), GpuError> {
        let fail = |message: String| GpuError::Readback {
            what: self.what.clone(),
            message,
        };
        match self.state() {
            MapState::Mapped => {}
            MapState::Pending => return Err(fail("read before its map completed".into())),
            MapState::Failed => return Err(fail("map_async failed (device lost?)".into())),
        }
        let value = {
            let view = self
                .buffer
                .get_mapped_range(..)
                .map_err(|e| fail(e.to_string()))?;
            read(&view)
        };
        self.buffer.unmap();
        Ok((value, self.buffer))
    }
}

/// Maps `buffer` (whose copy was submitted), blocks until its map completes
/// and reads it (native only: tests, checkpoints, benchmarks).
#[cfg(not(target_arch = "wasm32"))]
pub fn read_blocking<T>(
    ctx: &GpuContext,
    buffer: wgpu::Buffer,
    what: &str,
    read: impl FnOnce(&[u8]) -> T,
) -> Result<T, GpuError> {
    let mapping = Mapping::request(buffer, what);
    ctx.wait_idle()?;
    // With the device shared between threads, another thread's poll may be
    // the one that runs this map's callback, a moment after our wait ends.
    while mapping.state() == MapState::Pending {
        std::thread::yield_now();
        ctx.wait_idle()?;
    }
    mapping.read(read).map(|(value, _)| value)
}
