//! Host side of shaders/groupnorm.wgsl: GroupNorm with optional fused ReLU or
//! residual-add + ReLU. It keeps no running statistics, so training and eval
//! run the same dispatches.

use crate::gpu::{
    Binding, DType, Dispatch, DispatchSpec, GpuContext, GpuError, Kernel, Precision, Tensor,
    Workgroup, elementwise_grid,
};
use crate::shapes::{Fusion, GroupNormShape};

/// PyTorch's default.
pub const EPS: f32 = 1e-5;

crate::wgsl_struct! {
    pub struct GnParams {
        batch: u32,
        channels: u32,
        hw: u32,
        groups: u32,
        eps: f32,
        _pad: [u32; 3],
    }
}

const ELEMENTWISE_WG: u32 = 256;

const fn kernel(
    entry: &'static str,
    roles: &'static [&'static str],
    workgroup: Workgroup,
) -> Kernel {
    Kernel {
        modules: &["groupnorm"],
        entry,
        roles,
        workgroup,
    }
}

const ELEMENTWISE: Workgroup = Workgroup::Overrides(&["WG_ELEMENTWISE"]);
const APPLY: &[&str] = &[
    "input",
    "gamma",
    "beta",
    "output",
    "save_mean",
    "save_invstd",
];
const PARAMS: &[&str] = &[
    "input",
    "save_mean",
    "save_invstd",
    "grad_output",
    "grad_gamma",
    "grad_beta",
];
const GROUP: &[&str] = &[
    "input",
    "gamma",
    "save_mean",
    "save_invstd",
    "grad_output",
    "group_grads",
];
const DX: &[&str] = &[
    "input",
    "gamma",
    "save_mean",
    "save_invstd",
    "grad_output",
    "grad_input",
    "group_grads",
];

/// The entry points of shaders/groupnorm.wgsl and what each binds.
pub const KERNELS: &[Kernel] = &[
    kernel(
        "forward_stats",
        &["input", "save_mean", "save_invstd"],
        Workgroup::PerItem,
    ),
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
    kernel("backward_params", PARAMS, Workgroup::PerItem),
    kernel(
        "backward_params_relu",
        &[
            "input",
            "save_mean",
            "save_invstd",
            "grad_output",
            "grad_gamma",
            "grad_beta",
            "forward_output",
        ],
        Workgroup::PerItem,
    ),
    kernel(
        "backward_params_add_relu",
        &[
            "input",
            "save_mean",
            "save_invstd",
            "grad_output",
            "grad_gamma",
            "grad_beta",
            "forward_output",
            "grad_residual",
        ],
        Workgroup::PerItem,
    ),
    kernel("backward_group", GROUP, Workgroup::PerItem),
    kernel(
        "backward_group_relu",
        &[
            "input",
            "gamma",
            "save_mean",
            "save_invstd",
            "grad_output",
            "group_grads",
            "forward_output",
        ],
        Workgroup::PerItem,
    ),
    kernel("backward_apply", DX, ELEMENTWISE),
    kernel(
        "backward_apply_relu",
        &[
            "input",
            "gamma",
            "save_mean",
            "save_invstd",
            "grad_output",
            "grad_input",
            "group_grads",
            "forward_output",
        ],
        ELEMENTWISE,
    ),
];

/// The tensors of one group-norm layer: its input, affine parameters and the
/// per-(sample, group) statistics forward saves for backward.
pub struct GnTensors<'a> {
    pub x: &'a Tensor,
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    /// [batch * groups] each.
    pub save_mean: &'a Tensor,
    pub save_invstd: &'a Tensor,
}

/// Gradient tensors for backward. `dresidual` is written by the AddRelu form;
/// `group_grads` is [2, batch * groups] scratch.
pub struct GnGradTensors<'a> {
    pub dy: &'a Tensor,
    pub dx: &'a Tensor,
    pub dgamma: &'a Tensor,
    pub dbeta: &'a Tensor,
    pub dresidual: Option<&'a Tensor>,
    pub group_grads: &'a Tensor,
}

pub struct GroupNorm {
    pub label: String,
    pub shape: GroupNormShape,
    pub fusion: Fusion,
    pub eps: f32,
}

impl GroupNorm {
    pub fn new(label: &str, shape: GroupNormShape, fusion: Fusion) -> Result<Self, GpuError> {
        shape.validate().map_err(|e| GpuError::shape(label, e))?;
        Ok(GroupNorm {
            label: label.to_string(),
            shape,
            fusion,
            eps: EPS,
        })
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
            _pad: [0; 3],
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
        for k in [t.save_mean, t.save_invstd] {
            k.expect(&self.label, &[s.stats_len()], DType::F32)?;
        }
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
            constants: &[("WG_ELEMENTWISE", ELEMENTWISE_WG)],
            params: &self.params()?,
            bindings,
            workgroups,
        }
        .build(ctx)
    }

    fn elementwise(&self, ctx: &GpuContext) -> [u32; 3] {
        elementwise_grid(ctx, self.shape.numel(), ELEMENTWISE_WG)
    }

    /// Forward (training and eval alike): the statistics of this batch, then
    /// normalize with the fused activation.
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
            vec![
                b("input", t.x),
                b("save_mean", t.save_mean),
                b("save_invstd", t.save_invstd),
            ],
            [self.shape.stats_len() as u32, 1, 1],
        )?;
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
        let apply = self.build(ctx, entry, precision, bindings, self.elementwise(ctx))?;
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
        g.group_grads
            .expect(&self.label, &[2, s.stats_len()], DType::F32)?;
        let b = Binding::tensor;
        let saved = || {
            vec![
                b("input", t.x),
                b("save_mean", t.save_mean),
                b("save_invstd", t.save_invstd),
                b("grad_output", g.dy),
            ]
        };
        let mut params = saved();
        params.extend([b("grad_gamma", g.dgamma), b("grad_beta", g.dbeta)]);
        let mut group = saved();
        group.extend([b("gamma", t.gamma), b("group_grads", g.group_grads)]);
        let mut apply = saved();
        apply.extend([
            b("gamma", t.gamma),
            b("grad_input", g.dx),
            b("group_grads", g.group_grads),
        ]);
        let entries = match (self.fusion, g.dresidual) {
            (Fusion::None, None) => ["backward_params", "backward_group", "backward_apply"],
            (Fusion::Relu, None) => [
                "backward_params_relu",
                "backward_group_relu",
                "backward_apply_relu",
            ],
            (Fusion::AddRelu, Some(dr)) => {
                dr.expect(&self.label, y.shape(), precision.dtype())?;
                params.push(b("grad_residual", dr));
                [
                    "backward_params_add_relu",
                    "backward_group_relu",
                    "backward_apply_relu",
                ]
            }
            _ => {
                return Err(GpuError::shape(
                    &self.label,
                    "a residual gradient is given exactly for the AddRelu form",
                ));
            }
        };
        if self.fusion != Fusion::None {
            for list in [&mut params, &mut group, &mut apply] {
                list.push(b("forward_output", y));
            }
        }
        Ok(vec![
            self.build(
                ctx,
                entries[0],
                precision,
                params,
                [s.channels as u32, 1, 1],
            )?,
            self.build(
                ctx,
                entries[1],
                precision,
                group,
                [s.stats_len() as u32, 1, 1],
            )?,
            self.build(ctx, entries[2], precision, apply, self.elementwise(ctx))?,
        ])
    }
}
