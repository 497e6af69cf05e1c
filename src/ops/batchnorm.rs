//! Host side of shaders/batchnorm.wgsl: BatchNorm2d with optional fused ReLU or
//! residual-add + ReLU.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor,
    Workgroup, elementwise_grid,
};
use crate::shapes::{BatchNormShape, Fusion};

use super::Reduction;
use super::partition::Partition;

/// PyTorch's defaults.
pub const EPS: f32 = 1e-5;
pub const MOMENTUM: f32 = 0.1;

crate::wgsl_struct! {
    pub struct BnParams {
        batch: u32,
        channels: u32,
        hw: u32,
        parts: u32,
        eps: f32,
        momentum: f32,
        samples_per_part: u32,
        chunk: u32,
    }
}

/// Workgroup size of the eval passes (elementwise); the training passes take
/// the shader's `WG` per part of a channel.
const ELEMENTWISE_WG: u32 = 256;

const fn kernel(
    entry: &'static str,
    roles: &'static [&'static str],
    workgroup: Workgroup,
) -> Kernel {
    Kernel {
        modules: &["batchnorm", "batchnorm_subgroup"],
        entry,
        roles,
        workgroup,
    }
}

const TRAIN_APPLY: &[&str] = &[
    "input",
    "gamma",
    "beta",
    "output",
    "stats",
    "running_mean",
    "running_var",
];
const EVAL_APPLY: &[&str] = &[
    "input",
    "gamma",
    "beta",
    "output",
    "running_mean",
    "running_var",
];
const PARTS: Workgroup = Workgroup::PerItem;
const ELEMENTWISE: Workgroup = Workgroup::Overrides(&["WG_ELEMENTWISE"]);

/// The entry points of shaders/batchnorm.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    kernel("train_stats", &["input", "stats"], PARTS),
    kernel("train_apply", TRAIN_APPLY, PARTS),
    kernel("train_apply_relu", TRAIN_APPLY, PARTS),
    kernel(
        "train_apply_add_relu",
        &[
            "input",
            "gamma",
            "beta",
            "output",
            "stats",
            "running_mean",
            "running_var",
            "residual",
        ],
        PARTS,
    ),
    kernel("eval_apply", EVAL_APPLY, ELEMENTWISE),
    kernel("eval_apply_relu", EVAL_APPLY, ELEMENTWISE),
    kernel(
        "eval_apply_add_relu",
        &[
            "input",
            "gamma",
            "beta",
            "output",
            "running_mean",
            "running_var",
            "residual",
        ],
        ELEMENTWISE,
    ),
    kernel("backward_reduce", &["input", "stats", "grad_output"], PARTS),
    kernel(
        "backward_reduce_relu",
        &[
            "input",
            "stats",
            "grad_output",
            "forward_output",
            "grad_input",
        ],
        PARTS,
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
        PARTS,
    ),
    kernel(
        "backward_apply",
        &[
            "input",
            "gamma",
            "stats",
            "grad_output",
            "grad_input",
            "grad_gamma",
            "grad_beta",
        ],
        PARTS,
    ),
    kernel(
        "backward_apply_relu",
        &[
            "input",
            "gamma",
            "stats",
            "grad_input",
            "grad_gamma",
            "grad_beta",
        ],
        PARTS,
    ),
    kernel(
        "backward_apply_add_relu",
        &[
            "input",
            "gamma",
            "stats",
            "grad_residual",
            "grad_input",
            "grad_gamma",
            "grad_beta",
        ],
        PARTS,
    ),
];

/// The tensors of one batch-norm layer: its input, parameters, running stats
/// and `stats`, the layer's scratch of `BatchNorm::stats_len` f32 (the
/// statistics saved by forward for backward, then the parts' partials).
pub struct BnTensors<'a> {
    pub x: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub stats: &'a Tensor,
}

/// Gradient tensors for backward. `dresidual` is written by the AddRelu form.
pub struct BnGradTensors<'a> {
    pub dy: &'a Tensor,
    pub dx: &'a Tensor,
    pub dgamma: &'a Tensor,
    pub dbeta: &'a Tensor,
    pub dresidual: Option<&'a Tensor>,
}

pub struct BatchNorm {
    pub label: String,
    pub shape: BatchNormShape,
    pub fusion: Fusion,
    pub eps: f32,
    pub momentum: f32,
    /// How the per-part reductions end (the tree or subgroups).
    pub reduction: Reduction,
    /// The parts of each channel's batch x plane values; set it (`split`)
    /// before allocating `stats`, whose length depends on it.
    pub partition: Partition,
}

impl BatchNorm {
    pub fn new(label: &str, shape: BatchNormShape, fusion: Fusion) -> Result<Self, GpuError> {
        if shape.count() < 2 {
            // As PyTorch: the unbiased variance needs two values per channel.
            return Err(GpuError::shape(
                label,
                format!(
                    "batch norm needs at least 2 values per channel to normalize a batch; \
                     this layer sees {} image(s) of {} position(s) per channel: use a larger \
                     batch or image size",
                    shape.batch, shape.hw
                ),
            ));
        }
        Ok(BatchNorm {
            label: label.to_string(),
            shape,
            fusion,
            eps: EPS,
            momentum: MOMENTUM,
            reduction: Reduction::Tree,
            partition: Partition::whole(shape.batch, shape.hw),
        })
    }

    /// Splits each channel so that a pass launches about `target` workgroups
    /// (`ops::partition`), parts of at least `min_part` values.
    pub fn split(&mut self, target: usize, min_part: usize) {
        let s = &self.shape;
        self.partition = Partition::split(s.channels, s.batch, s.hw, target, min_part);
    }

    /// The f32 words of the `stats` scratch: the mean, invstd and the mean
    /// less its shift per channel (each C long), then 4 per (channel, part).
    pub fn stats_len(&self) -> usize {
        self.shape.channels * (3 + 4 * self.partition.parts)
    }

    /// The grid of every training pass: parts x channels.
    fn parts_grid(&self) -> [u32; 3] {
        [self.partition.parts as u32, self.shape.channels as u32, 1]
    }

    fn params(&self) -> Result<BnParams, GpuError> {
        let u = |what, v| super::u32_of(&self.label, what, v);
        u("elements", self.shape.numel())?;
        let part = &self.partition;
        Ok(BnParams {
            batch: u("batch", self.shape.batch)?,
            channels: u("channels", self.shape.channels)?,
            hw: u("hw", self.shape.hw)?,
            parts: u("parts", part.parts)?,
            eps: self.eps,
            momentum: self.momentum,
            samples_per_part: u("samples per part", part.rows_per_part)?,
            chunk: u("chunk", part.chunk)?,
        })
    }

    /// The precision of the activations (x and y agree), once every tensor
    /// has its shape.
    fn check(&self, t: &BnTensors<'_>, y: &Tensor) -> Result<Precision, GpuError> {
        let s = &self.shape;
        t.x.expect_activation(&self.label, s.batch, s.channels, s.hw)?;
        let precision = Precision::of(&self.label, &[t.x, y])?;
        y.expect(&self.label, t.x.shape(), precision.dtype())?;
        for c in [t.gamma, t.beta, t.running_mean, t.running_var] {
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
        bindings: Vec<Binding<'_>>,
        workgroups: [u32; 3],
        precision: Precision,
    ) -> Result<Dispatch, GpuError> {
        let params = self.params()?;
        // Only the reductions differ between the modules.
        let (shader, label) = if entry.starts_with("eval_") {
            ("batchnorm", format!("{} {entry}", self.label))
        } else {
            let kernel = self.reduction;
            let label = format!("{} {entry} ({})", self.label, kernel.name());
            (kernel.batchnorm_module(), label)
        };
        DispatchSpec {
            label,
            shader,
            kernel: Kernel::find(KERNELS, shader, entry)?,
            variant: None,
            precision,
            constants: &[("WG_ELEMENTWISE", ELEMENTWISE_WG)],
            params: &params,
            bindings,
            workgroups,
        }
        .build(ctx)
    }

    /// The apply entry for this form ("train_apply" or "eval_apply" + the
    /// fused suffix), with the residual pushed onto `bindings` for AddRelu.
    fn form<'a>(
        &self,
        stem: &'static str,
        residual: Option<&'a Tensor>,
        y: &Tensor,
        bindings: &mut Vec<Binding<'a>>,
    ) -> Result<&'static str, GpuError> {
        Ok(match (self.fusion, residual, stem) {
            (Fusion::None, None, "train") => "train_apply",
            (Fusion::Relu, None, "train") => "train_apply_relu",
            (Fusion::None, None, _) => "eval_apply",
            (Fusion::Relu, None, _) => "eval_apply_relu",
            (Fusion::AddRelu, Some(r), _) => {
                r.expect(&self.label, y.shape(), y.dtype())?;
                bindings.push(Binding::tensor("residual", r));
                if stem == "train" {
                    "train_apply_add_relu"
                } else {
                    "eval_apply_add_relu"
                }
            }
            _ => {
                return Err(GpuError::shape(
                    &self.label,
                    "a residual is given exactly for the AddRelu form",
                ));
            }
        })
    }

    /// Training forward: each part's moments, then normalize with the fused
    /// activation, merging the channel's moments (saved for backward, folded
    /// into the running stats) inside the apply.
    pub fn forward_train(
        &self,
        ctx: &GpuContext,
        t: &BnTensors<'_>,
        residual: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let precision = self.check(t, y)?;
        let b = Binding::tensor;
        let stats_bindings = vec![b("input", t.x), b("stats", t.stats)];
        let stats = self.build(
            ctx,
            "train_stats",
            stats_bindings,
            self.parts_grid(),
            precision,
        )?;
        let mut bindings = vec![
            b("input", t.x),
            b("gamma", t.gamma),
            b("beta", t.beta),
            b("output", y),
            b("stats", t.stats),
            b("running_mean", t.running_mean),
            b("running_var", t.running_var),
        ];
        let entry = self.form("train", residual, y, &mut bindings)?;
        let apply = self.build(ctx, entry, bindings, self.parts_grid(), precision)?;
        Ok(vec![stats, apply])
    }

    /// Eval forward: normalize with the running statistics, one elementwise
    /// dispatch.
    pub fn forward_eval(
        &self,
        ctx: &GpuContext,
        t: &BnTensors<'_>,
        residual: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let precision = self.check(t, y)?;
        let b = Binding::tensor;
        let mut bindings = vec![
            b("input", t.x),
            b("gamma", t.gamma),
            b("beta", t.beta),
            b("output", y),
            b("running_mean", t.running_mean),
            b("running_var", t.running_var),
        ];
        let entry = self.form("eval", residual, y, &mut bindings)?;
        let grid = elementwise_grid(ctx, self.shape.numel(), ELEMENTWISE_WG);
        Ok(vec![self.build(ctx, entry, bindings, grid, precision)?])
    }

    /// Training backward from the saved statistics; `y` is the forward output
    /// (the fused forms' ReLU mask).
    pub fn backward(
        &self,
        ctx: &GpuContext,
        t: &BnTensors<'_>,
        y: &Tensor,
        g: &BnGradTensors<'_>,
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
            b("grad_input", g.dx),
            b("grad_gamma", g.dgamma),
            b("grad_beta", g.dbeta),
        ];
        // The fused forms' reduce pass stores the ReLU-masked gradient (in
        // grad_input, or grad_residual for the skip) and apply reads it there,
        // so no entry binds more than WebGPU's default 8 storage buffers.
        let (reduce_entry, apply_entry) = match (self.fusion, g.dresidual) {
            (Fusion::None, None) => {
                apply.push(b("grad_output", g.dy));
                ("backward_reduce", "backward_apply")
            }
            (Fusion::Relu, None) => {
                reduce.push(b("grad_input", g.dx));
                ("backward_reduce_relu", "backward_apply_relu")
            }
            (Fusion::AddRelu, Some(dr)) => {
                dr.expect(&self.label, y.shape(), precision.dtype())?;
                reduce.push(b("grad_residual", dr));
                apply.push(b("grad_residual", dr));
                ("backward_reduce_add_relu", "backward_apply_add_relu")
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
        }
        Ok(vec![
            self.build(ctx, reduce_entry, reduce, self.parts_grid(), precision)?,
            self.build(ctx, apply_entry, apply, self.parts_grid(), precision)?,
        ])
    }
}
