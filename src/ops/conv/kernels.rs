//! The conv kernel candidates: which kernel each pass can run (register-tiled
//! implicit GEMM, 3x3 stride-1 rows, workgroup-tiled) and the tuning of their
//! workgroups; `tune` chooses among them per shape and adapter; and the
//! entry points they run (`KERNELS`, the host/shader contract).

use crate::gpu::{Kernel, Workgroup};

/// Workgroup shape of the implicit-GEMM kernels (each invocation computes a 4x4
/// tile) and how many workgroups the weight gradient aims to occupy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTuning {
    pub wg_n: u32,
    pub wg_m: u32,
    /// backward_weight splits its long K (batch x output pixels) until about this
    /// many workgroups run, so a 16x144 weight gradient still fills a GPU.
    pub target_workgroups: u32,
}

impl Default for ConvTuning {
    fn default() -> Self {
        ConvTuning {
            wg_n: 16,
            wg_m: 4,
            target_workgroups: 256,
        }
    }
}

/// The three passes of a convolution, each served by one of its candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    Forward,
    BackwardInput,
    BackwardWeight,
}

impl ConvPass {
    pub const ALL: [ConvPass; 3] = [
        ConvPass::Forward,
        ConvPass::BackwardInput,
        ConvPass::BackwardWeight,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConvPass::Forward => "forward",
            ConvPass::BackwardInput => "backward_input",
            ConvPass::BackwardWeight => "backward_weight",
        }
    }
}

/// A kernel that can serve a conv pass. Its name is what the tuning cache,
/// dispatch labels, `info` and `bench` show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvKernel {
    /// conv.wgsl's generic implicit GEMM: a 4x4 register tile per invocation,
    /// no workgroup memory (the CPU-adapter shape); any conv.
    RegisterTile,
    /// conv.wgsl's `conv3x3_s1` / `conv3x3_s1_weight`: 8-pixel vec4 rows with
    /// uniform weight loads; 3x3, stride 1, pad 1, width a multiple of 8 (and
    /// at least 8 input channels for the weight gradient).
    Rows8,
    /// conv_tiled.wgsl: a (4 tw_m) x (4 tw_n) output tile per workgroup of
    /// tw_n x tw_m invocations, K staged through workgroup memory; any conv.
    Tiled { tw_m: u32, tw_n: u32 },
    /// conv_coop.wgsl: a 4 CM x 4 CM output tile per workgroup multiplied on
    /// the device's CM x CM f16 cooperative matrices (tensor cores), f32
    /// accumulators; any conv, at f16 on devices that have them.
    Coop,
    /// conv_wide.wgsl: an (8 tw_m) x (8 tw_n) output tile per workgroup of
    /// tw_n x tw_m invocations with 8x8 register micro-tiles, TK = 16,
    /// double-buffered through registers; any conv, on devices with the
    /// workgroup memory it needs (`WIDE_WORKGROUP_BYTES`).
    Wide { tw_m: u32, tw_n: u32 },
}

/// The wide tiles offered (invocations along M, along N): 128x128 and 128x64.
pub const WIDE_SHAPES: [(u32, u32); 2] = [(16, 16), (16, 8)];
/// conv_wide.wgsl's two slices: 16 k-rows of 33 vec4s each.
pub const WIDE_WORKGROUP_BYTES: u32 = 2 * 16 * 33 * 16;

/// The workgroup tiles offered as candidates (invocations along M, along N):
/// 64x64 for wide layers, 32x64 and 16x128 for the 16- and 32-channel layers
/// of CIFAR ResNets, where a 64-row tile would idle most of its rows.
pub const TILED_SHAPES: [(u32, u32); 3] = [(16, 16), (8, 16), (4, 32)];
/// Largest tile side conv_tiled.wgsl's workgroup arrays hold (TILE_CAP).
pub(super) const TILED_CAP: u32 = 128;

impl ConvKernel {
    pub fn name(self) -> String {
        match self {
            ConvKernel::RegisterTile => "regtile".into(),
            ConvKernel::Rows8 => "rows8".into(),
            ConvKernel::Coop => "coop".into(),
            ConvKernel::Wide { tw_m, tw_n } => format!("wide{}x{}", 8 * tw_m, 8 * tw_n),
            ConvKernel::Tiled { tw_m, tw_n } => format!("tiled{}x{}", 4 * tw_m, 4 * tw_n),
        }
    }

    /// The kernel a name (from `name`) stands for, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "regtile" => Some(ConvKernel::RegisterTile),
            "rows8" => Some(ConvKernel::Rows8),
            "coop" => Some(ConvKernel::Coop),
            _ if name.starts_with("wide") => WIDE_SHAPES
                .iter()
                .map(|&(tw_m, tw_n)| ConvKernel::Wide { tw_m, tw_n })
                .find(|k| k.name() == name),
            _ => {
                let (m, n) = name.strip_prefix("tiled")?.split_once('x')?;
                let (bm, bn): (u32, u32) = (m.parse().ok()?, n.parse().ok()?);
                let kernel = ConvKernel::Tiled {
                    tw_m: bm / 4,
                    tw_n: bn / 4,
                };
                (kernel.name() == name && kernel.tile_is_valid()).then_some(kernel)
            }
        }
    }

    /// conv_tiled.wgsl needs whole vec4 columns, tiles within its arrays, and
    /// TW_M % 4 == 0 (every invocation stages one B column at every K step).
    fn tile_is_valid(self) -> bool {
        match self {
            ConvKernel::Tiled { tw_m, tw_n } => {
                tw_m >= 4
                    && tw_m % 4 == 0
                    && tw_n >= 1
                    && 4 * tw_m <= TILED_CAP
                    && 4 * tw_n <= TILED_CAP
                    && tw_m * tw_n <= 256
            }
            _ => true,
        }
    }

    /// The tiled candidate whose tile rows best fit `rows` (M of the pass):
    /// the built-in choice on hardware GPUs.
    pub fn tiled_for_rows(rows: usize) -> Self {
        let (tw_m, tw_n) = match rows {
            0..=16 => TILED_SHAPES[2],
            17..=32 => TILED_SHAPES[1],
            _ => TILED_SHAPES[0],
        };
        ConvKernel::Tiled { tw_m, tw_n }
    }
}

/// The kernel each pass of one conv runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvKernels {
    pub forward: ConvKernel,
    pub backward_input: ConvKernel,
    pub backward_weight: ConvKernel,
}

impl ConvKernels {
    pub fn get(&self, pass: ConvPass) -> ConvKernel {
        match pass {
            ConvPass::Forward => self.forward,
            ConvPass::BackwardInput => self.backward_input,
            ConvPass::BackwardWeight => self.backward_weight,
        }
    }

    pub(super) fn set(&mut self, pass: ConvPass, kernel: ConvKernel) {
        match pass {
            ConvPass::Forward => self.forward = kernel,
            ConvPass::BackwardInput => self.backward_input = kernel,
            ConvPass::BackwardWeight => self.backward_weight = kernel,
        }
    }
}

const fn kernel(
    modules: &'static [&'static str],
    entry: &'static str,
    roles: &'static [&'static str],
    workgroup: &'static [&'static str],
) -> Kernel {
    Kernel {
        modules,
        entry,
        roles,
        workgroup: Workgroup::Overrides(workgroup),
    }
}

const FORWARD: &[&str] = &["input", "weight", "output"];
const BACKWARD_INPUT: &[&str] = &["weight", "grad_output", "grad_input"];
const BACKWARD_WEIGHT: &[&str] = &["input", "grad_output", "grad_weight"];
const REGISTER_TILE: &[&str] = &["WG_N", "WG_M"];
const TILED: &[&str] = &["TW_N", "TW_M"];
const COOP: &[&str] = &["WG"];

/// The entry points of shaders/conv.wgsl and conv_tiled.wgsl and what each
/// binds (the rows8 kernels read their sources as vec4 arrays).
pub const KERNELS: &[Kernel] = &[
    kernel(&["conv"], "forward", FORWARD, REGISTER_TILE),
    kernel(&["conv"], "backward_input", BACKWARD_INPUT, REGISTER_TILE),
    kernel(
        &["conv"],
        "backward_input_strided",
        BACKWARD_INPUT,
        REGISTER_TILE,
    ),
    kernel(&["conv"], "backward_weight", BACKWARD_WEIGHT, REGISTER_TILE),
    kernel(
        &["conv"],
        "reduce_weight_splits",
        &["grad_weight", "weight_partials"],
        &["WG_SPLITS"],
    ),
    kernel(
        &["conv"],
        "conv3x3_s1",
        &["weight", "src4", "dst4"],
        &["SQ_WG"],
    ),
    kernel(
        &["conv"],
        "conv3x3_s1_weight",
        &["src4", "grad4", "grad_weight"],
        &["BW_WG"],
    ),
    kernel(&["conv_tiled"], "forward", FORWARD, TILED),
    kernel(&["conv_tiled"], "backward_input", BACKWARD_INPUT, TILED),
    kernel(&["conv_tiled"], "backward_weight", BACKWARD_WEIGHT, TILED),
    kernel(&["conv_wide"], "forward", FORWARD, TILED),
    kernel(&["conv_wide"], "backward_input", BACKWARD_INPUT, TILED),
    kernel(&["conv_wide"], "backward_weight", BACKWARD_WEIGHT, TILED),
    kernel(&["conv_coop"], "forward", FORWARD, COOP),
    kernel(&["conv_coop"], "backward_input", BACKWARD_INPUT, COOP),
    kernel(&["conv_coop"], "backward_weight", BACKWARD_WEIGHT, COOP),
];
