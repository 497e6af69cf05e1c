//! Host side of shaders/augment.wgsl: batch assembly from the u8 dataset on the GPU.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor,
    Workgroup, elementwise_grid,
};
use crate::shapes::{AugmentConfig, ImageShape};

crate::wgsl_struct! {
    pub struct AugmentParams {
        batch: u32,
        channels: u32,
        height: u32,
        width: u32,
        pad: u32,
        flip: u32,
        seed: u32,
        dataset_len: u32,
        mean: [f32; 4],
        inv_std: [f32; 4],
    }
}

const WG: u32 = 256;

/// The entry point of shaders/augment.wgsl and what it binds.
pub const KERNELS: &[Kernel] = &[Kernel {
    modules: &["augment"],
    entry: "augment",
    roles: &["images", "dataset_labels", "indices", "output", "labels"],
    workgroup: Workgroup::Overrides(&["WG"]),
}];

/// The per-step seed lives in the params uniform; `Augment::set_seed` rewrites
/// it without rebuilding the dispatch.
pub struct Augment {
    pub label: String,
    pub image: ImageShape,
    pub config: AugmentConfig,
    params: AugmentParams,
    uniform: wgpu::Buffer,
}

pub struct AugmentTensors<'a> {
    /// u8 [dataset_len, C, H, W]
    pub images: &'a Tensor,
    /// u32 [dataset_len]
    pub dataset_labels: &'a Tensor,
    /// u32 [batch]: dataset index of each batch sample.
    pub indices: &'a Tensor,
    /// f32 [batch, C, H, W]
    pub output: &'a Tensor,
    /// u32 [batch]
    pub labels: &'a Tensor,
}

impl Augment {
    pub fn new(
        ctx: &GpuContext,
        label: &str,
        image: ImageShape,
        config: AugmentConfig,
        t: &AugmentTensors<'_>,
    ) -> Result<(Self, Dispatch), GpuError> {
        if image.channels == 0 || image.channels > 4 {
            return Err(GpuError::shape(
                label,
                format!(
                    "augmentation handles 1 to 4 channels, got {}",
                    image.channels
                ),
            ));
        }
        let dataset_len = t.images.shape().first().copied().unwrap_or(0);
        let batch = t.indices.numel();
        t.images.expect(
            label,
            &[dataset_len, image.channels, image.height, image.width],
            DType::U8,
        )?;
        t.dataset_labels.expect(label, &[dataset_len], DType::U32)?;
        t.indices.expect(label, &[batch], DType::U32)?;
        let precision = Precision::of(label, &[t.output])?;
        t.output.expect(
            label,
            &[batch, image.channels, image.height, image.width],
            precision.dtype(),
        )?;
        t.labels.expect(label, &[batch], DType::U32)?;
        if dataset_len == 0 {
            return Err(GpuError::shape(label, "the dataset is empty"));
        }
        let u = |what, v| super::u32_of(label, what, v);
        u("dataset bytes", dataset_len * image.numel())?;
        let params = AugmentParams {
            batch: u("batch", batch)?,
            channels: image.channels as u32,
            height: u("height", image.height)?,
            width: u("width", image.width)?,
            pad: config.pad,
            flip: u32::from(config.flip),
            seed: 0,
            dataset_len: u("dataset_len", dataset_len)?,
            mean: config.mean,
            inv_std: config.std.map(|s| 1.0 / s),
        };
        let dispatch = DispatchSpec {
            label: format!("{label} augment"),
            shader: "augment",
            kernel: &KERNELS[0],
            variant: None,
            precision,
            constants: &[("WG", WG)],
            params: &params,
            bindings: vec![
                Binding::tensor("images", t.images),
                Binding::tensor("dataset_labels", t.dataset_labels),
                Binding::tensor("indices", t.indices),
                Binding::tensor("output", t.output),
                Binding::tensor("labels", t.labels),
            ],
            workgroups: elementwise_grid(ctx, t.output.numel(), WG),
        }
        .build_with_uniform(ctx)?;
        let (dispatch, uniform) = dispatch;
        Ok((
            Augment {
                label: label.to_string(),
                image,
                config,
                params,
                uniform,
            },
            dispatch,
        ))
    }

    /// Seed for the next submitted step (crop offsets and flips derive from it).
    pub fn set_seed(&mut self, ctx: &GpuContext, seed: u32) {
        self.params.seed = seed;
        ctx.queue
            .write_buffer(&self.uniform, 0, bytemuck::bytes_of(&self.params));
    }
}
