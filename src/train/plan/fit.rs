//! Whether a batch fits the adapter: the largest activation against one
//! storage binding (before anything is allocated), and the largest batch whose
//! plan can be allocated (after a plan ran out of memory).

use crate::gpu::{GpuContext, GpuError};
use crate::model::{ConvBnSpec, Network, Shortcut};
use crate::shapes::{Conv2dShape, ImageShape};

#[cfg(not(target_arch = "wasm32"))]
use super::{Plan, PlanRequest};

/// The largest batch below `failed` whose plan the adapter can allocate
/// (bisection over real allocations, with the built-in kernels so nothing is
/// measured); None when not even batch 1 fits.
#[cfg(not(target_arch = "wasm32"))]
pub(super) fn largest_batch_that_fits(ctx: &GpuContext, failed: PlanRequest<'_>) -> Option<usize> {
    let policy = ctx.choices.lock().unwrap().policy;
    ctx.set_tune_policy(crate::gpu::TunePolicy::Off);
    let (mut fits, mut fails) = (0, failed.batch);
    while fails - fits > 1 {
        let mid = fits + (fails - fits) / 2;
        let budget = ctx.memory_budget().unwrap_or(u64::MAX);
        let ok = Plan::build_checked(
            ctx,
            PlanRequest {
                batch: mid,
                ..failed
            },
        )
        .is_ok_and(|plan| plan.summary().total_bytes <= budget);
        // Dropped plans free their buffers before the next try.
        let _ = ctx.wait_idle();
        if ok {
            fits = mid;
        } else {
            fails = mid;
        }
    }
    ctx.set_tune_policy(policy);
    (fits > 0).then_some(fits)
}

/// Refuses a batch whose largest activation exceeds one storage binding, and
/// says which batch would fit.
pub(super) fn check_batch_fits(
    ctx: &GpuContext,
    network: &Network,
    batch: usize,
    image: ImageShape,
) -> Result<(), GpuError> {
    let limit = ctx.max_binding_bytes();
    let mut largest = (image.numel(), "input".to_string());
    for (layer, shape) in conv_layers(network, 1, image) {
        let per_sample = shape.output_shape().iter().product();
        if per_sample > largest.0 {
            largest = (per_sample, format!("{layer} output"));
        }
    }
    let per_sample_bytes = 4 * largest.0 as u64;
    let max_batch = (limit / per_sample_bytes) as usize;
    if batch == 0 || batch > max_batch {
        return Err(GpuError::BatchTooLarge {
            batch,
            max_batch,
            tensor: largest.1,
            needed: per_sample_bytes * batch as u64,
            limit,
            adapter: ctx.adapter_info.name.clone(),
        });
    }
    Ok(())
}

/// Every conv of `network` at `batch` images of `image`, in network order
/// (a projection shortcut before its block's units), with its layer name.
pub fn conv_layers(
    network: &Network,
    batch: usize,
    image: ImageShape,
) -> Vec<(String, Conv2dShape)> {
    let mut layers = vec![];
    let mut add = |spec: &ConvBnSpec, hw| {
        let shape = conv_shape(spec, batch, hw);
        layers.push((spec.conv.clone(), shape));
        (shape.out_h(), shape.out_w())
    };
    let mut hw = add(&network.stem, (image.height, image.width));
    if network.stem_max_pool {
        hw = (hw.0.div_ceil(2), hw.1.div_ceil(2));
    }
    for block in &network.blocks {
        if let Shortcut::Projection(p) = &block.shortcut {
            add(p, hw);
        }
        for unit in &block.units {
            hw = add(unit, hw);
        }
    }
    layers
}

pub(super) fn conv_shape(spec: &ConvBnSpec, batch: usize, hw: (usize, usize)) -> Conv2dShape {
    Conv2dShape::square(
        batch,
        spec.in_c,
        hw,
        spec.out_c,
        spec.kernel,
        spec.stride,
        spec.pad,
    )
}
