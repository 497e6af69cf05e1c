use wgpu::util::DeviceExt;

use super::GpuContext;
use super::contract::{self, Kernel, PARAMS_ROLE};
use super::error::GpuError;

/// A compute dispatch prepared once (pipeline, bind group, uniform parameters,
/// workgroup counts) and recorded any number of times: recording a training step
/// is a loop over these.
pub struct Dispatch {
    pub label: String,
    /// The module and entry point it runs, and which candidate where an op
    /// has several (a conv pass's kernel): what profiles group by.
    pub shader: &'static str,
    pub entry: &'static str,
    pub variant: Option<String>,
    pub precision: super::Precision,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
    /// What it does, for the dispatch report (`info --dispatches`).
    pub work: Work,
}

/// What one dispatch does, counted from its shape without running it: the
/// workgroup size, the floating-point operations of the matrix products it
/// computes (an FMA is 2; kernels that are not matrix products count 0), the
/// bytes of the tensors it binds (read-only bindings read once, read-write
/// ones written once: a lower bound of the traffic, every element touched
/// once), and for the conv kernels how many FMAs the inner loop does per
/// byte it reads from workgroup memory and per byte a workgroup loads from
/// global memory (the intensity of its tile).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Work {
    #[serde(rename = "workgroup_size")]
    pub invocations: u32,
    pub flops: f64,
    pub bytes_read: f64,
    pub bytes_written: f64,
    pub fma_per_workgroup_byte: Option<f64>,
    pub fma_per_global_byte: Option<f64>,
    /// Whether its products run on cooperative matrices (tensor cores).
    pub matrix_units: bool,
}

impl Dispatch {
    /// "conv_tiled forward (tiled64x64)", "batchnorm forward_stats": the
    /// kind of work, without the layer.
    pub fn kind(&self) -> String {
        let half = match self.precision {
            super::Precision::F16 => " f16",
            super::Precision::F32 => "",
        };
        match &self.variant {
            Some(v) => format!("{} {}{half} ({v})", self.shader, self.entry),
            None => format!("{} {}{half}", self.shader, self.entry),
        }
    }

    /// Workgroups it launches.
    pub fn workgroup_count(&self) -> u64 {
        self.workgroups.iter().map(|&n| u64::from(n)).product()
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.workgroups[0], self.workgroups[1], self.workgroups[2]);
    }
}

/// A buffer range bound to the WGSL variable named `role` (its binding number
/// comes from the module). The uniform parameters `p` are `DispatchSpec`'s own.
pub struct Binding<'a> {
    pub role: &'static str,
    pub resource: wgpu::BufferBinding<'a>,
    /// The bytes it binds (the tensor's, also where a dry device binds a
    /// stand-in buffer: `GpuContext::modeled`).
    pub bytes: u64,
}

impl<'a> Binding<'a> {
    /// A tensor (its own buffer, or its range of a shared one).
    pub fn tensor(role: &'static str, tensor: &'a super::Tensor) -> Self {
        Binding {
            role,
            resource: tensor.binding(),
            bytes: tensor.size_bytes(),
        }
    }

    /// A whole buffer that is no tensor (a shared uniform).
    pub fn buffer(role: &'static str, buffer: &'a wgpu::Buffer) -> Self {
        Binding {
            role,
            resource: buffer.as_entire_buffer_binding(),
            bytes: buffer.size(),
        }
    }
}

/// Everything needed to build a Dispatch: `kernel` (its op family's contract
/// for the entry point) in module `shader`, with the bindings and override
/// constants the contract asks for.
pub struct DispatchSpec<'a, P: bytemuck::Pod> {
    pub label: String,
    pub shader: &'static str,
    pub kernel: &'static Kernel,
    /// The candidate, where the op has several (see `Dispatch::variant`).
    pub variant: Option<String>,
    /// The module's activation storage type (`act` in WGSL).
    pub precision: super::Precision,
    pub constants: &'a [(&'static str, u32)],
    pub params: &'a P,
    pub bindings: Vec<Binding<'a>>,
    pub workgroups: [u32; 3],
}

impl<P: bytemuck::Pod> DispatchSpec<'_, P> {
    pub fn build(self, ctx: &GpuContext) -> Result<Dispatch, GpuError> {
        self.build_with_uniform(ctx).map(|(dispatch, _)| dispatch)
    }

    /// Also returns the parameters' uniform buffer, for ops that rewrite a
    /// field per step (the augmentation seed) with `Queue::write_buffer`.
    pub fn build_with_uniform(
        self,
        ctx: &GpuContext,
    ) -> Result<(Dispatch, wgpu::Buffer), GpuError> {
        let max = ctx.limits.max_compute_workgroups_per_dimension;
        if self.workgroups.iter().any(|&n| n > max) {
            return Err(GpuError::shape(
                &self.label,
                format!(
                    "needs {:?} workgroups; the adapter allows {max} per dimension",
                    self.workgroups
                ),
            ));
        }
        let roles: Vec<&str> = self.bindings.iter().map(|b| b.role).collect();
        self.kernel.check(self.shader, &roles, self.constants)?;
        let module = contract::shader(self.shader)?;
        let index = |role: &str| {
            module.binding(role).ok_or_else(|| GpuError::Contract {
                kernel: self.kernel.name(self.shader),
                message: format!("module '{}' declares no binding '{role}'", self.shader),
            })
        };
        let pipeline = ctx.pipeline(
            self.shader,
            self.precision,
            self.kernel.entry,
            self.constants,
        )?;
        let uniform = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&format!("{} params", self.label)),
                contents: bytemuck::bytes_of(self.params),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: index(PARAMS_ROLE)?,
            resource: uniform.as_entire_binding(),
        }];
        for b in &self.bindings {
            entries.push(wgpu::BindGroupEntry {
                binding: index(b.role)?,
                resource: wgpu::BindingResource::Buffer(b.resource.clone()),
            });
        }
        let mut work = Work {
            invocations: module.workgroup_size(self.kernel.entry, self.constants),
            ..Work::default()
        };
        for b in &self.bindings {
            if module.writable(b.role) {
                work.bytes_written += b.bytes as f64;
            } else {
                work.bytes_read += b.bytes as f64;
            }
        }
        let bind_group = ctx.checked(&self.label, || {
            ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&self.label),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        })?;
        Ok((
            Dispatch {
                label: self.label,
                shader: self.shader,
                entry: self.kernel.entry,
                variant: self.variant,
                precision: self.precision,
                pipeline,
                bind_group,
                workgroups: self.workgroups,
                work,
            },
            uniform,
        ))
    }
}

/// Workgroup counts for `elements` invocations in groups of `group_size`, spread
/// over x and y so no dimension passes the adapter's limit. Kernels recover the
/// flat index as (wg.y * num_workgroups.x + wg.x) * group_size + local index.
pub fn elementwise_grid(ctx: &GpuContext, elements: usize, group_size: u32) -> [u32; 3] {
    let groups = elements.div_ceil(group_size as usize).max(1) as u64;
    let max = u64::from(ctx.limits.max_compute_workgroups_per_dimension);
    let y = groups.div_ceil(max);
    let x = groups.div_ceil(y);
    [x as u32, y as u32, 1]
}

/// A command encoder labelled `label`.
pub fn encoder(ctx: &GpuContext, label: &str) -> wgpu::CommandEncoder {
    ctx.device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
}

/// Records one compute pass (no timestamps) into `encoder` with `record`.
pub fn record_pass(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    record: impl FnOnce(&mut wgpu::ComputePass<'_>),
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    record(&mut pass);
}

/// Records `dispatches` into one compute pass of one command buffer and submits
/// it; wgpu orders the dispatches with the barriers their bindings require.
pub fn submit(ctx: &GpuContext, label: &str, dispatches: &[&Dispatch]) -> wgpu::SubmissionIndex {
    let mut encoder = encoder(ctx, label);
    record_pass(&mut encoder, label, |pass| {
        for d in dispatches {
            d.record(pass);
        }
    });
    ctx.queue.submit([encoder.finish()])
}
