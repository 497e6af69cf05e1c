//! Every GPU op against the CPU oracle, on shapes chosen to break kernels:
//! batch 1, channel counts that are not multiples of 4 or of the tile, odd and
//! non-square spatial sizes, stride 2 on odd inputs, the 7x7/2 stem, 1x1 projections.

mod common;

use common::*;
use resnet_wgpu::gpu::{DType, Dispatch, Tensor, submit};
use resnet_wgpu::ops::Reduction;
use resnet_wgpu::ops::batchnorm::{BatchNorm, BnGradTensors, BnTensors};
use resnet_wgpu::ops::conv::{Conv2d, ConvKernel, ConvPass, ConvTuning, TILED_SHAPES, WIDE_SHAPES};
use resnet_wgpu::ops::groupnorm::{GnGradTensors, GnTensors, GroupNorm};
use resnet_wgpu::ops::loss::{self, CrossEntropyTensors};
use resnet_wgpu::ops::{
    augment, elementwise, gemm, linear::Linear, optim, pool::Pool, scaler, shortcut::Shortcut,
};
use resnet_wgpu::reference::{self as oracle, widen};
use resnet_wgpu::shapes::Fusion;
use resnet_wgpu::shapes::*;

fn run(dispatches: &[&Dispatch]) {
    submit(ctx(), "test", dispatches);
}

fn conv_case(shape: Conv2dShape, tuning: ConvTuning, seed: u64) {
    check_conv(&Conv2d::new("test conv", shape, tuning).unwrap(), seed);
}

/// `conv` with `kernel` in all three passes.
fn conv_with(shape: Conv2dShape, kernel: ConvKernel) -> Conv2d {
    let mut conv = Conv2d::new("test conv", shape, ConvTuning::default()).unwrap();
    for pass in ConvPass::ALL {
        conv = conv.with_kernel(pass, kernel).unwrap();
    }
    conv
}

/// Every pass of `conv` (with the kernels it has) against the oracle.
fn check_conv(conv: &Conv2d, seed: u64) {
    check_conv_as(conv, seed, DType::F32);
}

/// `check_conv` with activations and weights stored as `dtype`: the oracle
/// starts from the same (rounded) values; an f16 output is within its own
/// rounding (2^-11 relative) of the oracle, the f32 weight gradient as tight
/// as at f32.
fn check_conv_as(conv: &Conv2d, seed: u64, dtype: DType) {
    let shape = conv.shape;
    let (x, xv) = random_tensor_as("x", seed, &shape.input_shape(), dtype);
    let (w, wv) = random_tensor_as("w", seed + 1, &shape.weight_shape(), dtype);
    let (dy, dyv) = random_tensor_as("dy", seed + 2, &shape.output_shape(), dtype);
    let y = zeros_as("y", &shape.output_shape(), dtype);
    let dx = zeros_as("dx", &shape.input_shape(), dtype);
    let dw = zeros("dw", &shape.weight_shape());
    let rtol = if dtype == DType::F16 { 2e-3 } else { 1e-4 };
    // backward_input_onto adds onto what its output holds (a residual
    // block's skip gradient); the same kernel, a uniform flag.
    let (dx_onto, prior) = random_tensor_as("dx onto", seed + 3, &shape.input_shape(), dtype);
    let fwd = conv.forward(ctx(), &x, &w, &y).unwrap();
    let bin = conv.backward_input(ctx(), &dy, &w, &dx).unwrap();
    let onto = conv.backward_input_onto(ctx(), &dy, &w, &dx_onto).unwrap();
    let bw = conv.backward_weight(ctx(), &x, &dy, &dw).unwrap();
    run(&[&fwd, &bin, &onto]);
    run(&bw.iter().collect::<Vec<_>>());
    let (xv, wv, dyv) = (widen(&xv), widen(&wv), widen(&dyv));
    let k = (shape.in_c * shape.kernel_h * shape.kernel_w) as f64;
    let atol = 1e-5 * k.sqrt();
    assert_close(
        &format!("{shape:?} {dtype:?} forward {:?}", conv.kernels.forward),
        &read(&y),
        &oracle::conv::forward(&shape, &xv, &wv),
        rtol,
        atol,
    );
    assert_close(
        &format!(
            "{shape:?} {dtype:?} backward_input {:?}",
            conv.kernels.backward_input
        ),
        &read(&dx),
        &oracle::conv::backward_input(&shape, &dyv, &wv),
        rtol,
        atol,
    );
    let summed: Vec<f64> = oracle::conv::backward_input(&shape, &dyv, &wv)
        .iter()
        .zip(widen(&prior))
        .map(|(d, p)| d + p)
        .collect();
    assert_close(
        &format!(
            "{shape:?} {dtype:?} backward_input_onto {:?}",
            conv.kernels.backward_input
        ),
        &read(&dx_onto),
        &summed,
        rtol,
        atol,
    );
    let k_w = (shape.batch * shape.out_h() * shape.out_w()) as f64;
    assert_close(
        &format!(
            "{shape:?} backward_weight {:?}",
            conv.kernels.backward_weight
        ),
        &read(&dw),
        &oracle::conv::backward_weight(&shape, &xv, &dyv),
        1e-4,
        1e-5 * k_w.sqrt(),
    );
}

#[test]
fn conv_matches_oracle_on_odd_shapes() {
    let t = ConvTuning::default();
    let cases = [
        Conv2dShape::square(1, 3, (7, 5), 5, 3, 1, 1), // batch 1, odd non-square
        Conv2dShape::square(2, 5, (9, 9), 6, 3, 2, 1), // stride 2 on odd input
        Conv2dShape::square(1, 3, (13, 11), 4, 7, 2, 3), // the 7x7/2 stem
        Conv2dShape::square(3, 6, (5, 5), 10, 1, 2, 0), // 1x1/2 projection shortcut
        Conv2dShape::square(2, 17, (8, 8), 9, 3, 1, 1), // channels past one tile
        Conv2dShape {
            batch: 2,
            in_c: 2,
            in_h: 6,
            in_w: 5,
            out_c: 3,
            kernel_h: 1,
            kernel_w: 3,
            stride: 1,
            pad: 1,
        },
    ];
    for (i, shape) in cases.into_iter().enumerate() {
        conv_case(shape, t, 100 + 10 * i as u64);
    }
}

#[test]
fn conv_3x3_stride_1_vec4_kernel_matches_oracle() {
    let cases = [
        Conv2dShape::square(3, 5, (6, 24), 7, 3, 1, 1), // row edges and a middle pair, 7 rows
        Conv2dShape::square(1, 2, (1, 8), 3, 3, 1, 1),  // one pair: both neighbours padding
        Conv2dShape::square(2, 17, (8, 8), 9, 3, 1, 1), // channels past one row block
        Conv2dShape::square(8, 9, (16, 32), 5, 3, 1, 1), // weight grad split over pixels
    ];
    for (i, shape) in cases.into_iter().enumerate() {
        let conv = Conv2d::new("c", shape, ConvTuning::default()).unwrap();
        assert!(conv.uses_square_kernel(), "{shape:?}");
        if i == 3 {
            let (x, dy) = (
                zeros("x", &shape.input_shape()),
                zeros("dy", &shape.output_shape()),
            );
            let dw = zeros("dw", &shape.weight_shape());
            let passes = conv.backward_weight(ctx(), &x, &dy, &dw).unwrap();
            assert!(conv.uses_square_weight_kernel() && conv.weight_grad_splits() > 1);
            assert_eq!(passes.len(), 2, "split and reduce");
        }
        conv_case(shape, ConvTuning::default(), 300 + 10 * i as u64);
    }
    let odd = Conv2d::new(
        "c",
        Conv2dShape::square(1, 2, (4, 6), 3, 3, 1, 1),
        Default::default(),
    );
    assert!(
        !odd.unwrap().uses_square_kernel(),
        "width 6 is not a multiple of 8"
    );
}

#[test]
fn conv_weight_grad_split_reduction_matches_oracle() {
    let shape = Conv2dShape::square(4, 3, (16, 15), 5, 3, 1, 1);
    let conv = Conv2d::new("split", shape, ConvTuning::default()).unwrap();
    assert!(
        conv.weight_grad_splits() > 1,
        "this case must exercise the split-K path"
    );
    conv_case(shape, ConvTuning::default(), 7);
}

#[test]
fn conv_other_workgroup_shapes_match_oracle() {
    let shape = Conv2dShape::square(2, 7, (9, 6), 11, 3, 2, 1);
    for tuning in [
        ConvTuning {
            wg_n: 8,
            wg_m: 8,
            target_workgroups: 4,
        },
        ConvTuning {
            wg_n: 32,
            wg_m: 2,
            target_workgroups: 1,
        },
    ] {
        conv_case(shape, tuning, 55);
    }
}

#[test]
fn conv_every_candidate_matches_oracle() {
    // A shape every candidate serves (rows8 too: 3x3/1, width 16, 9 input
    // channels), with channel counts and pixels off every tile.
    let shape = Conv2dShape::square(3, 9, (5, 16), 7, 3, 1, 1);
    let conv = Conv2d::new("c", shape, ConvTuning::default()).unwrap();
    for pass in ConvPass::ALL {
        assert_eq!(
            conv.candidates(pass).len(),
            2 + TILED_SHAPES.len(),
            "{pass:?}"
        );
    }
    for (i, kernel) in conv.candidates(ConvPass::Forward).into_iter().enumerate() {
        check_conv(&conv_with(shape, kernel), 500 + 10 * i as u64);
    }
}

/// Mixed precision: every conv candidate with f16 activations and weights
/// (f32 accumulation, f32 weight gradient), once each on small shapes.
#[test]
fn conv_every_candidate_matches_oracle_at_f16() {
    let shape = Conv2dShape::square(3, 9, (5, 16), 7, 3, 1, 1);
    let conv = Conv2d::new("c", shape, ConvTuning::default()).unwrap();
    for (i, kernel) in conv.candidates(ConvPass::Forward).into_iter().enumerate() {
        check_conv_as(&conv_with(shape, kernel), 700 + 10 * i as u64, DType::F16);
    }
    // Stride 2 on an odd input (the strided backward_input kernel), and a
    // split weight-gradient reduction.
    check_conv_as(
        &Conv2d::new(
            "s2",
            Conv2dShape::square(2, 5, (9, 9), 6, 3, 2, 1),
            ConvTuning::default(),
        )
        .unwrap(),
        790,
        DType::F16,
    );
    let split = Conv2d::new(
        "split",
        Conv2dShape::square(4, 3, (16, 15), 5, 3, 1, 1),
        ConvTuning::default(),
    )
    .unwrap();
    assert!(split.weight_grad_splits() > 1);
    check_conv_as(&split, 795, DType::F16);
}

#[test]
fn conv_refuses_mixed_precisions() {
    let shape = Conv2dShape::square(1, 2, (4, 4), 3, 3, 1, 1);
    let conv = Conv2d::new("conv1", shape, ConvTuning::default()).unwrap();
    let x = zeros_as("x", &shape.input_shape(), DType::F16);
    let w = zeros("w", &shape.weight_shape());
    let y = zeros_as("y", &shape.output_shape(), DType::F16);
    let err = conv.forward(ctx(), &x, &w, &y).err().unwrap().to_string();
    assert!(
        err.contains("conv1") && err.contains("all f32 or all f16"),
        "{err}"
    );
}

/// The shapes that break conv kernels, for each GPU-shaped candidate: batch
/// 1 on an odd non-square RGB map, stride 2 on an odd input, the 7x7/2 stem,
/// a 1x1/2 projection (classes without taps), rows past one tile (19 -> 33
/// channels), a non-square kernel (read from the params, not a constant).
fn odd_conv_shapes() -> Vec<Conv2dShape> {
    [
        Conv2dShape::square(1, 3, (7, 5), 5, 3, 1, 1), // batch 1, odd non-square, RGB
        Conv2dShape::square(2, 5, (9, 9), 6, 3, 2, 1), // stride 2 on odd input
        Conv2dShape::square(1, 3, (13, 11), 4, 7, 2, 3), // the 7x7/2 stem
        Conv2dShape::square(3, 6, (5, 5), 10, 1, 2, 0), // 1x1/2 projection: classes without taps
        Conv2dShape::square(2, 19, (6, 5), 33, 3, 1, 1), // rows past one tile
        Conv2dShape {
            batch: 2,
            in_c: 3,
            in_h: 6,
            in_w: 7,
            out_c: 4,
            kernel_h: 3,
            kernel_w: 2,
            stride: 2,
            pad: 1,
        }, // non-square kernel: read from the params, not a constant
    ]
    .to_vec()
}

#[test]
fn conv_tiled_kernels_match_oracle_on_odd_shapes() {
    // The smallest tile (16 rows x 128 columns) on the shapes that break conv
    // kernels; the other tiles are covered above.
    let tile = ConvKernel::Tiled {
        tw_m: TILED_SHAPES[2].0,
        tw_n: TILED_SHAPES[2].1,
    };
    for (i, shape) in odd_conv_shapes().into_iter().enumerate() {
        check_conv(&conv_with(shape, tile), 600 + 10 * i as u64);
    }
    // A long K: the weight gradient splits it over workgroups.
    let split = conv_with(Conv2dShape::square(8, 5, (16, 17), 6, 3, 1, 1), tile);
    assert!(split.weight_grad_splits() > 1);
    check_conv(&split, 700);
}

/// The 64x64 and 32x64 tiles (what a GPU picks for wide layers) on a shape
/// with several tiles along M (130 output channels; 70 input channels for the
/// input gradient) and along N (198 output pixels; 630 weight columns),
/// ragged at the far edge of both: the odd-shape test above has one tile
/// along M.
#[test]
fn conv_large_tiles_match_oracle_across_several_ragged_tiles() {
    for (i, &(tw_m, tw_n)) in TILED_SHAPES[..2].iter().enumerate() {
        let conv = conv_with(SEVERAL_TILES, ConvKernel::Tiled { tw_m, tw_n });
        assert!(4 * tw_m < 130 && 130 % (4 * tw_m) != 0, "ragged along M");
        check_conv(&conv, 900 + 10 * i as u64);
    }
}

/// The f16 tiled module on the same shape, with the 64x64 tile.
#[test]
fn conv_large_tiles_match_oracle_across_several_ragged_tiles_at_f16() {
    let (tw_m, tw_n) = TILED_SHAPES[0];
    let conv = conv_with(SEVERAL_TILES, ConvKernel::Tiled { tw_m, tw_n });
    check_conv_as(&conv, 950, DType::F16);
}

/// The cooperative-matrix kernel (f16 operands, f32 accumulators) in all
/// three passes on the shapes that break conv kernels: batch 1, odd and
/// non-square maps, stride 2, the 7x7/2 stem, 1x1/2 projections, channels
/// that are no multiple of 8 or 16, a non-square kernel, several ragged tiles
/// along M and N, and a weight gradient split over K. The bounds are f16's
/// (`check_conv_as`): the operands are the f16 values the oracle also starts
/// from, products of two f16 are exact in f32 and the sums are f32, so the
/// only error beyond f32's is the output's one rounding to f16 (2^-11); the
/// f32 weight gradient keeps the f32 bound. On an adapter without
/// cooperative matrices the kernel must not be offered, and asking for it
/// must be refused by name.
#[test]
fn conv_coop_kernels_match_oracle_on_odd_shapes() {
    let mut shapes = odd_conv_shapes();
    shapes.push(SEVERAL_TILES);
    let offered = conv_with(shapes[0], ConvKernel::RegisterTile).candidates_on(
        ctx(),
        DType::F16,
        ConvPass::Forward,
    );
    if ctx().coop.is_none() {
        assert!(!offered.contains(&ConvKernel::Coop), "{offered:?}");
        let conv = conv_with(shapes[0], ConvKernel::Coop);
        let (x, _) = random_tensor_as("x", 1, &shapes[0].input_shape(), DType::F16);
        let w = zeros_as("w", &shapes[0].weight_shape(), DType::F16);
        let y = zeros_as("y", &shapes[0].output_shape(), DType::F16);
        let err = conv.forward(ctx(), &x, &w, &y).err().unwrap().to_string();
        assert!(err.contains("cooperative matrices"), "{err}");
        return;
    }
    assert!(offered.contains(&ConvKernel::Coop), "{offered:?}");
    // Not offered at f32: f16 operands would lose f32's precision.
    let at_f32 = conv_with(shapes[0], ConvKernel::RegisterTile).candidates_on(
        ctx(),
        DType::F32,
        ConvPass::Forward,
    );
    assert!(!at_f32.contains(&ConvKernel::Coop), "{at_f32:?}");
    for (i, shape) in shapes.into_iter().enumerate() {
        check_conv_as(
            &conv_with(shape, ConvKernel::Coop),
            1200 + 10 * i as u64,
            DType::F16,
        );
    }
    let split = conv_with(
        Conv2dShape::square(8, 5, (16, 17), 6, 3, 1, 1),
        ConvKernel::Coop,
    );
    assert!(split.weight_grad_splits() > 1);
    check_conv_as(&split, 1300, DType::F16);
}

/// The wide tiles (128x128 and 128x64, 8x8 micro-tiles, TK = 16, register
/// double buffering) on the shapes that break conv kernels, across two
/// ragged row blocks (130 output channels) and several column blocks, with a
/// split weight gradient (f16 in the next test). On a device whose
/// workgroup memory cannot hold them they are not offered, and asking for
/// one is refused by name.
#[test]
fn conv_wide_kernels_match_oracle_on_odd_shapes() {
    let wide = |(tw_m, tw_n): (u32, u32)| ConvKernel::Wide { tw_m, tw_n };
    let offered = conv_with(SEVERAL_TILES, ConvKernel::RegisterTile).candidates_on(
        ctx(),
        DType::F32,
        ConvPass::Forward,
    );
    if ctx().limits.max_compute_workgroup_storage_size
        < resnet_wgpu::ops::conv::WIDE_WORKGROUP_BYTES
    {
        assert!(
            !offered.iter().any(|k| matches!(k, ConvKernel::Wide { .. })),
            "{offered:?}"
        );
        let conv = conv_with(SEVERAL_TILES, wide(WIDE_SHAPES[0]));
        let x = zeros("x", &SEVERAL_TILES.input_shape());
        let w = zeros("w", &SEVERAL_TILES.weight_shape());
        let y = zeros("y", &SEVERAL_TILES.output_shape());
        let err = conv.forward(ctx(), &x, &w, &y).err().unwrap().to_string();
        assert!(err.contains("workgroup memory"), "{err}");
        return;
    }
    for shape in WIDE_SHAPES {
        assert!(offered.contains(&wide(shape)), "{offered:?}");
    }
    let mut shapes = odd_conv_shapes();
    shapes.push(SEVERAL_TILES);
    for (i, shape) in shapes.into_iter().enumerate() {
        for (j, tile) in WIDE_SHAPES.into_iter().enumerate() {
            check_conv(
                &conv_with(shape, wide(tile)),
                1500 + 10 * i as u64 + j as u64,
            );
        }
    }
    let split = conv_with(
        Conv2dShape::square(8, 5, (16, 17), 6, 3, 1, 1),
        wide(WIDE_SHAPES[1]),
    );
    assert!(split.weight_grad_splits() > 1);
    check_conv(&split, 1600);
    let mut folded = conv_with(SEVERAL_TILES, wide(WIDE_SHAPES[1]));
    folded.grid_limit = Some(2);
    check_conv(&folded, 1620);
}

/// The 128x128 wide tile with f16 storage, on several ragged tiles (needs
/// shader-f16: selected out by name on SwiftShader).
#[test]
fn conv_wide_kernels_match_oracle_at_f16() {
    let (tw_m, tw_n) = WIDE_SHAPES[0];
    let wide = ConvKernel::Wide { tw_m, tw_n };
    let limit = ctx().limits.max_compute_workgroup_storage_size;
    assert!(
        limit >= resnet_wgpu::ops::conv::WIDE_WORKGROUP_BYTES,
        "{limit} bytes of workgroup memory: the wide tiles are not offered here"
    );
    check_conv_as(&conv_with(SEVERAL_TILES, wide), 1610, DType::F16);
}

/// Grids whose column blocks pass the per-dimension limit are folded into y
/// (what lets ResNet-50's stem at 224 plan at batch 512 on a GPU's 65,535):
/// with an artificial limit of 2 workgroups, every output-tiled kernel still
/// matches the oracle on a shape with 4-10 column blocks per pass.
#[test]
fn conv_grids_folded_past_the_workgroup_limit_match_oracle() {
    let mut kernels = vec![ConvKernel::RegisterTile];
    kernels.extend(
        TILED_SHAPES
            .iter()
            .map(|&(tw_m, tw_n)| ConvKernel::Tiled { tw_m, tw_n }),
    );
    for (i, kernel) in kernels.into_iter().enumerate() {
        let mut conv = conv_with(SEVERAL_TILES, kernel);
        conv.grid_limit = Some(2);
        check_conv(&conv, 1400 + 10 * i as u64);
    }
    if ctx().coop.is_some() {
        let mut conv = conv_with(SEVERAL_TILES, ConvKernel::Coop);
        conv.grid_limit = Some(2);
        check_conv_as(&conv, 1450, DType::F16);
    }
    // A stride-2 shape: backward_input_strided and the pixel classes.
    let mut conv = conv_with(
        Conv2dShape::square(3, 5, (17, 15), 7, 3, 2, 1),
        ConvKernel::RegisterTile,
    );
    conv.grid_limit = Some(1);
    check_conv(&conv, 1460);
}

const SEVERAL_TILES: Conv2dShape = Conv2dShape {
    batch: 2,
    in_c: 70,
    in_h: 9,
    in_w: 11,
    out_c: 130,
    kernel_h: 3,
    kernel_w: 3,
    stride: 1,
    pad: 1,
};

#[test]
fn tuning_measures_once_then_reuses_the_cached_choice() {
    use resnet_wgpu::gpu::{ChoiceSource, KernelChoices, TunePolicy};
    use resnet_wgpu::ops::tune::{choose_conv_kernels_in, conv_key};
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-tune-{}", std::process::id()));
    let path = dir.join("kernel-choices.json");
    let _ = std::fs::remove_dir_all(&dir);
    let info = &ctx().adapter_info;
    // The candidate test's shape, so its pipelines are compiled once per process.
    let shape = Conv2dShape::square(3, 9, (5, 16), 7, 3, 1, 1);
    let conv = || Conv2d::new("tuned", shape, ConvTuning::default()).unwrap();

    let mut choices = KernelChoices::load_from(info, Some(path.clone()));
    choices.policy = TunePolicy::All;
    let (measured, sources) =
        choose_conv_kernels_in(ctx(), &mut choices, conv(), DType::F32).unwrap();
    assert_eq!(sources, [ChoiceSource::Measured; 3]);
    choices.save().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for pass in ConvPass::ALL {
        assert!(
            text.contains(&conv_key(pass, &conv(), DType::F32)),
            "{text}"
        );
        assert!(text.contains(&measured.kernels.get(pass).name()), "{text}");
    }

    // A new process (here: new choices from the same file) runs what was measured.
    let mut cached = KernelChoices::load_from(info, Some(path.clone()));
    cached.policy = TunePolicy::Cached;
    let (again, sources) = choose_conv_kernels_in(ctx(), &mut cached, conv(), DType::F32).unwrap();
    assert_eq!(sources, [ChoiceSource::Cached; 3]);
    assert_eq!(again.kernels, measured.kernels);
    check_conv(&again, 800);
    // Choices are kept per activation type: f16 is not answered by f32's.
    let (_, sources) = choose_conv_kernels_in(ctx(), &mut cached, conv(), DType::F16).unwrap();
    assert_eq!(sources, [ChoiceSource::BuiltIn; 3]);
    // The key names the precision, the workgroup tuning and the shader
    // sources' hash (a code change measures again).
    let key = conv_key(ConvPass::Forward, &conv(), DType::F16);
    assert!(key.contains(" f16 ") && key.contains(" wg16x4/"), "{key}");
    assert!(
        key.ends_with(&format!("src{}", resnet_wgpu::gpu::sources_hash())),
        "{key}"
    );
    let other_tuning = Conv2d::new(
        "tuned",
        shape,
        ConvTuning {
            wg_n: 8,
            ..ConvTuning::default()
        },
    )
    .unwrap();
    assert_ne!(conv_key(ConvPass::Forward, &other_tuning, DType::F16), key);

    // Off ignores the cache; Auto on a CPU adapter never measures (on a GPU
    // it does); a policy that never measures takes the built-in choice of
    // this adapter's kind, and Gpu a GPU's on any adapter.
    cached.policy = TunePolicy::Off;
    let (_, sources) = choose_conv_kernels_in(ctx(), &mut cached, conv(), DType::F32).unwrap();
    assert_eq!(sources, [ChoiceSource::BuiltIn; 3]);
    let mut fresh = KernelChoices::in_memory(info);
    assert!(!fresh.should_measure(true) && fresh.should_measure(false));
    fresh.policy = TunePolicy::Cached;
    let (builtin, _) = choose_conv_kernels_in(ctx(), &mut fresh, conv(), DType::F32).unwrap();
    assert_eq!(
        builtin.kernels.forward,
        conv().builtin_kernel(ConvPass::Forward, ctx().is_software())
    );
    fresh.policy = TunePolicy::Gpu;
    let (gpu, sources) = choose_conv_kernels_in(ctx(), &mut fresh, conv(), DType::F32).unwrap();
    assert_eq!(sources, [ChoiceSource::BuiltIn; 3]);
    assert_eq!(
        gpu.kernels.forward,
        conv().builtin_kernel_on(ctx(), DType::F32, ConvPass::Forward, false)
    );
    assert!(matches!(gpu.kernels.forward, ConvKernel::Tiled { .. }));

    // A damaged cache file is no cache, not an error; an unknown kernel name in
    // it is ignored.
    std::fs::write(&path, "{ not json").unwrap();
    assert!(KernelChoices::load_from(info, Some(path.clone())).is_empty());
    std::fs::write(
        &path,
        text.replace(&measured.kernels.forward.name(), "warp9"),
    )
    .unwrap();
    let mut odd = KernelChoices::load_from(info, Some(path.clone()));
    odd.policy = TunePolicy::Cached;
    let (_, sources) = choose_conv_kernels_in(ctx(), &mut odd, conv(), DType::F32).unwrap();
    assert_eq!(sources[0], ChoiceSource::BuiltIn);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn conv_kernel_names_round_trip_and_bad_ones_are_refused() {
    let shape = Conv2dShape::square(1, 3, (5, 5), 4, 3, 2, 1);
    let conv = Conv2d::new("named", shape, ConvTuning::default()).unwrap();
    for kernel in conv.candidates(ConvPass::Forward) {
        assert_eq!(ConvKernel::from_name(&kernel.name()), Some(kernel));
    }
    for bad in [
        "tiled65x64",
        "tiled64x",
        "tiled8x64",
        "tiled512x4",
        "fast",
        "",
    ] {
        assert_eq!(ConvKernel::from_name(bad), None, "{bad}");
    }
    // rows8 needs 3x3/1 on widths that are multiples of 8: not this stride-2 conv.
    let err = conv
        .with_kernel(ConvPass::Forward, ConvKernel::Rows8)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("named") && err.contains("rows8"), "{err}");
}

#[test]
fn conv_rejects_mismatched_tensors() {
    let shape = Conv2dShape::square(1, 3, (5, 5), 4, 3, 1, 1);
    let conv = Conv2d::new("conv3", shape, ConvTuning::default()).unwrap();
    let x = zeros("x", &[1, 3, 5, 6]);
    let w = zeros("w", &shape.weight_shape());
    let y = zeros("y", &shape.output_shape());
    let err = conv
        .forward(ctx(), &x, &w, &y)
        .err()
        .expect("wrong input shape must be refused")
        .to_string();
    assert!(err.contains("conv3") && err.contains("'x'"), "{err}");
}

struct BnCase {
    shape: BatchNormShape,
    fusion: Fusion,
    seed: u64,
    reduction: Reduction,
    /// `BatchNorm::split`'s (target workgroups, fewest values a part);
    /// None keeps one part per channel.
    split: Option<(usize, usize)>,
    /// x = offset + spread * U(-1, 1).
    offset: f32,
    spread: f32,
}

impl BnCase {
    fn new(shape: BatchNormShape, fusion: Fusion, seed: u64, reduction: Reduction) -> Self {
        BnCase {
            shape,
            fusion,
            seed,
            reduction,
            split: None,
            offset: 0.0,
            spread: 1.0,
        }
    }
}

fn bn_case(case: BnCase) {
    bn_case_as(case, DType::F32);
}

/// `bn_case` with activations and their gradients stored as `dtype` (an f16
/// output within its rounding of the oracle; statistics and parameter
/// gradients f32 as tight as at f32).
fn bn_case_as(case: BnCase, dtype: DType) {
    let s = case.shape;
    let act = [s.batch, s.channels, s.hw];
    let c = [s.channels];
    let x0: Vec<f32> = random(case.seed, s.numel())
        .iter()
        .map(|v| case.offset + case.spread * v)
        .collect();
    let xv = stored_as(&x0, dtype);
    let x = Tensor::from_f32_as(ctx(), "x", &act, &xv, dtype).unwrap();
    let (res, resv) = random_tensor_as("residual", case.seed + 1, &act, dtype);
    let (dy, dyv) = random_tensor_as("dy", case.seed + 2, &act, dtype);
    let (rtol, atol) = if dtype == DType::F16 {
        (2e-3, 1e-3)
    } else {
        (1e-4, 1e-5)
    };
    let (gamma, gv) = random_tensor("gamma", case.seed + 3, &c);
    let (beta, bv) = random_tensor("beta", case.seed + 4, &c);
    let rm0: Vec<f32> = random(case.seed + 5, s.channels);
    let rv0: Vec<f32> = random(case.seed + 6, s.channels)
        .iter()
        .map(|v| v.abs() + 0.5)
        .collect();
    let (rm, rv) = (tensor("rm", &c, &rm0), tensor("rv", &c, &rv0));
    let mut bn = BatchNorm::new("bn", s, case.fusion).unwrap();
    bn.reduction = case.reduction;
    if let Some((target, min_part)) = case.split {
        bn.split(target, min_part);
    }
    let stats_t = zeros("stats", &[bn.stats_len()]);
    let (y, dx, dres, dg, db) = (
        zeros_as("y", &act, dtype),
        zeros_as("dx", &act, dtype),
        zeros_as("dres", &act, dtype),
        zeros("dgamma", &c),
        zeros("dbeta", &c),
    );
    let t = BnTensors {
        x: &x,
        gamma: &gamma,
        beta: &beta,
        running_mean: &rm,
        running_var: &rv,
        stats: &stats_t,
    };
    let add = case.fusion == Fusion::AddRelu;
    let fwd = bn
        .forward_train(ctx(), &t, add.then_some(&res), &y)
        .unwrap();
    let g = BnGradTensors {
        dy: &dy,
        dx: &dx,
        dgamma: &dg,
        dbeta: &db,
        dresidual: add.then_some(&dres),
    };
    let bwd = bn.backward(ctx(), &t, &y, &g).unwrap();
    run(&fwd.iter().chain(&bwd).collect::<Vec<_>>());

    let (xv, gv, bv) = (widen(&xv), widen(&gv), widen(&bv));
    let stats = oracle::batchnorm::batch_stats(&s, &xv, 1e-5);
    let resv = widen(&resv);
    let yv = oracle::batchnorm::apply(
        &s,
        &xv,
        &stats,
        &gv,
        &bv,
        case.fusion,
        add.then_some(&resv[..]),
    );
    let what = format!(
        "{:?} {:?} {dtype:?} {:?} x = {} + {} U",
        s, case.fusion, bn.partition, case.offset, case.spread
    );
    assert_close(&format!("{what} y"), &read(&y), &yv, rtol, atol);
    let saved = read(&stats_t);
    let (mean, invstd) = saved[..2 * s.channels].split_at(s.channels);
    assert_close(&format!("{what} mean"), mean, &stats.mean, 1e-5, 1e-6);
    assert_close(&format!("{what} invstd"), invstd, &stats.invstd, 1e-4, 1e-6);
    let (mut rmv, mut rvv) = (widen(&rm0), widen(&rv0));
    oracle::batchnorm::update_running(&mut rmv, &mut rvv, &stats, 0.1);
    assert_close(
        &format!("{what} running_mean"),
        &read(&rm),
        &rmv,
        1e-4,
        1e-6,
    );
    assert_close(&format!("{what} running_var"), &read(&rv), &rvv, 1e-4, 1e-6);

    // Backward from the GPU's own forward output, so both see the same ReLU mask.
    let y_gpu = widen(&read(&y));
    let grads =
        oracle::batchnorm::backward(&s, &xv, &stats, &gv, &y_gpu, &widen(&dyv), case.fusion);
    assert_close(
        &format!("{what} dx"),
        &read(&dx),
        &grads.dx,
        rtol.max(1e-3),
        atol,
    );
    assert_close(
        &format!("{what} dgamma"),
        &read(&dg),
        &grads.dgamma,
        1e-4,
        1e-4,
    );
    assert_close(
        &format!("{what} dbeta"),
        &read(&db),
        &grads.dbeta,
        1e-4,
        1e-4,
    );
    if let Some(dr) = grads.dresidual {
        assert_close(&format!("{what} dresidual"), &read(&dres), &dr, 0.0, 0.0);
    }
}

#[test]
fn batchnorm_training_matches_oracle_in_every_fused_form() {
    batchnorm_forms_match_oracle(Reduction::Tree);
}

/// The reduction candidates for adapters with subgroups (lavapipe has them,
/// so CI runs these; an adapter without them fails here rather than skipping).
#[test]
fn subgroup_reductions_match_oracle() {
    assert!(
        Reduction::available(ctx()).contains(&Reduction::Subgroup),
        "this adapter has no SUBGROUP feature: the subgroup candidates cannot be tested"
    );
    batchnorm_forms_match_oracle(Reduction::Subgroup);
    cross_entropy_cases(Reduction::Subgroup);
}

fn batchnorm_forms_match_oracle(reduction: Reduction) {
    let shapes = [
        BatchNormShape {
            batch: 1,
            channels: 3,
            hw: 5 * 7,
        },
        BatchNormShape {
            batch: 3,
            channels: 5,
            hw: 9,
        },
        BatchNormShape {
            batch: 2,
            channels: 6,
            hw: 300,
        }, // more than one workgroup stride
    ];
    for (i, shape) in shapes.into_iter().enumerate() {
        for (j, fusion) in [Fusion::None, Fusion::Relu, Fusion::AddRelu]
            .into_iter()
            .enumerate()
        {
            bn_case(BnCase::new(
                shape,
                fusion,
                1000 + 10 * (3 * i + j) as u64,
                reduction,
            ));
        }
    }
    // Several parts per channel, merged with this reduction.
    let mut split = BnCase::new(shapes[2], Fusion::AddRelu, 1100, reduction);
    split.split = Some((60, 50));
    bn_case(split);
}

/// The two-level reductions on odd shapes, split into many parts (whole
/// samples, and chunks of a plane where samples run out): one sample, 1x1
/// maps (2 samples, the fewest batch norm accepts), channel counts that
/// divide nothing, a million values per channel, and a large mean with a
/// small spread (1e4 + 1e-2 U(-1, 1): E[x^2] - E[x]^2 loses every digit in
/// f32 there); f16 in `norm_parts_match_oracle_at_f16`.
#[test]
fn batchnorm_parts_match_oracle_on_odd_shapes() {
    let shape = |batch, channels, hw| BatchNormShape {
        batch,
        channels,
        hw,
    };
    let cases = [
        // (shape, target workgroups, fewest values a part)
        (shape(1, 3, 5 * 7), 64, 4),  // one sample: chunks of its plane
        (shape(2, 7, 1), 64, 1),      // 1x1 maps: a part per value
        (shape(5, 13, 9), 100, 7),    // parts of whole samples, uneven
        (shape(3, 2, 301), 2000, 40), // both: samples and chunks
        (shape(1, 2, 1 << 20), 2048, 1), // a million values a channel, 1024 parts
    ];
    for (i, (s, target, min_part)) in cases.into_iter().enumerate() {
        let mut case = BnCase::new(s, Fusion::AddRelu, 7000 + 10 * i as u64, Reduction::Tree);
        case.split = Some((target, min_part));
        bn_case(case);
    }
    for fusion in [Fusion::None, Fusion::Relu] {
        let mut case = BnCase::new(shape(3, 5, 37), fusion, 7100, Reduction::Tree);
        case.split = Some((40, 16));
        bn_case(case);
    }
    let mut large_mean = BnCase::new(shape(4, 3, 1000), Fusion::Relu, 7200, Reduction::Tree);
    (large_mean.offset, large_mean.spread, large_mean.split) = (1e4, 1e-2, Some((48, 64)));
    bn_case(large_mean);
}

/// The norms' many-part reductions with f16 activations (a test of its own:
/// SwiftShader, which has no shader-f16, skips the tests named f16).
#[test]
fn norm_parts_match_oracle_at_f16() {
    let shape = BatchNormShape {
        batch: 3,
        channels: 5,
        hw: 301,
    };
    let mut f16 = BnCase::new(shape, Fusion::AddRelu, 7300, Reduction::Tree);
    f16.split = Some((200, 50));
    bn_case_as(f16, DType::F16);
    let gn = GroupNormShape {
        batch: 2,
        channels: 6,
        groups: 2,
        hw: 300,
    };
    let split = Some((200, 50));
    gn_case_split(gn, Fusion::AddRelu, 7610, DType::F16, split, (0.0, 1.0));
}

/// Mixed precision: batch norm and group norm with f16 activations, every
/// fused form on one odd shape each (plane longer than a workgroup).
#[test]
fn norms_match_oracle_at_f16() {
    let shape = BatchNormShape {
        batch: 2,
        channels: 5,
        hw: 300,
    };
    let gn = GroupNormShape {
        batch: 2,
        channels: 6,
        groups: 3,
        hw: 45,
    };
    for (j, fusion) in [Fusion::None, Fusion::Relu, Fusion::AddRelu]
        .into_iter()
        .enumerate()
    {
        let seed = 4000 + 10 * j as u64;
        let reduction = Reduction::Tree;
        bn_case_as(BnCase::new(shape, fusion, seed, reduction), DType::F16);
        gn_case_as(gn, fusion, seed + 5, DType::F16);
    }
}

#[test]
fn batchnorm_eval_uses_running_statistics() {
    let s = BatchNormShape {
        batch: 2,
        channels: 3,
        hw: 10,
    };
    let (act, c) = ([2, 3, 10], [3]);
    let (x, xv) = random_tensor("x", 1, &act);
    let (gamma, gv) = random_tensor("gamma", 2, &c);
    let (beta, bv) = random_tensor("beta", 3, &c);
    let (rm, rmv) = random_tensor("rm", 4, &c);
    let rvv: Vec<f32> = random(5, 3).iter().map(|v| v.abs() + 0.2).collect();
    let rv = tensor("rv", &c, &rvv);
    let y = zeros("y", &act);
    let bn = BatchNorm::new("bn eval", s, Fusion::Relu).unwrap();
    let stats = zeros("stats", &[bn.stats_len()]);
    let t = BnTensors {
        x: &x,
        gamma: &gamma,
        beta: &beta,
        running_mean: &rm,
        running_var: &rv,
        stats: &stats,
    };
    run(&bn
        .forward_eval(ctx(), &t, None, &y)
        .unwrap()
        .iter()
        .collect::<Vec<_>>());
    let stats = oracle::batchnorm::eval_stats(&widen(&rmv), &widen(&rvv), 1e-5);
    let expect = oracle::batchnorm::apply(
        &s,
        &widen(&xv),
        &stats,
        &widen(&gv),
        &widen(&bv),
        Fusion::Relu,
        None,
    );
    assert_close("bn eval y", &read(&y), &expect, 1e-5, 1e-6);
    assert_close(
        "bn eval leaves running mean",
        &read(&rm),
        &widen(&rmv),
        0.0,
        0.0,
    );
}

/// Every fused form on odd shapes: one group (LayerNorm-like), one channel a
/// group (InstanceNorm-like), groups of 3 channels, planes longer than a
/// workgroup, batch 1.
#[test]
fn groupnorm_matches_oracle_in_every_fused_form() {
    let shapes = [(1, 6, 3, 5 * 7), (3, 5, 1, 9), (2, 4, 4, 3), (2, 6, 2, 300)];
    for (i, (batch, channels, groups, hw)) in shapes.into_iter().enumerate() {
        let shape = GroupNormShape {
            batch,
            channels,
            groups,
            hw,
        };
        for (j, fusion) in [Fusion::None, Fusion::Relu, Fusion::AddRelu]
            .into_iter()
            .enumerate()
        {
            gn_case(shape, fusion, 2000 + 10 * (3 * i + j) as u64);
        }
    }
}

/// Group norm's two-level reductions split into many chunks: of the
/// (sample, group) values and of the planes, on odd shapes (one sample, 1x1
/// maps, groups of 3 channels, half a million values per group) and a large
/// mean with a small spread (f16: `norm_parts_match_oracle_at_f16`).
#[test]
fn groupnorm_parts_match_oracle_on_odd_shapes() {
    let shape = |batch, channels, groups, hw| GroupNormShape {
        batch,
        channels,
        groups,
        hw,
    };
    let cases = [
        (shape(1, 6, 2, 5 * 7), Fusion::AddRelu, 64, 4),
        (shape(3, 6, 3, 1), Fusion::Relu, 64, 1),
        (shape(2, 9, 3, 37), Fusion::None, 100, 7),
        (shape(1, 2, 1, 1 << 19), Fusion::AddRelu, 2048, 1),
    ];
    for (i, (s, fusion, target, min_part)) in cases.into_iter().enumerate() {
        let seed = 7500 + 10 * i as u64;
        gn_case_split(
            s,
            fusion,
            seed,
            DType::F32,
            Some((target, min_part)),
            (0.0, 1.0),
        );
    }
    let s = shape(2, 6, 2, 300);
    let large_mean = (1e4, 1e-2);
    gn_case_split(
        s,
        Fusion::Relu,
        7600,
        DType::F32,
        Some((48, 64)),
        large_mean,
    );
}

fn gn_case(s: GroupNormShape, fusion: Fusion, seed: u64) {
    gn_case_as(s, fusion, seed, DType::F32);
}

/// `gn_case` with activations stored as `dtype` (tolerances as `bn_case_as`).
fn gn_case_as(s: GroupNormShape, fusion: Fusion, seed: u64, dtype: DType) {
    gn_case_split(s, fusion, seed, dtype, None, (0.0, 1.0));
}

/// `gn_case_as` split by `GroupNorm::split(target, min_part)` where given,
/// with x = offset + spread * U(-1, 1).
fn gn_case_split(
    s: GroupNormShape,
    fusion: Fusion,
    seed: u64,
    dtype: DType,
    split: Option<(usize, usize)>,
    (offset, spread): (f32, f32),
) {
    let act = [s.batch, s.channels, s.hw];
    let c = [s.channels];
    let x0: Vec<f32> = random(seed, s.numel())
        .iter()
        .map(|v| offset + spread * v)
        .collect();
    let xv = stored_as(&x0, dtype);
    let x = Tensor::from_f32_as(ctx(), "x", &act, &xv, dtype).unwrap();
    let (res, resv) = random_tensor_as("residual", seed + 1, &act, dtype);
    let (dy, dyv) = random_tensor_as("dy", seed + 2, &act, dtype);
    let (rtol, atol) = if dtype == DType::F16 {
        (2e-3, 1e-3)
    } else {
        (1e-4, 1e-5)
    };
    let (gamma, gv) = random_tensor("gamma", seed + 3, &c);
    let (beta, bv) = random_tensor("beta", seed + 4, &c);
    let (y, dx, dres, dg, db) = (
        zeros_as("y", &act, dtype),
        zeros_as("dx", &act, dtype),
        zeros_as("dres", &act, dtype),
        zeros("dgamma", &c),
        zeros("dbeta", &c),
    );
    let mut gn = GroupNorm::new("gn", s, fusion).unwrap();
    if let Some((target, min_part)) = split {
        gn.split(target, min_part);
    }
    let stats_t = zeros("stats", &[gn.stats_len()]);
    let t = GnTensors {
        x: &x,
        gamma: &gamma,
        beta: &beta,
        stats: &stats_t,
    };
    let add = fusion == Fusion::AddRelu;
    let fwd = gn.forward(ctx(), &t, add.then_some(&res), &y).unwrap();
    let g = GnGradTensors {
        dy: &dy,
        dx: &dx,
        dgamma: &dg,
        dbeta: &db,
        dresidual: add.then_some(&dres),
    };
    let bwd = gn.backward(ctx(), &t, &y, &g).unwrap();
    run(&fwd.iter().chain(&bwd).collect::<Vec<_>>());

    let (xv, gv, bv, resv) = (widen(&xv), widen(&gv), widen(&bv), widen(&resv));
    let stats = oracle::groupnorm::stats(&s, &xv, 1e-5);
    let residual = add.then_some(&resv[..]);
    let yv = oracle::groupnorm::apply(&s, &xv, &stats, &gv, &bv, fusion, residual);
    let what = format!(
        "{s:?} {fusion:?} {dtype:?} {:?} {:?} x = {offset} + {spread} U",
        gn.partition, gn.plane_partition
    );
    assert_close(&format!("{what} y"), &read(&y), &yv, rtol, atol);
    let saved = read(&stats_t);
    let k = s.stats_len();
    assert_close(
        &format!("{what} mean"),
        &saved[..k],
        &stats.mean,
        1e-5,
        1e-6,
    );
    assert_close(
        &format!("{what} invstd"),
        &saved[k..2 * k],
        &stats.invstd,
        1e-4,
        1e-5,
    );
    // The oracle's backward takes the GPU's y as the ReLU mask, so a value
    // within rounding of 0 cannot flip the comparison.
    let grads = oracle::groupnorm::backward(
        &s,
        &xv,
        &stats,
        &gv,
        &widen(&read(&y)),
        &widen(&dyv),
        fusion,
    );
    assert_close(
        &format!("{what} dx"),
        &read(&dx),
        &grads.dx,
        rtol.max(1e-3),
        atol,
    );
    assert_close(
        &format!("{what} dgamma"),
        &read(&dg),
        &grads.dgamma,
        1e-4,
        1e-4,
    );
    assert_close(
        &format!("{what} dbeta"),
        &read(&db),
        &grads.dbeta,
        1e-4,
        1e-4,
    );
    if let Some(dr) = &grads.dresidual {
        assert_close(&format!("{what} dresidual"), &read(&dres), dr, 0.0, 0.0);
    }
}

/// An output of an op under test: its name, shape and tolerance (rtol, atol).
struct Output<'a>(&'a str, &'a [usize], f64, f64);

/// Checks an op against its oracle in the spirit of tinygrad's
/// `helper_test_op`: seeded random inputs of `inputs` shapes and types (F32
/// or F16; seeds from `seed`), zeroed `outputs` of their types; `gpu` builds
/// the dispatches that write the outputs, `oracle` computes them in f64 from
/// the inputs as stored (f16-rounded).
fn check_op(
    what: &str,
    seed: u64,
    inputs: &[(&[usize], DType)],
    outputs: &[(&Output<'_>, DType)],
    gpu: impl FnOnce(&[Tensor], &[Tensor]) -> Vec<Dispatch>,
    oracle: impl FnOnce(&[Vec<f64>]) -> Vec<Vec<f64>>,
) {
    let (tensors, values): (Vec<Tensor>, Vec<Vec<f64>>) = inputs
        .iter()
        .zip(seed..)
        .map(|(&(shape, dtype), seed)| {
            let (t, v) = random_tensor_as("input", seed, shape, dtype);
            (t, widen(&v))
        })
        .unzip();
    let out: Vec<Tensor> = outputs
        .iter()
        .map(|(o, dtype)| zeros_as(o.0, o.1, *dtype))
        .collect();
    let outputs: Vec<&Output<'_>> = outputs.iter().map(|(o, _)| *o).collect();
    let dispatches = gpu(&tensors, &out);
    run(&dispatches.iter().collect::<Vec<_>>());
    let expected = oracle(&values);
    assert_eq!(
        expected.len(),
        outputs.len(),
        "{what}: the oracle's outputs"
    );
    for ((o, t), e) in outputs.iter().zip(&out).zip(&expected) {
        assert_close(&format!("{what} {}", o.0), &read(t), e, o.2, o.3);
    }
}

/// A conv bias on odd shapes: batch 1, a plane longer than a workgroup,
/// channel counts that are no multiple of anything.
#[test]
fn conv_bias_matches_oracle() {
    for (i, (batch, channels, hw)) in [(1, 3, 35), (3, 5, 9), (2, 7, 300)].into_iter().enumerate() {
        let s = BatchNormShape {
            batch,
            channels,
            hw,
        };
        bias_case(s, 3000 + 10 * i as u64, DType::F32);
    }
}

/// The bias added in place to an activation of type `act` (an f16 sum within
/// its rounding), and its f32 gradient.
fn bias_case(s: BatchNormShape, seed: u64, act: DType) {
    let shape = [s.batch, s.channels, s.hw];
    let (y, yv) = random_tensor_as("y", seed, &shape, act);
    let (b, bv) = random_tensor("bias", seed + 1, &[s.channels]);
    let (dy, dyv) = random_tensor_as("dy", seed + 2, &shape, act);
    let db = zeros("dbias", &[s.channels]);
    let op = resnet_wgpu::ops::bias::Bias::new("conv1", s);
    let fwd = op.forward(ctx(), &b, &y).unwrap();
    let bwd = op.backward(ctx(), &dy, &db).unwrap();
    run(&[&fwd, &bwd]);
    let rtol = if act == DType::F16 {
        F16_ROUNDING
    } else {
        1e-6
    };
    let expect = oracle::bias::forward(&s, &widen(&yv), &widen(&bv));
    let what = format!("{s:?} {act:?}");
    assert_close(&format!("{what} y + bias"), &read(&y), &expect, rtol, 1e-7);
    let expect = oracle::bias::backward(&s, &widen(&dyv));
    assert_close(&format!("{what} dbias"), &read(&db), &expect, 1e-5, 1e-5);
}

#[test]
fn groupnorm_refuses_channels_that_do_not_split() {
    let shape = GroupNormShape {
        batch: 2,
        channels: 6,
        groups: 4,
        hw: 3,
    };
    let err = GroupNorm::new("layer1.0.bn1", shape, Fusion::None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("layer1.0.bn1"), "{err}");
    assert!(err.to_string().contains("6 channels"), "{err}");
}

#[test]
fn batchnorm_refuses_one_value_per_channel() {
    let err = BatchNorm::new(
        "bn1",
        BatchNormShape {
            batch: 1,
            channels: 4,
            hw: 1,
        },
        Fusion::None,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("bn1"));
}

#[test]
fn relu_and_add_match_oracle() {
    relu_and_add_case(1, DType::F32);
}

/// ReLU forward and backward (exact) and add (one rounding) on `act`.
fn relu_and_add_case(seed: u64, act: DType) {
    let shape: &[usize] = &[3, 5, 7];
    let (rtol, atol) = if act == DType::F16 {
        (F16_ROUNDING, 1e-7)
    } else {
        (1e-7, 0.0)
    };
    check_op(
        &format!("elementwise {act:?}"),
        seed,
        &[(shape, act), (shape, act)],
        &[
            (&Output("relu", shape, 0.0, 0.0), act),
            (&Output("relu backward", shape, 0.0, 0.0), act),
            (&Output("add", shape, rtol, atol), act),
        ],
        |t, out| {
            vec![
                elementwise::relu_forward(ctx(), "relu", &t[0], &out[0]).unwrap(),
                elementwise::relu_backward(ctx(), "relu", &t[1], &out[0], &out[1]).unwrap(),
                elementwise::add(ctx(), "add", &t[0], &t[1], &out[2]).unwrap(),
            ]
        },
        |v| {
            let y = oracle::elementwise::relu(&v[0]);
            let dx = oracle::elementwise::relu_backward(&v[1], &y);
            vec![y, dx, oracle::elementwise::add(&v[0], &v[1])]
        },
    );
}

#[test]
fn shortcut_a_matches_oracle() {
    for (i, s) in [
        ShortcutShape {
            batch: 2,
            in_c: 3,
            in_h: 7,
            in_w: 5,
            out_c: 8,
            stride: 2,
        }, // odd input, odd pad split
        ShortcutShape {
            batch: 1,
            in_c: 16,
            in_h: 32,
            in_w: 32,
            out_c: 32,
            stride: 2,
        },
        ShortcutShape {
            batch: 1,
            in_c: 4,
            in_h: 3,
            in_w: 3,
            out_c: 4,
            stride: 1,
        },
    ]
    .into_iter()
    .enumerate()
    {
        shortcut_case(s, 10 + 2 * i as u64, DType::F32);
    }
}

/// The pad shortcut on `act`: copies, so exact at either precision.
fn shortcut_case(s: ShortcutShape, seed: u64, act: DType) {
    let sc = Shortcut::new("shortcut", s).unwrap();
    let (input, output) = (sc.input_shape(), sc.output_shape());
    check_op(
        &format!("{s:?} {act:?}"),
        seed,
        &[(&input, act), (&output, act)],
        &[
            (&Output("forward", &output, 0.0, 0.0), act),
            (&Output("backward", &input, 0.0, 0.0), act),
        ],
        |t, out| {
            vec![
                sc.forward(ctx(), &t[0], &out[0]).unwrap(),
                sc.backward(ctx(), &t[1], &out[1]).unwrap(),
            ]
        },
        |v| {
            vec![
                oracle::shortcut::forward(&s, &v[0]),
                oracle::shortcut::backward(&s, &v[1]),
            ]
        },
    );
}

#[test]
fn max_pool_matches_oracle() {
    for (i, s) in [
        PoolShape {
            batch: 2,
            channels: 3,
            in_h: 9,
            in_w: 7,
            kernel: 3,
            stride: 2,
            pad: 1,
        },
        PoolShape {
            batch: 1,
            channels: 5,
            in_h: 8,
            in_w: 8,
            kernel: 3,
            stride: 2,
            pad: 1,
        },
        PoolShape {
            batch: 1,
            channels: 2,
            in_h: 6,
            in_w: 5,
            kernel: 2,
            stride: 2,
            pad: 0,
        },
    ]
    .into_iter()
    .enumerate()
    {
        max_pool_case(s, (30 + i as u64, 40 + i as u64), DType::F32);
    }
}

/// Max pool forward (exact: a maximum and its index) and backward (sums of
/// the chosen gradients, one rounding) on `act`, with inputs from `seeds`.
fn max_pool_case(s: PoolShape, seeds: (u64, u64), act: DType) {
    let pool = Pool::new("maxpool", s).unwrap();
    let (x, xv) = random_tensor_as("x", seeds.0, &pool.input_shape(), act);
    let (dy, dyv) = random_tensor_as("dy", seeds.1, &pool.max_output_shape(), act);
    let y = zeros_as("y", &pool.max_output_shape(), act);
    let argmax = Tensor::zeros(ctx(), "argmax", &pool.max_output_shape(), DType::U32).unwrap();
    let dx = zeros_as("dx", &pool.input_shape(), act);
    run(&[
        &pool.max_forward(ctx(), &x, &y, &argmax).unwrap(),
        &pool.max_backward(ctx(), &dy, &argmax, &dx).unwrap(),
    ]);
    let what = format!("{s:?} {act:?}");
    let (yv, av) = oracle::pool::max_forward(&s, &widen(&xv));
    assert_close(&format!("{what} forward"), &read(&y), &yv, 0.0, 0.0);
    assert_eq!(argmax.read_u32(ctx()).unwrap(), av, "{what} argmax");
    let rtol = if act == DType::F16 {
        F16_ROUNDING
    } else {
        1e-6
    };
    assert_close(
        &format!("{what} backward"),
        &read(&dx),
        &oracle::pool::max_backward(&s, &widen(&dyv), &av),
        rtol,
        1e-7,
    );
}

#[test]
fn max_pool_ties_keep_the_first_maximum() {
    let s = PoolShape {
        batch: 1,
        channels: 1,
        in_h: 4,
        in_w: 4,
        kernel: 3,
        stride: 2,
        pad: 1,
    };
    let pool = Pool::new("ties", s).unwrap();
    let x = tensor("x", &pool.input_shape(), &[1.0; 16]);
    let y = zeros("y", &pool.max_output_shape());
    let argmax = Tensor::zeros(ctx(), "argmax", &pool.max_output_shape(), DType::U32).unwrap();
    run(&[&pool.max_forward(ctx(), &x, &y, &argmax).unwrap()]);
    assert_eq!(
        argmax.read_u32(ctx()).unwrap(),
        oracle::pool::max_forward(&s, &[1.0; 16]).1
    );
}

#[test]
fn global_average_pool_matches_oracle() {
    global_average_pool_case(50, DType::F32);
}

/// Global average pool forward and backward on `act` (one rounding at f16).
fn global_average_pool_case(seed: u64, act: DType) {
    let pool = Pool::global_average("gap", 3, 5, 7, 3).unwrap();
    let input = pool.input_shape();
    let ((rtol, atol_forward), atol_backward) = if act == DType::F16 {
        ((F16_ROUNDING, 1e-6), 1e-7)
    } else {
        ((1e-6, 1e-7), 0.0)
    };
    check_op(
        &format!("gap {act:?}"),
        seed,
        &[(&input, act), (&[3, 5], act)],
        &[
            (&Output("forward", &[3, 5], rtol, atol_forward), act),
            (&Output("backward", &input, rtol, atol_backward), act),
        ],
        |t, out| {
            vec![
                pool.global_avg_forward(ctx(), &t[0], &out[0]).unwrap(),
                pool.global_avg_backward(ctx(), &t[1], &out[1]).unwrap(),
            ]
        },
        |v| {
            vec![
                oracle::pool::global_avg_forward(15, 21, &v[0]),
                oracle::pool::global_avg_backward(15, 21, &v[1]),
            ]
        },
    );
}

#[test]
fn linear_matches_oracle() {
    linear_case(60, DType::F32);
}

/// fc with its input, weight and input gradient as `act` (the gradient one
/// f16 rounding at f16); the bias, logits and the weight and bias gradients
/// are f32 at either precision.
fn linear_case(seed: u64, act: DType) {
    let s = LinearShape {
        batch: 3,
        in_f: 17,
        out_f: 10,
    };
    let fc = Linear::new("fc", s);
    let f = DType::F32;
    let tol = |name, shape| Output(name, shape, 1e-5, 1e-6);
    let dx_rtol = if act == DType::F16 {
        F16_ROUNDING
    } else {
        1e-5
    };
    check_op(
        &format!("fc {act:?}"),
        seed,
        &[(&[3, 17], act), (&[10, 17], act), (&[10], f), (&[3, 10], f)],
        &[
            (&tol("forward", &[3, 10]), f),
            (&Output("dx", &[3, 17], dx_rtol, 1e-6), act),
            (&tol("dw", &[10, 17]), f),
            (&tol("db", &[10]), f),
        ],
        |t, out| {
            let mut d = vec![fc.forward(ctx(), &t[0], &t[1], &t[2], &out[0]).unwrap()];
            d.extend(
                fc.backward(ctx(), &t[0], &t[1], &t[3], &out[1], &out[2], &out[3])
                    .unwrap(),
            );
            d
        },
        |v| {
            vec![
                oracle::linear::forward(&s, &v[0], &v[1], &v[2]),
                oracle::linear::backward_input(&s, &v[3], &v[1]),
                oracle::linear::backward_weight(&s, &v[0], &v[3]),
                oracle::linear::backward_bias(&s, &v[3]),
            ]
        },
    );
}

/// The tensors of one softmax cross-entropy call on `logits` [labels.len(), classes].
struct LossCase {
    logits: Tensor,
    labels: Tensor,
    grad: Tensor,
    sample_loss: Tensor,
    sample_correct: Tensor,
    metrics: Tensor,
    scaler: Tensor,
}

impl LossCase {
    fn new(logits: &[f32], labels: &[u32], grad_init: f32) -> Self {
        let batch = labels.len();
        let classes = logits.len() / batch;
        LossCase {
            logits: tensor("logits", &[batch, classes], logits),
            labels: Tensor::from_u32(ctx(), "labels", &[batch], labels).unwrap(),
            grad: tensor("grad", &[batch, classes], &vec![grad_init; logits.len()]),
            sample_loss: zeros("sample_loss", &[batch]),
            sample_correct: zeros("sample_correct", &[2, batch]),
            metrics: zeros("metrics", &[loss::METRICS_LEN]),
            scaler: Tensor::from_u32(
                ctx(),
                "scaler",
                &[scaler::SCALER_WORDS],
                &scaler::initial_words(1.0),
            )
            .unwrap(),
        }
    }

    fn tensors(&self) -> CrossEntropyTensors<'_> {
        CrossEntropyTensors {
            logits: &self.logits,
            labels: &self.labels,
            grad_logits: &self.grad,
            sample_loss: &self.sample_loss,
            sample_correct: &self.sample_correct,
            metrics: &self.metrics,
            loss_scale: &self.scaler,
        }
    }
}

#[test]
fn cross_entropy_matches_oracle() {
    cross_entropy_cases(Reduction::Tree);
}

/// Every loss case with the batch sum ending in `reduction`.
fn cross_entropy_cases(reduction: Reduction) {
    cross_entropy_accumulates_metrics(reduction);
    cross_entropy_ignores_the_padding_of_a_partial_batch(reduction);
    // A batch past one workgroup of the sum (256).
    let (batch, classes) = (300, 2);
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % 2).collect();
    let case = LossCase::new(&random(72, batch * classes), &labels, 0.0);
    let d = loss::softmax_cross_entropy(ctx(), "loss", &case.tensors(), batch, reduction).unwrap();
    run(&d.iter().collect::<Vec<_>>());
    let logits = widen(&read(&case.logits));
    let expect = oracle::loss::softmax_cross_entropy(&logits, &labels, classes);
    let m = read(&case.metrics);
    assert_close(
        &format!("loss sum of {batch} ({reduction:?})"),
        &m[loss::METRIC_LOSS_SUM..=loss::METRIC_LOSS_SUM],
        &[expect.mean_loss * batch as f64],
        1e-5,
        1e-5,
    );
    assert_eq!(m[loss::METRIC_CORRECT], expect.correct as f32);
    assert_eq!(m[loss::METRIC_TOP5], expect.top5 as f32);
    top5_over_many_classes(reduction);
}

/// Top-5 hits over 13 classes, the labels placed at ranks 1 to 13.
fn top5_over_many_classes(reduction: Reduction) {
    let (batch, classes) = (13, 13);
    let logits = random(73, batch * classes);
    let labels: Vec<u32> = (0..batch)
        .map(|b| {
            let row = &logits[b * classes..(b + 1) * classes];
            let mut order: Vec<usize> = (0..classes).collect();
            order.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
            order[b] as u32 // rank b
        })
        .collect();
    let case = LossCase::new(&logits, &labels, 0.0);
    let d = loss::softmax_cross_entropy(ctx(), "loss", &case.tensors(), batch, reduction).unwrap();
    run(&d.iter().collect::<Vec<_>>());
    let expect = oracle::loss::softmax_cross_entropy(&widen(&logits), &labels, classes);
    assert_eq!(expect.top5, 5, "ranks 0..4 are in the top five");
    let hits = read(&case.sample_correct);
    let want: Vec<f32> = (0..batch).map(|b| f32::from(u8::from(b < 5))).collect();
    assert_eq!(&hits[batch..], &want[..]);
    assert_eq!(read(&case.metrics)[loss::METRIC_TOP5], 5.0);
}

fn cross_entropy_accumulates_metrics(reduction: Reduction) {
    let (batch, classes) = (5, 7);
    let mut logits = random(70, batch * classes);
    logits[2 * classes + 4] = logits[2 * classes..3 * classes]
        .iter()
        .cloned()
        .fold(f32::MIN, f32::max); // a tie
    let labels: Vec<u32> = vec![0, 6, 3, 4, 2];
    let case = LossCase::new(&logits, &labels, 0.0);
    let (grad, sl, metrics, t) = (&case.grad, &case.sample_loss, &case.metrics, case.tensors());
    let d = loss::softmax_cross_entropy(ctx(), "loss", &t, batch, reduction).unwrap();
    let refs: Vec<&Dispatch> = d.iter().collect();
    run(&refs);
    run(&refs); // metrics accumulate over steps
    let expect = oracle::loss::softmax_cross_entropy(&widen(&logits), &labels, classes);
    assert_close("grad logits", &read(grad), &expect.grad_logits, 1e-5, 1e-7);
    assert_close(
        "per-sample loss",
        &read(sl),
        &expect.per_sample_loss,
        1e-5,
        1e-6,
    );
    let m = read(metrics);
    assert_close(
        "loss sum",
        &m[loss::METRIC_LOSS_SUM..=loss::METRIC_LOSS_SUM],
        &[2.0 * expect.mean_loss * batch as f64],
        1e-5,
        1e-6,
    );
    assert_eq!(m[loss::METRIC_CORRECT], 2.0 * expect.correct as f32);
    assert_eq!(m[loss::METRIC_TOP5], 2.0 * expect.top5 as f32);
    assert_eq!(m[loss::METRIC_SAMPLES], 2.0 * batch as f32);
    assert_close(
        "batch loss",
        &m[loss::METRIC_BATCH_LOSS..=loss::METRIC_BATCH_LOSS],
        &[expect.mean_loss],
        1e-5,
        1e-6,
    );
}

fn cross_entropy_ignores_the_padding_of_a_partial_batch(reduction: Reduction) {
    let (batch, valid, classes) = (6, 4, 3);
    let logits = random(71, batch * classes);
    let labels: Vec<u32> = vec![2, 0, 1, 1, 7, 9]; // padding labels are never read
    // The gradient starts non-zero, so padding rows must be written as zeros.
    let case = LossCase::new(&logits, &labels, 5.0);
    let (grad, metrics, t) = (&case.grad, &case.metrics, case.tensors());
    let d = loss::softmax_cross_entropy(ctx(), "loss", &t, valid, reduction).unwrap();
    run(&d.iter().collect::<Vec<_>>());
    let expect = oracle::loss::softmax_cross_entropy(
        &widen(&logits[..valid * classes]),
        &labels[..valid],
        classes,
    );
    let mut expect_grad = expect.grad_logits.clone();
    expect_grad.resize(batch * classes, 0.0);
    assert_close("grad logits", &read(grad), &expect_grad, 1e-5, 1e-7);
    let m = read(metrics);
    assert_eq!(m[loss::METRIC_SAMPLES], valid as f32);
    assert_eq!(m[loss::METRIC_CORRECT], expect.correct as f32);
    assert_eq!(
        m[loss::METRIC_TOP5],
        expect.top5 as f32,
        "padding adds no top-5 hit"
    );
    assert_close(
        "loss sum",
        &m[loss::METRIC_LOSS_SUM..=loss::METRIC_LOSS_SUM],
        &[expect.mean_loss * valid as f64],
        1e-5,
        1e-6,
    );
    for bad in [0, batch + 1] {
        assert!(loss::softmax_cross_entropy(ctx(), "loss", &t, bad, reduction).is_err());
    }
}

#[test]
fn sgd_matches_oracle_over_steps_with_a_changing_learning_rate() {
    for nesterov in [false, true] {
        let cfg = SgdConfig {
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov,
        };
        let n = 1000;
        let (w, wv) = random_tensor("w", 80, &[n]);
        let (g, gv) = random_tensor("g", 81, &[n]);
        let m = zeros("momentum", &[n]);
        let lr = optim::LearningRateBuffer::new(ctx(), 0.1);
        let d = optim::sgd_step(ctx(), "sgd", &cfg, &lr, &w, &g, &m, None).unwrap();
        let (mut wr, mut mr, gr) = (widen(&wv), vec![0.0; n], widen(&gv));
        for (step, rate) in [0.1f32, 0.05, 0.01].into_iter().enumerate() {
            lr.set(ctx(), rate);
            run(&[&d]);
            oracle::optim::sgd_step(&cfg, f64::from(rate), &mut wr, &gr, &mut mr);
            assert_close(
                &format!("nesterov {nesterov} step {step} w"),
                &read(&w),
                &wr,
                1e-5,
                1e-6,
            );
            assert_close(
                &format!("nesterov {nesterov} step {step} momentum"),
                &read(&m),
                &mr,
                1e-5,
                1e-6,
            );
        }
    }
}

#[test]
fn augment_replays_exactly_on_the_cpu() {
    let image = ImageShape {
        channels: 3,
        height: 7,
        width: 9,
    };
    let dataset = 6;
    let bytes: Vec<u8> = (0..dataset * image.numel())
        .map(|i| (i * 37 % 251) as u8)
        .collect();
    let labels: Vec<u32> = (0..dataset as u32).map(|i| i % 4).collect();
    let indices: Vec<u32> = vec![5, 0, 3, 3, 1];
    let images = Tensor::from_u8(ctx(), "images", &[dataset, 3, 7, 9], &bytes).unwrap();
    let dl = Tensor::from_u32(ctx(), "dataset labels", &[dataset], &labels).unwrap();
    let idx = Tensor::from_u32(ctx(), "indices", &[5], &indices).unwrap();
    let out = zeros("batch", &[5, 3, 7, 9]);
    let bl = Tensor::zeros(ctx(), "batch labels", &[5], DType::U32).unwrap();
    let t = augment::AugmentTensors {
        images: &images,
        dataset_labels: &dl,
        indices: &idx,
        output: &out,
        labels: &bl,
    };
    for cfg in [
        AugmentConfig {
            pad: 2,
            ..AugmentConfig::cifar_train()
        },
        AugmentConfig::cifar_train().eval(),
    ] {
        let (mut aug, d) = augment::Augment::new(ctx(), "augment", image, cfg, &t).unwrap();
        for seed in [1u32, 2, 99] {
            aug.set_seed(ctx(), seed);
            run(&[&d]);
            let (expect, expect_labels) =
                oracle::augment::augment(&cfg, &image, &bytes, &labels, &indices, seed);
            assert_close(
                &format!("{cfg:?} seed {seed}"),
                &read(&out),
                &expect,
                1e-5,
                1e-5,
            );
            assert_eq!(bl.read_u32(ctx()).unwrap(), expect_labels);
        }
    }
}

#[test]
fn augment_flips_and_crops_vary_with_the_seed() {
    let cfg = AugmentConfig::cifar_train();
    let transforms: Vec<_> = (0..64)
        .map(|b| oracle::augment::sample_transform(&cfg, 7, b))
        .collect();
    assert!(
        transforms.iter().any(|t| t.2) && transforms.iter().any(|t| !t.2),
        "flips both ways"
    );
    assert!(
        transforms
            .iter()
            .map(|t| t.0)
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 5,
        "crop offsets spread"
    );
}

#[test]
fn gemm_versions_match_oracle() {
    // Odd M everywhere; v1 also takes odd N and K, v2 needs multiples of 4 there.
    for (m, n, k, vec4) in [
        (37, 29, 19, false),
        (37, 28, 20, true),
        (1, 4, 4, true),
        (9, 36, 8, true),
    ] {
        let (a, av) = random_tensor("a", 90, &[m, k]);
        let (b, bv) = random_tensor("b", 91, &[k, n]);
        let c = zeros("c", &[m, n]);
        let tuning = ConvTuning::default();
        let d = if vec4 {
            gemm::matmul_vec4(ctx(), &tuning, &a, &b, &c)
        } else {
            gemm::matmul(ctx(), &tuning, &a, &b, &c)
        };
        run(&[&d.unwrap()]);
        let expect = oracle::gemm::matmul(m, n, k, &widen(&av), &widen(&bv));
        assert_close(
            &format!("gemm {m}x{n}x{k} vec4 {vec4}"),
            &read(&c),
            &expect,
            1e-5,
            1e-5,
        );
    }
    let (a, b, c) = (
        zeros("a", &[3, 5]),
        zeros("b", &[5, 4]),
        zeros("c", &[3, 4]),
    );
    assert!(
        gemm::matmul_vec4(ctx(), &ConvTuning::default(), &a, &b, &c).is_err(),
        "K = 5 must be refused by v2"
    );
}

#[test]
fn gemm_tiled_matches_oracle() {
    // Sizes off the tile in every dimension, and K shorter than one staged slice.
    for (m, n, k, tile) in [
        (37, 29, 19, (16, 16)),
        (70, 131, 5, (4, 32)),
        (1, 1, 9, (8, 16)),
    ] {
        let (a, av) = random_tensor("a", 92, &[m, k]);
        let (b, bv) = random_tensor("b", 93, &[k, n]);
        let c = zeros("c", &[m, n]);
        run(&[&gemm::matmul_tiled(ctx(), tile, &a, &b, &c).unwrap()]);
        let expect = oracle::gemm::matmul(m, n, k, &widen(&av), &widen(&bv));
        assert_close(
            &format!("tiled gemm {m}x{n}x{k} {tile:?}"),
            &read(&c),
            &expect,
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn oversized_tensor_names_the_limit() {
    let limit = ctx().limits.max_storage_buffer_binding_size;
    let elements = (limit / 4 + 1) as usize;
    let err = Tensor::zeros(ctx(), "huge activation", &[elements], DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("huge activation") && err.contains("max_storage_buffer_binding_size"),
        "{err}"
    );
}

/// Relative tolerance of an f16 result: its own rounding is 2^-11 = 4.9e-4
/// relative, plus the f32 arithmetic before it.
const F16_ROUNDING: f64 = 1e-3;

/// Mixed precision: the elementwise ops, the pad shortcut, both pools, the
/// conv bias and fc with f16 activations, each case once on one odd shape.
/// An f16 result is within its own rounding of the oracle on the same
/// rounded inputs; copies and maxima are exact; fc's logits, weight and bias
/// gradients are f32.
#[test]
fn small_ops_match_oracle_at_f16() {
    let h = DType::F16;
    relu_and_add_case(4100, h);
    let sc = ShortcutShape {
        batch: 2,
        in_c: 3,
        in_h: 7,
        in_w: 5,
        out_c: 8,
        stride: 2,
    };
    shortcut_case(sc, 4110, h);
    global_average_pool_case(4120, h);
    let ps = PoolShape {
        batch: 2,
        channels: 3,
        in_h: 9,
        in_w: 7,
        kernel: 3,
        stride: 2,
        pad: 1,
    };
    max_pool_case(ps, (4130, 4131), h);
    let bs = BatchNormShape {
        batch: 2,
        channels: 7,
        hw: 300,
    };
    bias_case(bs, 4140, h);
    linear_case(4150, h);
}

/// The loss scaler as GradScaler runs it: a clean step unscales the
/// gradient into SGD and counts towards growth (the scale doubles after
/// `growth_interval` clean steps); an inf or NaN anywhere in a gradient
/// chunk skips the update (weights and momenta untouched), halves the scale
/// and counts a skipped step; the f16 weight copy is the rounded master.
#[test]
fn loss_scaler_skips_overflowed_steps_and_adapts_the_scale() {
    let cfg = SgdConfig {
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let n = 300;
    let scale = 1024.0f32;
    let (w, wv) = random_tensor("w", 4200, &[n]);
    let gv: Vec<f32> = random(4201, n);
    let scaled: Vec<f32> = gv.iter().map(|g| g * scale).collect();
    let g = tensor("g", &[n], &scaled);
    let m = zeros("momentum", &[n]);
    let words = scaler::initial_words(scale);
    let sc = Tensor::from_u32(ctx(), "scaler", &[scaler::SCALER_WORDS], &words).unwrap();
    let metrics = zeros("metrics", &[loss::METRICS_LEN]);
    let lr = optim::LearningRateBuffer::new(ctx(), 0.1);
    let scaling = scaler::LossScaling {
        growth_interval: 2,
        ..Default::default()
    };
    let check = scaler::check_finite(ctx(), "grads", &g, &sc).unwrap();
    let step = optim::sgd_step(ctx(), "sgd", &cfg, &lr, &w, &g, &m, Some(&sc)).unwrap();
    let update = scaler::update_scale(ctx(), &scaling, &sc, &metrics).unwrap();

    // Clean step: the same update as unscaled SGD.
    run(&[&check, &step, &update]);
    let (mut wr, mut mr) = (widen(&wv), vec![0.0; n]);
    oracle::optim::sgd_step(&cfg, 0.1, &mut wr, &widen(&gv), &mut mr);
    assert_close("scaled sgd w", &read(&w), &wr, 1e-6, 1e-7);
    let words = |t: &Tensor| t.read_u32(ctx()).unwrap();
    assert_eq!(words(&sc)[scaler::SCALER_GROWTH], 1);
    assert_eq!(f32::from_bits(words(&sc)[scaler::SCALER_SCALE]), scale);

    // A second clean step grows the scale (interval 2).
    run(&[&check, &step, &update]);
    oracle::optim::sgd_step(&cfg, 0.1, &mut wr, &widen(&gv), &mut mr);
    assert_eq!(
        f32::from_bits(words(&sc)[scaler::SCALER_SCALE]),
        2.0 * scale
    );
    assert_eq!(words(&sc)[scaler::SCALER_GROWTH], 0);

    // Overflow in one element: nothing moves, the scale halves, one skip.
    let (w_before, m_before) = (read(&w), read(&m));
    let mut bad = scaled.clone();
    bad[n - 1] = f32::INFINITY;
    g.write_f32(ctx(), &bad).unwrap();
    run(&[&check, &step, &update]);
    assert_eq!(read(&w), w_before, "an overflowed step leaves the weights");
    assert_eq!(read(&m), m_before, "an overflowed step leaves the momenta");
    let after = words(&sc);
    assert_eq!(f32::from_bits(after[scaler::SCALER_SCALE]), scale);
    assert_eq!(after[scaler::SCALER_SKIPPED], 1);
    assert_eq!(after[scaler::SCALER_FOUND_INF], 0, "the flag is cleared");
    let mv = read(&metrics);
    assert_eq!(mv[loss::METRIC_LOSS_SCALE], scale);
    assert_eq!(mv[loss::METRIC_SKIPPED], 1.0);
    // NaN counts as an overflow too.
    bad[0] = f32::NAN;
    g.write_f32(ctx(), &bad).unwrap();
    run(&[&check, &step, &update]);
    assert_eq!(words(&sc)[scaler::SCALER_SKIPPED], 2);

    // The f16 copy of the master weights.
    let copy = zeros_as("w f16", &[n], DType::F16);
    run(&[&optim::copy_weights(ctx(), "copy", &w, &copy).unwrap()]);
    let expect = widen(&stored_as(&read(&w), DType::F16));
    assert_close("f16 weight copy", &read(&copy), &expect, 0.0, 0.0);
}

/// The loss keeps its precision when every logit is large: logits shifted by
/// one constant give the same loss (all equal: ln(classes)), where adding the
/// maximum back gave 2.3047 at 1e5, 2.0 at 1e7 and 0.0 at 1e8 (issue 25).
#[test]
fn cross_entropy_keeps_its_precision_at_large_logits() {
    let classes = 10;
    let offsets = [0.0f32, 1e5, 1e6, 1e7, 1e8];
    let mut logits = vec![];
    for &offset in &offsets {
        logits.extend(std::iter::repeat_n(offset, classes));
    }
    // And small differences on a large offset (as the f32 logits hold them).
    logits.extend(random(74, classes).iter().map(|v| v + 1e4));
    let batch = offsets.len() + 1;
    let labels: Vec<u32> = (0..batch as u32).map(|b| b % classes as u32).collect();
    let case = LossCase::new(&logits, &labels, 0.0);
    let d = loss::softmax_cross_entropy(ctx(), "loss", &case.tensors(), batch, Reduction::Tree)
        .unwrap();
    run(&d.iter().collect::<Vec<_>>());
    let expect = oracle::loss::softmax_cross_entropy(&widen(&logits), &labels, classes);
    let got = read(&case.sample_loss);
    for (b, &offset) in offsets.iter().enumerate() {
        let ln10 = (classes as f32).ln();
        assert!(
            (got[b] - ln10).abs() < 1e-5,
            "offset {offset}: loss {} instead of {ln10}",
            got[b]
        );
    }
    assert_close("per-sample loss", &got, &expect.per_sample_loss, 1e-5, 1e-5);
}
