use wgpu::util::DeviceExt;

use super::GpuContext;
use super::error::GpuError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    U32,
    /// Bytes packed four to a u32 word (images as stored on disk).
    U8,
}

impl DType {
    fn bytes(self, elements: usize) -> u64 {
        match self {
            DType::F32 | DType::U32 => 4 * elements as u64,
            DType::U8 => elements.div_ceil(4) as u64 * 4,
        }
    }
}

/// A GPU buffer, or a range of one (a view), that knows its shape, element
/// type and name. Kernels see a view as a whole buffer: its binding starts at
/// the view's offset.
pub struct Tensor {
    buffer: wgpu::Buffer,
    /// Byte offset of a view into `buffer` (0 for a tensor with its own buffer).
    offset: u64,
    /// Bytes of the tensor (of its range, for a view).
    size: u64,
    view: bool,
    shape: Vec<usize>,
    dtype: DType,
    label: String,
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Tensor {
    /// A zero-filled tensor (wgpu zero-initializes new buffers).
    pub fn zeros(
        ctx: &GpuContext,
        label: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Self, GpuError> {
        let size = checked_size(ctx, label, shape, dtype)?;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: USAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            offset: 0,
            size: buffer.size(),
            view: false,
            buffer,
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
        })
    }

    /// The f32 `shape` at byte `offset` of `base`'s buffer. The offset must be
    /// a multiple of the adapter's storage offset alignment (checked, as is
    /// that the range lies inside `base`).
    pub fn view(
        ctx: &GpuContext,
        base: &Tensor,
        offset: u64,
        label: &str,
        shape: &[usize],
    ) -> Result<Self, GpuError> {
        let size = DType::F32.bytes(shape.iter().product()).max(4);
        let align = u64::from(ctx.limits.min_storage_buffer_offset_alignment);
        if base.view || !offset.is_multiple_of(align) || offset + size > base.size {
            return Err(GpuError::shape(
                label,
                format!(
                    "a view of {size} bytes at offset {offset} does not fit '{}' ({} bytes, alignment {align})",
                    base.label, base.size
                ),
            ));
        }
        Ok(Tensor {
            buffer: base.buffer.clone(),
            offset,
            size,
            view: true,
            shape: shape.to_vec(),
            dtype: DType::F32,
            label: label.to_string(),
        })
    }

    pub fn from_f32(
        ctx: &GpuContext,
        label: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<Self, GpuError> {
        Self::from_bytes(
            ctx,
            label,
            shape,
            DType::F32,
            bytemuck::cast_slice(data),
            data.len(),
        )
    }

    pub fn from_u32(
        ctx: &GpuContext,
        label: &str,
        shape: &[usize],
        data: &[u32],
    ) -> Result<Self, GpuError> {
        Self::from_bytes(
            ctx,
            label,
            shape,
            DType::U32,
            bytemuck::cast_slice(data),
            data.len(),
        )
    }

    pub fn from_u8(
        ctx: &GpuContext,
        label: &str,
        shape: &[usize],
        data: &[u8],
    ) -> Result<Self, GpuError> {
        Self::from_bytes(ctx, label, shape, DType::U8, data, data.len())
    }

    fn from_bytes(
        ctx: &GpuContext,
        label: &str,
        shape: &[usize],
        dtype: DType,
        bytes: &[u8],
        elements: usize,
    ) -> Result<Self, GpuError> {
        let size = checked_size(ctx, label, shape, dtype)?;
        if elements != shape.iter().product::<usize>() {
            return Err(GpuError::shape(
                label,
                format!("{elements} values given for shape {shape:?}"),
            ));
        }
        let mut contents = bytes.to_vec();
        contents.resize(size as usize, 0);
        let buffer = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &contents,
                usage: USAGE,
            });
        Ok(Tensor {
            offset: 0,
            size: buffer.size(),
            view: false,
            buffer,
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
        })
    }

    /// The underlying buffer (for a view, shared with other tensors: use
    /// `offset` and `size_bytes`, or `binding`).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Whether this tensor is a range of another's buffer.
    pub fn is_view(&self) -> bool {
        self.view
    }
    /// The tensor's range as a binding.
    pub fn binding(&self) -> wgpu::BufferBinding<'_> {
        wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.size),
        }
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// Errors unless the tensor has exactly this shape and type; `op` names the
    /// caller in the message.
    pub fn expect(&self, op: &str, shape: &[usize], dtype: DType) -> Result<(), GpuError> {
        if self.shape != shape || self.dtype != dtype {
            return Err(GpuError::shape(
                op,
                format!(
                    "tensor '{}' is {:?} {:?}, expected {:?} {:?}",
                    self.label, self.dtype, self.shape, dtype, shape
                ),
            ));
        }
        Ok(())
    }

    /// Errors unless this is an f32 activation [batch, channels, ...] whose
    /// trailing dimensions hold `hw` values.
    pub fn expect_activation(
        &self,
        op: &str,
        batch: usize,
        channels: usize,
        hw: usize,
    ) -> Result<(), GpuError> {
        let ok = self.dtype == DType::F32
            && self.shape.len() >= 2
            && self.shape[0] == batch
            && self.shape[1] == channels
            && self.shape[2..].iter().product::<usize>() == hw;
        if !ok {
            return Err(GpuError::shape(
                op,
                format!(
                    "tensor '{}' is {:?} {:?}, expected f32 [{batch}, {channels}, ..{hw} values]",
                    self.label, self.dtype, self.shape
                ),
            ));
        }
        Ok(())
    }

    pub fn write_f32(&self, ctx: &GpuContext, data: &[f32]) -> Result<(), GpuError> {
        if self.dtype != DType::F32 || data.len() != self.numel() {
            return Err(GpuError::shape(
                &self.label,
                format!("cannot write {} f32 values", data.len()),
            ));
        }
        ctx.queue
            .write_buffer(&self.buffer, self.offset, bytemuck::cast_slice(data));
        Ok(())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32(&self, ctx: &GpuContext) -> Result<Vec<f32>, GpuError> {
        let bytes = self.read_bytes(ctx)?;
        Ok(bytemuck::cast_slice::<u8, f32>(&bytes)[..self.numel()].to_vec())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32(&self, ctx: &GpuContext) -> Result<Vec<u32>, GpuError> {
        let bytes = self.read_bytes(ctx)?;
        Ok(bytemuck::cast_slice::<u8, u32>(&bytes)[..self.numel()].to_vec())
    }

    /// Copies the tensor to a staging buffer and waits for it (tests, tools and
    /// checkpoints only: the training loop reads metrics back asynchronously).
    #[cfg(not(target_arch = "wasm32"))]
    fn read_bytes(&self, ctx: &GpuContext) -> Result<Vec<u8>, GpuError> {
        let size = self.size;
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("{} readback", self.label)),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = super::encoder(ctx, "readback");
        encoder.copy_buffer_to_buffer(&self.buffer, self.offset, &staging, 0, size);
        ctx.queue.submit([encoder.finish()]);
        super::readback::read_blocking(ctx, staging, &self.label, |b| b.to_vec())
    }
}

/// Buffer size for the tensor, or a clear error when one binding of it would
/// exceed what the adapter allows.
fn checked_size(
    ctx: &GpuContext,
    label: &str,
    shape: &[usize],
    dtype: DType,
) -> Result<u64, GpuError> {
    let bytes = dtype.bytes(shape.iter().product()).max(4);
    let limit = ctx.max_binding_bytes();
    if bytes > limit {
        return Err(GpuError::BindingTooLarge {
            what: format!("tensor '{label}' {shape:?}"),
            needed: bytes,
            limit,
            adapter: ctx.adapter_info.name.clone(),
        });
    }
    Ok(bytes)
}
