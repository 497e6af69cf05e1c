//! Host side of shaders/groupnorm.wgsl: GroupNorm with optional fused ReLU or
//! residual-add + ReLU. It keeps no running statistics, so training and eval
//! run the same dispatches.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor,
    Workgroup,
};
use crate::shapes::{Fusion, GroupNormShape};

use super::partition::Partition;

/// PyTorch's default.
pub const EPS: f32 = 1e-5;

crate::wgsl_struct! {
    pub struct GnParams {
        batch: u32,
        channels: u32,
        hw: u32,
        groups: u32,
        eps: f32,
        parts: u32,
        chunk: u32,
        plane_chunk: u32,
    }
}

/// The most workgroups a grid dimension takes (WebGPU's default limit):
/// items and planes past it fold into z.
const GRID_DIMENSION: usize = 65535;

const fn kernel(entry: &'static str, roles: &'static [&'static str]) -> Kernel {
    Kernel {
        modules: &["groupnorm"],
        entry,
        roles,
        workgroup: Workgroup::PerItem,
    }
}

const APPLY: &[&str] = &["input", "gamma", "beta", "output", "stats"];
const DX: &[&str] = &[
    "input",
    "gamma",
    "stats",
    "grad_output",
    "grad_input",
    "grad_gamma",
    "grad_beta",
];

/// The entry points of shaders/groupnorm.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    kernel("forward_stats", &["input", "stats"]),
    kernel("forward_apply", APPLY),
    kernel("forward_apply_relu", APPLY),
    kernel(
        "forward_apply_add_relu",
        &["input", "gamma", "beta", "output", "stats", "residual"],
    ),
    kernel("backward_reduce", &["input", "stats", "grad_output"]),
    kernel(
        "backward_reduce_relu",
        &["input", "stats", "grad_output", "forward_output"],
    ),
    kernel(
        "backward_reduce_add_relu",
        &[
            "input",
            "stats",
            "grad_output",
            "forward_output",
            "grad_residual",
        ],
    ),
    kernel("backward_apply", DX),
    kernel(
        "backward_apply_relu",
        &[
            "input",
            "gamma",
            "stats",
            "grad_output",
            "grad_input",
            "grad_gamma",
            "grad_beta",
            "forward_output",
        ],
    ),
];

/// The tensors of one group-norm layer: its input, affine parameters and
/// `stats`, the layer's scratch of `GroupNorm::stats_len` f32 (the
/// per-(sample, group) statistics forward saves for backward, then the
/// parts' partials).
pub struct GnTensors<'a> {
    pub x: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub stats: &'a Tensor,
}

/// Gradient tensors for backward. `dresidual` is written by the AddRelu form.
pub struct GnGradTensors<'a> {
    pub dy: &'a Tensor,
    pub dx: &'a Tensor,
    pub dgamma: &'a Tensor,
    pub dbeta: &'a Tensor,
    pub dresidual: Option<&'a Tensor>,
}

pub struct GroupNorm {
    pub label: String,
    pub shape: GroupNormShape,
    pub fusion: Fusion,
    pub eps: f32,
    /// The chunks of each (sample, group)'s values (forward, backward_apply).
    pub partition: Partition,
    /// The chunks of each plane (backward_reduce).
    pub plane_partition: Partition,
}

impl GroupNorm {
    pub fn new(label: &str, shape: GroupNormShape, fusion: Fusion) -> Result<Self, GpuError> {
        shape.validate().map_err(|e| GpuError::shape(label, e))?;
        Ok(GroupNorm {
            label: label.to_string(),
            shape,
            fusion,
            eps: EPS,
            partition: Partition::whole(1, shape.group_len()),
            plane_partition: Partition::whole(1, shape.hw),
        })
    }

    /// Chunks so that a pass launches about `target` workgroups
    /// (`ops::partition`), of at least `min_part` values. Set it before
    /// allocating `stats`, whose length depends on it.
    pub fn split(&mut self, target: usize, min_part: usize) {
        let s = &self.shape;
        self.partition = Partition::split(s.stats_len(), 1, s.group_len(), target, min_part);
        let planes = s.batch * s.channels;
        self.plane_partition = Partition::split(planes, 1, s.hw, target, min_part);
    }

    /// The f32 words of the `stats` scratch: mean, invstd and mean less its
    /// shift per (sample, group), then the larger of the two passes' partials.
    pub fn stats_len(&self) -> usize {
        let s = &self.shape;
        let forward = 4 * s.stats_len() * self.partition.parts;
        let backward = 2 * s.batch * s.channels * self.plane_partition.parts;
        3 * s.stats_len() + forward.max(backward)
    }

    fn params(&self) -> Result<GnParams, GpuError> {
        let u = |what, v| super::u32_of(&self.label, what, v);
        u("elements", self.shape.numel())?;
        Ok(GnParams {
            batch: u("batch", self.shape.batch)?,
            channels: u("channels", self.shape.channels)?,
            hw: u("hw", self.shape.hw)?,
            groups: u("groups", self.shape.groups)?,
            eps: self.eps,
            parts: u("parts", self.partition.parts)?,
            chunk: u("chunk", self.partition.chunk)?,
            plane_chunk: u("plane chunk", self.plane_partition.chunk)?,
        })
    }

    /// The precision of the activations (x and y agree), once every tensor
    /// has its shape.
    fn check(&self, t: &GnTensors<'_>, y: &Tensor) -> Result<Precision, GpuError> {
        let s = &self.shape;
        t.x.expect_activation(&self.label, s.batch, s.channels, s.hw)?;
        let precision = Precision::of(&self.label, &[t.x, y])?;
        y.expect(&self.label, t.x.shape(), precision.dtype())?;
        for c in [t.gamma, t.beta] {
            c.expect(&self.label, &[s.channels], DType::F32)?;
        }
        t.stats
            .expect(&self.label, &[self.stats_len()], DType::F32)?;
        Ok(precision)
    }

    fn build(
        &self,
        ctx: &GpuContext,
        entry: &'static str,
        precision: Precision,
        bindings: Vec<Binding<'_>>,
        workgroups: [u32; 3],
    ) -> Result<Dispatch, GpuError> {
        DispatchSpec {
            label: format!("{} {entry}", self.label),
            shader: "groupnorm",
            kernel: Kernel::find(KERNELS, "groupnorm", entry)?,
            variant: None,
            precision,
            constants: &[],
            params: &self.params()?,
            bindings,
            workgroups,
        }
        .build(ctx)
    }

    /// `[parts, rows]` with rows past a grid dimension folded into z (the
    /// shader's `row_of`).
    fn fold_rows(parts: usize, rows: usize) -> [u32; 3] {
        let y = rows.clamp(1, GRID_DIMENSION);
        [parts as u32, y as u32, rows.div_ceil(y) as u32]
    }

    fn items_grid(&self) -> [u32; 3] {
        Self::fold_rows(self.partition.parts, self.shape.stats_len())
    }

    /// Forward (training and eval alike): each chunk's moments, then
    /// normalize with the fused activation, merging the (sample, group)'s
    /// moments (saved for backward) inside the apply.
    pub fn forward(
        &self,
        ctx: &GpuContext,
        t: &GnTensors<'_>,
        residual: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let precision = self.check(t, y)?;
        let b = Binding::tensor;
        let stats = self.build(
            ctx,
            "forward_stats",
            precision,
            vec![b("input", t.x), b("stats", t.stats)],
            self.items_grid(),
        )?;
        let mut bindings = vec![
            b("input", t.x),
            b("gamma", t.gamma),
            b("beta", t.beta),
            b("output", y),
            b("stats", t.stats),
        ];
        let entry = match (self.fusion, residual) {
            (Fusion::None, None) => "forward_apply",
            (Fusion::Relu, None) => "forward_apply_relu",
            (Fusion::AddRelu, Some(r)) => {
                r.expect(&self.label, y.shape(), precision.dtype())?;
                bindings.push(b("residual", r));
                "forward_apply_add_relu"
            }
            _ => {
                return Err(GpuError::shape(
                    &self.label,
                    "a residual is given exactly for the AddRelu form",
                ));
            }
        };
        let apply = self.build(ctx, entry, precision, bindings, self.items_grid())?;
        Ok(vec![stats, apply])
    }

    /// Backward from the saved statistics; `y` is the forward output (the
    /// fused forms' ReLU mask).
    pub fn backward(
        &self,
        ctx: &GpuContext,
        t: &GnTensors<'_>,
        y: &Tensor,
        g: &GnGradTensors<'_>,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let precision = self.check(t, y)?;
        let s = &self.shape;
        g.dy.expect(&self.label, y.shape(), precision.dtype())?;
        g.dx.expect(&self.label, y.shape(), precision.dtype())?;
        g.dgamma.expect(&self.label, &[s.channels], DType::F32)?;
        g.dbeta.expect(&self.label, &[s.channels], DType::F32)?;
        let b = Binding::tensor;
        let mut reduce = vec![b("input", t.x), b("stats", t.stats), b("grad_output", g.dy)];
        let mut apply = vec![
            b("input", t.x),
            b("gamma", t.gamma),
            b("stats", t.stats),
            b("grad_output", g.dy),
            b("grad_input", g.dx),
            b("grad_gamma", g.dgamma),
            b("grad_beta", g.dbeta),
        ];
        let entries = match (self.fusion, g.dresidual) {
            (Fusion::None, None) => ["backward_reduce", "backward_apply"],
            (Fusion::Relu, None) => ["backward_reduce_relu", "backward_apply_relu"],
            (Fusion::AddRelu, Some(dr)) => {
                dr.expect(&self.label, y.shape(), precision.dtype())?;
                reduce.push(b("grad_residual", dr));
                ["backward_reduce_add_relu", "backward_apply_relu"]
            }
            _ => {
                return Err(GpuError::shape(
                    &self.label,
                    "a residual gradient is given exactly for the AddRelu form",
                ));
            }
        };
        if self.fusion != Fusion::None {
            reduce.push(b("forward_output", y));
            apply.push(b("forward_output", y));
        }
        let planes = Self::fold_rows(self.plane_partition.parts, s.batch * s.channels);
        Ok(vec![
            self.build(ctx, entries[0], precision, reduce, planes)?,
            self.build(ctx, entries[1], precision, apply, self.items_grid())?,
        ])
    }
}
