//! `bench ops`: GPU time and GFLOP/s of every op at the shapes of ResNet-20,
//! next to this project's GEMM at the same M x N x K.

use crate::gpu::{DType, Dispatch, GpuContext, GpuError, OpTiming, Tensor, time_dispatches};
use crate::ops::batchnorm::{BatchNorm, BnGradTensors, BnTensors};
use crate::ops::conv::{Conv2d, ConvPass, ConvTuning};
use crate::ops::partition::MIN_PART_VALUES;
use crate::ops::tune::{choose_conv_kernels, norm_target_workgroups};
use crate::ops::{elementwise, gemm, shortcut::Shortcut};
use crate::shapes::Fusion;
use crate::shapes::{BatchNormShape, Conv2dShape, ShortcutShape};

#[derive(clap::Args, Clone, Debug)]
pub struct BenchOpsOptions {
    /// Batch size of the ResNet-20 shapes.
    #[arg(long, default_value_t = 128, value_parser = crate::cli::bounded(1, MAX_OPS_BATCH))]
    pub batch: usize,
    /// Timed repetitions per op (after one warm-up run).
    #[arg(long, default_value_t = 3, value_parser = crate::cli::whole_in::<u32>(1, 1000))]
    pub reps: u32,
    /// Size of the square reference GEMM (0 skips it).
    #[arg(long, default_value_t = 1024, value_parser = crate::cli::bounded(0, MAX_GEMM_SIZE))]
    pub gemm_size: usize,
    /// Conv/GEMM workgroup width along N (output pixels); default: the built-in tuning.
    #[arg(long, value_parser = crate::cli::whole_in::<u32>(1, 256))]
    pub wg_n: Option<u32>,
    /// Conv/GEMM workgroup height along M (channels); default: the built-in tuning.
    #[arg(long, value_parser = crate::cli::whole_in::<u32>(1, 256))]
    pub wg_m: Option<u32>,
}

/// The largest batch of the op shapes (a ResNet-20 activation at 1024 is
/// 64 MiB) and reference GEMM (three 8192-square f32 matrices are 768 MiB).
pub const MAX_OPS_BATCH: usize = 1024;
pub const MAX_GEMM_SIZE: usize = 8192;

impl BenchOpsOptions {
    fn tuning(&self) -> ConvTuning {
        let d = ConvTuning::default();
        ConvTuning {
            wg_n: self.wg_n.unwrap_or(d.wg_n),
            wg_m: self.wg_m.unwrap_or(d.wg_m),
            ..d
        }
    }
}

struct Row {
    op: String,
    shape: String,
    timing: OpTiming,
    flops: Option<f64>,
    gemm_gflops: Option<f64>,
}

/// Tensors filled with a fixed pattern, so timings never see denormals or NaN.
fn filled(ctx: &GpuContext, label: &str, shape: &[usize]) -> Result<Tensor, GpuError> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    Tensor::from_f32(ctx, label, shape, &data)
}

fn gflops(flops: f64, t: &OpTiming) -> f64 {
    flops / t.seconds / 1e9
}

/// Columns of the yardstick GEMM beyond which its rate no longer changes; capping
/// N keeps its [K, N] operand within storage-binding limits at batch 128.
const GEMM_MAX_N: usize = 16384;

/// Which of the project's GEMM kernels to time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum GemmVersion {
    /// v1: scalar loads, any shape.
    Scalar,
    /// v2: vec4 loads; K and N multiples of 4.
    Vec4,
    /// v3: 64x64 tiles staged through workgroup memory.
    Tiled,
    /// The fastest of v2 (where the shape allows it, else v1) and v3: the
    /// yardstick for the convs.
    Best,
}

/// GFLOP/s of the project's GEMM for an m x min(n, GEMM_MAX_N) x k problem.
pub fn gemm_rate(
    ctx: &GpuContext,
    tuning: &ConvTuning,
    [m, n, k]: [usize; 3],
    version: GemmVersion,
    reps: u32,
) -> Result<f64, GpuError> {
    if version == GemmVersion::Best {
        let best = [GemmVersion::Vec4, GemmVersion::Tiled]
            .into_iter()
            .map(|v| gemm_rate(ctx, tuning, [m, n, k], v, reps))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(best.into_iter().fold(0.0, f64::max));
    }
    let n = n.min(GEMM_MAX_N);
    let a = filled(ctx, "gemm a", &[m, k])?;
    let b = filled(ctx, "gemm b", &[k, n])?;
    let c = Tensor::zeros(ctx, "gemm c", &[m, n], DType::F32)?;
    let d = match version {
        GemmVersion::Tiled => gemm::matmul_tiled(ctx, (16, 16), &a, &b, &c)?,
        GemmVersion::Vec4 if k % 4 == 0 && n % 4 == 0 => {
            gemm::matmul_vec4(ctx, tuning, &a, &b, &c)?
        }
        _ => gemm::matmul(ctx, tuning, &a, &b, &c)?,
    };
    let t = time_dispatches(ctx, &[&d], reps)?;
    Ok(gflops(2.0 * (m * n * k) as f64, &t))
}

/// The distinct conv shapes of CIFAR ResNet-20 (3x3, pad 1).
fn resnet20_convs(batch: usize) -> Vec<(&'static str, Conv2dShape)> {
    vec![
        (
            "stem 3->16 @32",
            Conv2dShape::square(batch, 3, (32, 32), 16, 3, 1, 1),
        ),
        (
            "stage1 16->16 @32",
            Conv2dShape::square(batch, 16, (32, 32), 16, 3, 1, 1),
        ),
        (
            "stage2 16->32 /2",
            Conv2dShape::square(batch, 16, (32, 32), 32, 3, 2, 1),
        ),
        (
            "stage2 32->32 @16",
            Conv2dShape::square(batch, 32, (16, 16), 32, 3, 1, 1),
        ),
        (
            "stage3 32->64 /2",
            Conv2dShape::square(batch, 32, (16, 16), 64, 3, 2, 1),
        ),
        (
            "stage3 64->64 @8",
            Conv2dShape::square(batch, 64, (8, 8), 64, 3, 1, 1),
        ),
    ]
}

fn bench_conv(
    ctx: &GpuContext,
    name: &str,
    shape: Conv2dShape,
    tuning: &ConvTuning,
    reps: u32,
    rows: &mut Vec<Row>,
) -> Result<(), GpuError> {
    let tuning = *tuning;
    // The kernels training would run here (see --tune).
    let (conv, _) = choose_conv_kernels(ctx, Conv2d::new(name, shape, tuning)?, DType::F32)?;
    let x = filled(ctx, "x", &shape.input_shape())?;
    let w = filled(ctx, "w", &shape.weight_shape())?;
    let y = filled(ctx, "y", &shape.output_shape())?;
    let dx = Tensor::zeros(ctx, "dx", &shape.input_shape(), DType::F32)?;
    let dw = Tensor::zeros(ctx, "dw", &shape.weight_shape(), DType::F32)?;
    let (out_px, in_px) = (
        shape.batch * shape.out_h() * shape.out_w(),
        shape.batch * shape.in_h * shape.in_w,
    );
    let (khw, flops) = (shape.kernel_h * shape.kernel_w, shape.flops());
    let passes: [(ConvPass, Vec<Dispatch>, [usize; 3]); 3] = [
        (
            ConvPass::Forward,
            vec![conv.forward(ctx, &x, &w, &y)?],
            [shape.out_c, out_px, shape.in_c * khw],
        ),
        (
            ConvPass::BackwardInput,
            vec![conv.backward_input(ctx, &y, &w, &dx)?],
            [shape.in_c, in_px, shape.out_c * khw],
        ),
        (
            ConvPass::BackwardWeight,
            conv.backward_weight(ctx, &x, &y, &dw)?,
            [shape.out_c, shape.in_c * khw, out_px],
        ),
    ];
    for (pass, dispatches, [m, n, k]) in passes {
        let op = format!("conv {} {}", pass.name(), conv.kernels.get(pass).name());
        let refs: Vec<&Dispatch> = dispatches.iter().collect();
        let timing = time_dispatches(ctx, &refs, reps)?;
        let gemm = gemm_rate(ctx, &tuning, [m, n, k], GemmVersion::Best, reps)?;
        rows.push(Row {
            op,
            shape: name.into(),
            timing,
            flops: Some(flops),
            gemm_gflops: Some(gemm),
        });
    }
    Ok(())
}

fn bench_batchnorm(
    ctx: &GpuContext,
    batch: usize,
    reps: u32,
    rows: &mut Vec<Row>,
) -> Result<(), GpuError> {
    let s = BatchNormShape {
        batch,
        channels: 16,
        hw: 32 * 32,
    };
    let act = [batch, 16, 32, 32];
    let x = filled(ctx, "x", &act)?;
    let residual = filled(ctx, "residual", &act)?;
    let y = Tensor::zeros(ctx, "y", &act, DType::F32)?;
    let dy = filled(ctx, "dy", &act)?;
    let dx = Tensor::zeros(ctx, "dx", &act, DType::F32)?;
    let dres = Tensor::zeros(ctx, "dres", &act, DType::F32)?;
    let ch = |label| filled(ctx, label, &[16]);
    let (gamma, beta, rm, rv, dg, db) = (
        ch("g")?,
        ch("b")?,
        ch("rm")?,
        ch("rv")?,
        ch("dg")?,
        ch("db")?,
    );
    let mut bn = BatchNorm::new("bn 16@32", s, Fusion::AddRelu)?;
    bn.split(norm_target_workgroups(ctx), MIN_PART_VALUES);
    let stats = Tensor::zeros(ctx, "stats", &[bn.stats_len()], DType::F32)?;
    let t = BnTensors {
        x: &x,
        gamma: &gamma,
        beta: &beta,
        running_mean: &rm,
        running_var: &rv,
        stats: &stats,
    };
    let fwd = bn.forward_train(ctx, &t, Some(&residual), &y)?;
    let g = BnGradTensors {
        dy: &dy,
        dx: &dx,
        dgamma: &dg,
        dbeta: &db,
        dresidual: Some(&dres),
    };
    let bwd = bn.backward(ctx, &t, &y, &g)?;
    let relu = elementwise::relu_forward(ctx, "relu", &x, &y)?;
    let add = elementwise::add(ctx, "add", &x, &residual, &y)?;
    let shape = format!("{batch}x16x32x32");
    for (op, dispatches) in [
        (
            "bn+add+relu forward (train)",
            fwd.iter().collect::<Vec<_>>(),
        ),
        ("bn+add+relu backward", bwd.iter().collect()),
        ("relu forward", vec![&relu]),
        ("add", vec![&add]),
    ] {
        let timing = time_dispatches(ctx, &dispatches, reps)?;
        rows.push(Row {
            op: op.into(),
            shape: shape.clone(),
            timing,
            flops: None,
            gemm_gflops: None,
        });
    }
    let sc = Shortcut::new(
        "shortcut A",
        ShortcutShape {
            batch,
            in_c: 16,
            in_h: 32,
            in_w: 32,
            out_c: 32,
            stride: 2,
        },
    )?;
    let sy = Tensor::zeros(ctx, "sy", &sc.output_shape(), DType::F32)?;
    let d = sc.forward(ctx, &x, &sy)?;
    rows.push(Row {
        op: "shortcut A forward".into(),
        shape,
        timing: time_dispatches(ctx, &[&d], reps)?,
        flops: None,
        gemm_gflops: None,
    });
    Ok(())
}

/// Refuses a --wg-n x --wg-m workgroup the adapter cannot run (lavapipe hung
/// on one, other drivers gave a raw validation dump).
fn check_workgroup(ctx: &GpuContext, tuning: &ConvTuning) -> Result<(), GpuError> {
    let l = &ctx.limits;
    let (n, m) = (tuning.wg_n, tuning.wg_m);
    let fits = n <= l.max_compute_workgroup_size_x
        && m <= l.max_compute_workgroup_size_y
        && n * m <= l.max_compute_invocations_per_workgroup;
    if fits {
        return Ok(());
    }
    Err(GpuError::shape(
        "bench ops",
        format!(
            "--wg-n {n} x --wg-m {m} = {} invocations per workgroup; this adapter allows {} \
             in all, {} along N and {} along M",
            n * m,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_size_x,
            l.max_compute_workgroup_size_y
        ),
    ))
}

/// Runs the benchmark and prints the table.
pub fn bench_ops(ctx: &GpuContext, opt: &BenchOpsOptions) -> Result<(), GpuError> {
    let tuning = opt.tuning();
    check_workgroup(ctx, &tuning)?;
    out!("adapter: {}", ctx.describe());
    out!(
        "conv tiles: 4x4 per invocation, workgroup {}x{} (N x M); batch {}",
        tuning.wg_n,
        tuning.wg_m,
        opt.batch
    );
    let mut rows = Vec::new();
    if opt.gemm_size > 0 {
        let n = opt.gemm_size;
        let flops = 2.0 * (n * n * n) as f64;
        let versions = [
            ("gemm v1 (scalar loads)", GemmVersion::Scalar),
            ("gemm v2 (vec4 loads)", GemmVersion::Vec4),
            ("gemm v3 (tiled 64x64)", GemmVersion::Tiled),
        ];
        for (op, version) in versions {
            if version == GemmVersion::Vec4 && n % 4 != 0 {
                continue;
            }
            let rate = gemm_rate(ctx, &tuning, [n, n, n], version, opt.reps)?;
            let timing = OpTiming {
                seconds: flops / rate / 1e9,
                from_timestamps: ctx.has_timestamps(),
            };
            rows.push(Row {
                op: op.into(),
                shape: format!("{n}x{n}x{n}"),
                timing,
                flops: Some(flops),
                gemm_gflops: None,
            });
        }
    }
    for (name, shape) in resnet20_convs(opt.batch) {
        bench_conv(ctx, name, shape, &tuning, opt.reps, &mut rows)?;
    }
    bench_batchnorm(ctx, opt.batch, opt.reps, &mut rows)?;
    print_table(&rows);
    let source = if rows.iter().all(|r| r.timing.from_timestamps) {
        "GPU timestamp queries"
    } else {
        "wall clock around submit+wait (no usable timestamps)"
    };
    out!(
        "times from {source}; '% gemm' compares with this project's best GEMM (the faster of v2, where K and N allow, and v3) at the same M x N x K (N capped at {GEMM_MAX_N}); conv kernels as training would choose them (--tune)"
    );
    Ok(())
}

fn print_table(rows: &[Row]) {
    out!(
        "{:<36} {:<20} {:>10} {:>9} {:>10} {:>7}",
        "op",
        "shape",
        "ms",
        "GFLOP/s",
        "gemm GF/s",
        "% gemm"
    );
    for r in rows {
        let ms = r.timing.seconds * 1e3;
        let rate = r.flops.map(|f| gflops(f, &r.timing));
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let pct = rate
            .zip(r.gemm_gflops)
            .map_or("-".to_string(), |(a, b)| format!("{:.0}%", 100.0 * a / b));
        out!(
            "{:<36} {:<20} {:>10.3} {:>9} {:>10} {:>7}",
            r.op,
            r.shape,
            ms,
            cell(rate),
            cell(r.gemm_gflops),
            pct
        );
    }
}
