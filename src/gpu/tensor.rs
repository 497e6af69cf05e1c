use wgpu::util::DeviceExt;

use super::GpuContext;
use super::error::GpuError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    /// IEEE half floats, two to a u32 word (activations and weight copies at
    /// `Precision::F16`; needs the adapter's SHADER_F16).
    F16,
    U32,
    /// Bytes packed four to a u32 word (images as stored on disk).
    U8,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
            DType::U8 => "u8",
        }
    }

    fn bytes(self, elements: usize) -> u64 {
        match self {
            DType::F32 | DType::U32 => 4 * elements as u64,
            DType::F16 => elements.div_ceil(2) as u64 * 4,
            DType::U8 => elements.div_ceil(4) as u64 * 4,
        }
    }
}

/// What activations, their gradients and the conv/fc weight copies the
/// kernels read are stored as. Master weights, momenta, weight gradients,
/// norm statistics and every accumulation stay f32 at both precisions.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }

    /// The WGSL put before a module's source: `act` is the storage type of
    /// activations (kernels convert to f32 to compute).
    pub fn wgsl_header(self) -> &'static str {
        match self {
            Precision::F32 => "alias act = f32;\n",
            Precision::F16 => "enable f16;\nalias act = f16;\n",
        }
    }

    /// The precision of `tensors` (activations an op reads and writes), or an
    /// error naming `op` when they are not all f32 or all f16.
    pub fn of(op: &str, tensors: &[&Tensor]) -> Result<Precision, GpuError> {
        let precision = |t: &Tensor| match t.dtype {
            DType::F32 => Some(Precision::F32),
            DType::F16 => Some(Precision::F16),
            _ => None,
        };
        let first = tensors.first().and_then(|t| precision(t));
        match first {
            Some(p) if tensors.iter().all(|t| precision(t) == Some(p)) => Ok(p),
            _ => Err(GpuError::shape(
                op,
                format!(
                    "activations must be all f32 or all f16, got {:?}",
                    tensors
                        .iter()
                        .map(|t| format!("'{}' {:?}", t.label, t.dtype))
                        .collect::<Vec<_>>()
                ),
            )),
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
    /// On a modeled device (`GpuContext::modeled`): `buffer` is the shared
    /// stand-in, bound whole, and nothing is written or read.
    stand_in: bool,
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
        if let Some(stand_in) = ctx.stand_in_buffer() {
            return Ok(Self::stand_in(stand_in, size, label, shape, dtype));
        }
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
            stand_in: false,
            buffer,
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
        })
    }

    /// The `shape` of `base`'s type at byte `offset` of its buffer. The offset
    /// must be a multiple of the adapter's storage offset alignment (checked,
    /// as is that the range lies inside `base`).
    pub fn view(
        ctx: &GpuContext,
        base: &Tensor,
        offset: u64,
        label: &str,
        shape: &[usize],
    ) -> Result<Self, GpuError> {
        let size = base.dtype.bytes(shape.iter().product()).max(4);
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
            stand_in: base.stand_in,
            shape: shape.to_vec(),
            dtype: base.dtype,
            label: label.to_string(),
        })
    }

    /// `data` stored as `dtype` (F32, or F16 rounded to nearest).
    pub fn from_f32_as(
        ctx: &GpuContext,
        label: &str,
        shape: &[usize],
        data: &[f32],
        dtype: DType,
    ) -> Result<Self, GpuError> {
        match dtype {
            DType::F16 => {
                Self::from_bytes(ctx, label, shape, DType::F16, &f16_bytes(data), data.len())
            }
            _ => Self::from_f32(ctx, label, shape, data),
        }
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
        if let Some(stand_in) = ctx.stand_in_buffer() {
            return Ok(Self::stand_in(stand_in, size, label, shape, dtype));
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
            stand_in: false,
            buffer,
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
        })
    }

    /// A tensor of `size` bytes on a modeled device: no memory of its own.
    fn stand_in(
        buffer: &wgpu::Buffer,
        size: u64,
        label: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Self {
        Tensor {
            buffer: buffer.clone(),
            offset: 0,
            size,
            view: false,
            stand_in: true,
            shape: shape.to_vec(),
            dtype,
            label: label.to_string(),
        }
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
        if self.stand_in {
            return self.buffer.as_entire_buffer_binding();
        }
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

    /// Errors unless this is an f32 or f16 activation [batch, channels, ...]
    /// whose trailing dimensions hold `hw` values.
    pub fn expect_activation(
        &self,
        op: &str,
        batch: usize,
        channels: usize,
        hw: usize,
    ) -> Result<(), GpuError> {
        let ok = matches!(self.dtype, DType::F32 | DType::F16)
            && self.shape.len() >= 2
            && self.shape[0] == batch
            && self.shape[1] == channels
            && self.shape[2..].iter().product::<usize>() == hw;
        if !ok {
            return Err(GpuError::shape(
                op,
                format!(
                    "tensor '{}' is {:?} {:?}, expected f32 or f16 [{batch}, {channels}, ..{hw} values]",
                    self.label, self.dtype, self.shape
                ),
            ));
        }
        Ok(())
    }

    /// Writes `data` (rounded to nearest for an f16 tensor).
    pub fn write_f32(&self, ctx: &GpuContext, data: &[f32]) -> Result<(), GpuError> {
        if !matches!(self.dtype, DType::F32 | DType::F16) || data.len() != self.numel() {
            return Err(GpuError::shape(
                &self.label,
                format!("cannot write {} f32 values", data.len()),
            ));
        }
        let mut bytes: Vec<u8> = match self.dtype {
            DType::F16 => f16_bytes(data),
            _ => bytemuck::cast_slice(data).to_vec(),
        };
        // Queue writes go in whole words; an odd f16 count leaves the pad.
        bytes.resize(bytes.len().next_multiple_of(4).min(self.size as usize), 0);
        if !self.stand_in {
            ctx.queue.write_buffer(&self.buffer, self.offset, &bytes);
        }
        Ok(())
    }

    /// The values as f32 (an f16 tensor's widened exactly).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32(&self, ctx: &GpuContext) -> Result<Vec<f32>, GpuError> {
        let bytes = self.read_bytes(ctx)?;
        Ok(f32_values(&bytes, self.dtype, self.numel()))
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
        if self.stand_in {
            return Err(GpuError::Setup(format!(
                "'{}' lives on a modeled device, which holds no values",
                self.label
            )));
        }
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

/// The first `numel` values of an f32 or f16 tensor's bytes as f32 (an f16
/// widened exactly). Read by bytes: a mapped range copied into wasm memory
/// need not be aligned for f32.
pub fn f32_values(bytes: &[u8], dtype: DType, numel: usize) -> Vec<f32> {
    match dtype {
        DType::F16 => bytes
            .chunks_exact(2)
            .take(numel)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .take(numel)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// `values` rounded to nearest f16, little-endian.
fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect()
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
