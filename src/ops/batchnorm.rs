//! Host side of shaders/batchnorm.wgsl: BatchNorm2d with optional fused ReLU or
//! residual-add + ReLU.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor,
    Workgroup, elementwise_grid,
};
use crate::shapes::{BatchNormShape, Fusion};

use super::Reduction;

/// PyTorch's defaults.
pub const EPS: f32 = 1e-5;
pub const MOMENTUM: f32 = 0.1;

crate::wgsl_struct! {
    pub struct BnParams {
        batch: u32,
        channels: u32,
        hw: u32,
        _pad0: u32,
        eps: f32,
        momentum: f32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// Workgroup sizes of the elementwise passes and of eval_stats (one
/// invocation per channel); the reductions take one workgroup per channel.
const ELEMENTWISE_WG: u32 = 256;
const CHANNELS_WG: u32 = 64;

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

const STATS: &[&str] = &["save_mean", "save_invstd", "running_mean", "running_var"];
const APPLY: &[&str] = &[
    "input",
    "gamma",
    "beta",
    "output",
    "save_mean",
    "save_invstd",
];
const REDUCE: &[&str] = &[
    "input",
    "save_mean",
    "save_invstd",
    "grad_output",
    "grad_gamma",
    "grad_beta",
];
const ELEMENTWISE: Workgroup = Workgroup::Overrides(&["WG_ELEMENTWISE"]);

/// The entry points of shaders/batchnorm.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    kernel(
        "forward_stats",
        &[
            "input",
            "save_mean",
            "save_invstd",
            "running_mean",
            "running_var",
        ],
        Workgroup::PerItem,
    ),
    kernel("eval_stats", STATS, Workgroup::Overrides(&["WG_CHANNELS"])),
    kernel("forward_apply", APPLY, ELEMENTWISE),
    kernel("forward_apply_relu", APPLY, ELEMENTWISE),
    kernel(
        "forward_apply_add_relu",
        &[
            "input",
            "gamma",
            "beta",
            "output",
            "save_mean",
            "save_invstd",
            "residual",
        ],
        ELEMENTWISE,
    ),
    kernel("backward_reduce", REDUCE, Workgroup::PerItem),
    kernel(
        "backward_reduce_relu",
        &[
            "input",
            "save_mean",
            "save_invstd",
            "grad_output",
            "grad_gamma",
            "grad_beta",
            "forward_output",
            "grad_input",
        ],
        Workgroup::PerItem,
    ),
    kernel(
        "backward_reduce_add_relu",
        &[
            "input",
            "save_mean",
            "save_invstd",
            "grad_output",
            "grad_gamma",
            "grad_beta",
            "grad_residual",
            "forward_output",
        ],
        Workgroup::PerItem,
    ),
    kernel(
        "backward_apply",
        &[
            "input",
            "gamma",
            "save_mean",
            "save_invstd",
            "grad_output",
            "grad_input",
            "grad_gamma",
            "grad_beta",
        ],
        ELEMENTWISE,
    ),
    kernel(
        "backward_apply_relu",
        &[
            "input",
            "gamma",
            "save_mean",
            "save_invstd",
            "grad_input",
            "grad_gamma",
            "grad_beta",
        ],
        ELEMENTWISE,
    ),
    kernel(
        "backward_apply_add_relu",
        &[
            "input",
            "gamma",
            "save_mean",
            "save_invstd",
            "grad_residual",
            "grad_input",
            "grad_gamma",
            "grad_beta",
        ],
        ELEMENTWISE,
    ),
];

/// The tensors of one batch-norm layer: its input, parameters, running stats
/// and the per-channel statistics saved by forward for backward.
pub struct BnTensors<'a> {
    pub x: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub save_mean: &'a Tensor,
    pub save_invstd: &'a Tensor,
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
    /// How the per-channel reductions (forward_stats, backward_reduce*) end.
    pub reduction: Reduction,
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
        })
    }

    fn params(&self) -> Result<BnParams, GpuError> {
        let u = |what, v| super::u32_of(&self.label, what, v);
        u("elements", self.shape.numel())?;
        Ok(BnParams {
            batch: u("batch", self.shape.batch)?,
            channels: u("channels", self.shape.channels)?,
            hw: u("hw", self.shape.hw)?,
            _pad0: 0,
            eps: self.eps,
            momentum: self.momentum,
            _pad1: 0,
            _pad2: 0,
        })
    }

    /// The precision of the activations (x and y agree), once every tensor
    /// has its shape.
    fn check(&self, t: &BnTensors<'_>, y: &Tensor) -> Result<Precision, GpuError> {
        let s = &self.shape;
        t.x.expect_activation(&self.label, s.batch, s.channels, s.hw)?;
        let precision = Precision::of(&self.label, &[t.x, y])?;
        y.expect(&self.label, t.x.shape(), precision.dtype())?;
        for c in [
            t.gamma,
            t.beta,
            t.running_mean,
            t.running_var,
            t.save_mean,
            t.save_invstd,
        ] {
            c.expect(&self.label, &[s.channels], DType::F32)?;
        }
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
        // Only the channel reductions differ between the modules.
        let reduces = entry == "forward_stats" || entry.starts_with("backward_reduce");
        let (shader, label) = if reduces {
            let kernel = self.reduction;
            let label = format!("{} {entry} ({})", self.label, kernel.name());
            (kernel.batchnorm_module(), label)
        } else {
            ("batchnorm", format!("{} {entry}", self.label))
        };
        DispatchSpec {
            label,
            shader,
            kernel: Kernel::find(KERNELS, shader, entry)?,
            variant: None,
            precision,
            constants: &[
                ("WG_ELEMENTWISE", ELEMENTWISE_WG),
                ("WG_CHANNELS", CHANNELS_WG),
            ],
            params: &params,
            bindings,
            workgroups,
        }
        .build(ctx)
    }

    fn apply_dispatch(
        &self,
        ctx: &GpuContext,
        t: &BnTensors<'_>,
        residual: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<Dispatch, GpuError> {
        let b = Binding::tensor;
        let mut bindings = vec![
            b("input", t.x),
            b("gamma", t.gamma),
            b("beta", t.beta),
            b("output", y),
            b("save_mean", t.save_mean),
            b("save_invstd", t.save_invstd),
        ];
        let entry = match (self.fusion, residual) {
            (Fusion::None, None) => "forward_apply",
            (Fusion::Relu, None) => "forward_apply_relu",
            (Fusion::AddRelu, Some(r)) => {
                r.expect(&self.label, y.shape(), y.dtype())?;
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
        self.build(
            ctx,
            entry,
            bindings,
            elementwise_grid(ctx, self.shape.numel(), ELEMENTWISE_WG),
            Precision::of(&self.label, &[t.x])?,
        )
    }

    /// Training forward: batch statistics (saved, and folded into the running
    /// stats), then normalize with the fused activation.
    pub fn forward_train(
        &self,
        ctx: &GpuContext,
        t: &BnTensors<'_>,
        residual: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let precision = self.check(t, y)?;
        let b = Binding::tensor;
        let stats_bindings = vec![
            b("input", t.x),
            b("save_mean", t.save_mean),
            b("save_invstd", t.save_invstd),
            b("running_mean", t.running_mean),
            b("running_var", t.running_var),
        ];
        let stats = self.build(
            ctx,
            "forward_stats",
            stats_bindings,
            [self.shape.channels as u32, 1, 1],
            precision,
        )?;
        Ok(vec![stats, self.apply_dispatch(ctx, t, residual, y)?])
    }

    /// Eval forward: normalize with the running statistics.
    pub fn forward_eval(
        &self,
        ctx: &GpuContext,
        t: &BnTensors<'_>,
        residual: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let precision = self.check(t, y)?;
        let b = Binding::tensor;
        let stats_bindings = vec![
            b("save_mean", t.save_mean),
            b("save_invstd", t.save_invstd),
            b("running_mean", t.running_mean),
            b("running_var", t.running_var),
        ];
        let stats = self.build(
            ctx,
            "eval_stats",
            stats_bindings,
            [
                self.shape.channels.div_ceil(CHANNELS_WG as usize) as u32,
                1,
                1,
            ],
            precision,
        )?;
        Ok(vec![stats, self.apply_dispatch(ctx, t, residual, y)?])
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
        let mut reduce = vec![
            b("input", t.x),
            b("save_mean", t.save_mean),
            b("save_invstd", t.save_invstd),
            b("grad_output", g.dy),
            b("grad_gamma", g.dgamma),
            b("grad_beta", g.dbeta),
        ];
        let mut apply = vec![
            b("input", t.x),
            b("gamma", t.gamma),
            b("save_mean", t.save_mean),
            b("save_invstd", t.save_invstd),
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
            self.build(
                ctx,
                reduce_entry,
                reduce,
                [s.channels as u32, 1, 1],
                precision,
            )?,
            self.build(
                ctx,
                apply_entry,
                apply,
                elementwise_grid(ctx, s.numel(), ELEMENTWISE_WG),
                precision,
            )?,
        ])
    }
}
