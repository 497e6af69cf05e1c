//! The memory plan: every tensor a training step touches (parameters, gradients,
//! momenta, saved activations, gradient scratch) allocated once for a model and
//! batch size, and every dispatch of the step prepared once. Recording a step is
//! then a walk over prepared dispatch lists.

use std::collections::HashMap;

use crate::gpu::{ChoiceSource, DType, Dispatch, GpuContext, GpuError, Precision, Tensor};
use crate::model::{BlockSpec, ConvBnSpec, Network, Shortcut, StateEntry, TensorRole};
use crate::ops::Reduction;
use crate::ops::bias::Bias;
use crate::ops::conv::{Conv2d, ConvKernels, ConvTuning};
use crate::ops::elementwise;
use crate::ops::linear::Linear;
use crate::ops::loss::{self, CrossEntropyTensors, METRICS_LEN};
use crate::ops::optim::{self, LearningRateBuffer, sgd_step};
use crate::ops::pool::Pool;
use crate::ops::scaler::{self, LossScaling, SCALER_WORDS};
use crate::ops::shortcut::Shortcut as PadShortcut;
use crate::ops::tune::{choose_conv_kernels, choose_loss_reduction};
use crate::shapes::{
    BatchNormShape, Conv2dShape, Fusion, ImageShape, LinearShape, PoolShape, SgdConfig,
};

use super::norm::{NormIo, NormLayer, NormState};

pub type TensorId = usize;

/// A trainable tensor with its gradient and SGD momentum buffer (all f32),
/// and what the conv and fc kernels read: the value itself, or under mixed
/// precision its f16 copy.
#[derive(Clone, Copy, Debug)]
pub struct ParamSlot {
    pub value: TensorId,
    pub grad: TensorId,
    pub momentum: TensorId,
    pub read: TensorId,
}

/// Which kernels one conv of the plan runs, and how each was chosen
/// (forward, backward_input, backward_weight).
#[derive(Clone, Debug)]
pub struct ConvChoice {
    pub layer: String,
    pub shape: Conv2dShape,
    pub kernels: ConvKernels,
    pub sources: [ChoiceSource; 3],
}

/// Totals for `info` and the GUI.
#[derive(Clone, Debug)]
pub struct PlanSummary {
    pub total_bytes: u64,
    pub tensors: usize,
    pub largest_bytes: u64,
    pub largest_name: String,
    pub dispatches_per_step: usize,
}

/// What a plan is made for: a network at a batch size of images of one
/// shape, the SGD settings its update dispatches bake in, and the conv
/// workgroup shape.
#[derive(Clone, Copy, Debug)]
pub struct PlanRequest<'a> {
    pub network: &'a Network,
    pub batch: usize,
    pub image: ImageShape,
    pub sgd: &'a SgdConfig,
    pub tuning: ConvTuning,
    pub precision: Precision,
}

pub struct Plan {
    pub network: Network,
    pub batch: usize,
    pub image: ImageShape,
    tensors: Vec<Tensor>,
    dispatches: Vec<Dispatch>,
    forward_train: Vec<usize>,
    forward_eval: Vec<usize>,
    train_loss: Vec<usize>,
    backward: Vec<usize>,
    optimizer: Vec<usize>,
    /// State-dict name -> tensor (parameters and BN running statistics).
    state: HashMap<String, TensorId>,
    params: Vec<(String, ParamSlot)>,
    pub input: TensorId,
    pub labels: TensorId,
    pub logits: TensorId,
    loss: LossTensors,
    pub train_metrics: TensorId,
    pub eval_metrics: TensorId,
    /// The loss scaler's words (`ops::scaler`): scale 1 at f32.
    pub scaler: TensorId,
    pub precision: Precision,
    pub learning_rate: LearningRateBuffer,
    /// The kernels of every conv, in network order.
    pub conv_choices: Vec<ConvChoice>,
    /// How each batch norm's channel reductions and the loss's batch sum end
    /// (layer, reduction, how it was chosen).
    pub reductions: Vec<(String, Reduction, ChoiceSource)>,
    /// Why newly measured kernel choices could not be cached (the plan runs
    /// them all the same).
    pub choice_cache_error: Option<String>,
}

/// The built tensors of one conv (+ bias) + norm unit: x -> c (conv output)
/// -> y (normalized, activated).
struct Unit {
    conv: Conv2d,
    weight: ParamSlot,
    bias: Option<(Bias, ParamSlot)>,
    norm: NormLayer,
    x: TensorId,
    c: TensorId,
    y: TensorId,
}

enum BuiltShortcut {
    Identity,
    Pad(PadShortcut),
    Projection(Unit),
}

/// Global average pool and the classifier.
struct Head {
    pool: Pool,
    fc: Linear,
    weight: ParamSlot,
    bias: ParamSlot,
    pooled: TensorId,
}

/// The loss's tensors besides its metrics accumulator (the train and eval
/// losses differ only in that).
#[derive(Clone, Copy)]
struct LossTensors {
    /// How the batch sum of the metrics ends.
    reduction: Reduction,
    logits: TensorId,
    labels: TensorId,
    grad_logits: TensorId,
    sample_loss: TensorId,
    sample_correct: TensorId,
    scaler: TensorId,
}

impl LossTensors {
    /// Softmax cross-entropy dispatches accumulating into `metrics`, counting
    /// the first `valid` samples.
    fn dispatches(
        &self,
        ctx: &GpuContext,
        t: &[Tensor],
        metrics: TensorId,
        label: &str,
        valid: usize,
    ) -> Result<Vec<Dispatch>, GpuError> {
        let ce = CrossEntropyTensors {
            logits: &t[self.logits],
            labels: &t[self.labels],
            grad_logits: &t[self.grad_logits],
            sample_loss: &t[self.sample_loss],
            sample_correct: &t[self.sample_correct],
            metrics: &t[metrics],
            loss_scale: &t[self.scaler],
        };
        loss::softmax_cross_entropy(ctx, label, &ce, valid, self.reduction)
    }
}

struct BuiltBlock {
    input: TensorId,
    units: Vec<Unit>,
    shortcut: BuiltShortcut,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum List {
    Train,
    Eval,
    Backward,
    Optimizer,
    /// Recorded in training and evaluation passes alike (in both lists).
    Both,
}

pub(super) struct Builder<'c> {
    pub(super) ctx: &'c GpuContext,
    batch: usize,
    /// What activations and their gradients are stored as.
    pub(super) act: DType,
    pub(super) tensors: Vec<Tensor>,
    dispatches: Vec<Dispatch>,
    /// Dispatch ids of Train, Eval, Backward and Optimizer, in recording order.
    lists: [Vec<usize>; 4],
    state: HashMap<String, TensorId>,
    params: Vec<(String, ParamSlot)>,
    /// Gradient scratch no longer read by any later dispatch of the backward pass.
    free: Vec<TensorId>,
    conv_choices: Vec<ConvChoice>,
    pub(super) reductions: Vec<(String, Reduction, ChoiceSource)>,
    arena: ParamArena,
}

/// Where the parameters live: values, gradients and momenta each in shared
/// buffers with the same layout (one per chunk of at most one storage
/// binding), every parameter at an offset aligned for binding. Kernels see a
/// parameter as its own buffer (a view), and SGD updates a whole chunk in one
/// dispatch instead of one per parameter (173 fewer dispatches for ResNet-56).
pub struct ParamArena {
    /// Parameter name -> (chunk, byte offset).
    slots: HashMap<String, (usize, u64)>,
    /// Tensor ids of each chunk's values, gradients and momenta.
    chunks: Vec<[TensorId; 3]>,
    /// Under mixed precision, each chunk's f16 copy of the values, at half
    /// the byte offsets (the f32 layout is aligned twice as coarsely).
    copies: Vec<TensorId>,
}

/// Parameter name -> (chunk, byte offset), and each chunk's size in bytes.
pub type ArenaLayout = (HashMap<String, (usize, u64)>, Vec<u64>);

impl ParamArena {
    /// Lays out `network`'s parameters in chunks of at most `limit` bytes
    /// (a parameter larger than that gets a chunk of its own), each at a
    /// multiple of `align` bytes.
    pub fn layout(network: &Network, align: u64, limit: u64) -> ArenaLayout {
        let mut slots = HashMap::new();
        let mut sizes = vec![0u64];
        for entry in network.state_entries() {
            if !entry.role.is_parameter() {
                continue;
            }
            let bytes = (4 * entry.shape.iter().product::<usize>() as u64).max(4);
            let padded = bytes.div_ceil(align) * align;
            let last = sizes.len() - 1;
            if sizes[last] > 0 && sizes[last] + padded > limit {
                sizes.push(0);
            }
            let chunk = sizes.len() - 1;
            slots.insert(entry.name, (chunk, sizes[chunk]));
            sizes[chunk] += padded;
        }
        (slots, sizes)
    }
}

impl Plan {
    /// Allocates the plan `req` asks for. When the adapter runs out of
    /// memory, the error says so with the largest batch that fits (found by
    /// trying smaller plans), instead of wgpu's panic.
    pub fn new(ctx: &GpuContext, req: PlanRequest<'_>) -> Result<Self, GpuError> {
        let (batch, image) = (req.batch, req.image);
        check_batch_fits(ctx, req.network, batch, image)?;
        let what = match Self::build_checked(ctx, req) {
            Err(GpuError::OutOfMemory { what, .. }) => what,
            Ok(plan) => match ctx.memory_budget() {
                Some(budget) if plan.summary().total_bytes > budget => format!(
                    "the training plan at batch {batch} ({:.0} MiB, more than the {:.0} MiB \
                     available: host memory on a CPU adapter, capped by RESNET_WGPU_MEMORY_LIMIT_MIB)",
                    mib(plan.summary().total_bytes),
                    mib(budget)
                ),
                _ => return Ok(plan),
            },
            Err(e) => return Err(e),
        };
        #[cfg(not(target_arch = "wasm32"))]
        let max_batch = largest_batch_that_fits(ctx, req);
        // A browser cannot wait for smaller plans to be freed between tries.
        #[cfg(target_arch = "wasm32")]
        let max_batch = None;
        Err(GpuError::OutOfMemory { what, max_batch })
    }

    /// `build` inside out-of-memory and validation error scopes (an
    /// allocation that fails makes later bind groups invalid too).
    fn build_checked(ctx: &GpuContext, req: PlanRequest<'_>) -> Result<Self, GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let (batch, image) = (req.batch, req.image);
            let validation = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let built = Self::build(ctx, req);
            let out_of_memory = pollster::block_on(oom.pop());
            let invalid = pollster::block_on(validation.pop());
            if out_of_memory.is_some() {
                return Err(GpuError::OutOfMemory {
                    what: format!(
                        "the training plan at batch {batch} on {}x{} images",
                        image.height, image.width
                    ),
                    max_batch: None,
                });
            }
            let plan = built?;
            if let Some(error) = invalid {
                return Err(GpuError::Validation {
                    what: "the training plan".into(),
                    message: error.to_string(),
                });
            }
            Ok(plan)
        }
        #[cfg(target_arch = "wasm32")]
        Self::build(ctx, req)
    }

    fn build(ctx: &GpuContext, req: PlanRequest<'_>) -> Result<Self, GpuError> {
        let PlanRequest {
            network,
            batch,
            image,
            sgd,
            tuning,
            precision,
        } = req;
        let mut b = Builder {
            ctx,
            batch,
            act: precision.dtype(),
            tensors: vec![],
            dispatches: vec![],
            lists: Default::default(),
            state: HashMap::new(),
            params: vec![],
            free: vec![],
            conv_choices: vec![],
            reductions: vec![],
            arena: ParamArena {
                slots: HashMap::new(),
                chunks: vec![],
                copies: vec![],
            },
        };
        b.allocate_arena(network)?;
        b.record_weight_copies()?;
        let input = b.activation("input", &[batch, image.channels, image.height, image.width])?;
        let labels = b.typed_tensor("labels", &[batch], DType::U32)?;
        let (hw, mut x) = (image.height, input);
        let stem = b.unit(
            &network.stem,
            x,
            (hw, image.width),
            Fusion::Relu,
            None,
            tuning,
        )?;
        x = stem.y;
        let mut pool = None;
        if network.stem_max_pool {
            let (p, y) = b.max_pool(x)?;
            pool = Some(p);
            x = y;
        }
        let mut blocks = vec![];
        for spec in &network.blocks {
            let block = b.block(spec, x, tuning)?;
            x = block.units.last().expect("blocks have units").y;
            blocks.push(block);
        }
        let (head, logits) = b.head(network, x)?;
        let (reduction, source) = choose_loss_reduction(ctx, batch);
        b.reductions.push(("loss".into(), reduction, source));
        let scale = match precision {
            Precision::F32 => 1.0,
            Precision::F16 => LossScaling::default().init_scale,
        };
        let scaler = b.tensors.len();
        b.tensors.push(Tensor::from_u32(
            ctx,
            "loss scaler",
            &[SCALER_WORDS],
            &scaler::initial_words(scale),
        )?);
        let loss_tensors = LossTensors {
            scaler,
            reduction,
            logits,
            labels,
            grad_logits: b.tensor("grad logits", &[batch, network.num_classes])?,
            sample_loss: b.tensor("sample loss", &[batch])?,
            sample_correct: b.tensor("sample correct", &[2, batch])?,
        };
        let train_metrics = b.tensor("train metrics", &[METRICS_LEN])?;
        let eval_metrics = b.tensor("eval metrics", &[METRICS_LEN])?;
        let loss = loss_tensors.dispatches(ctx, &b.tensors, train_metrics, "train loss", batch)?;
        let train_loss: Vec<usize> = loss.into_iter().map(|d| b.add_dispatch(d)).collect();
        let grad_logits = loss_tensors.grad_logits;

        // Backward, output to input.
        let mut dy = b.head_backward(&head, x, grad_logits)?;
        for block in blocks.iter().rev() {
            dy = b.block_backward(block, dy)?;
        }
        if let Some((pool, argmax)) = &pool {
            dy = b.max_pool_backward(pool, *argmax, stem.y, dy)?;
        }
        b.unit_backward(&stem, dy, false)?;

        let learning_rate = LearningRateBuffer::new(ctx, 0.0);
        b.record_optimizer(sgd, &learning_rate, scaler, train_metrics)?;
        let [forward_train, forward_eval, backward, optimizer] = b.lists;
        #[cfg(not(target_arch = "wasm32"))]
        let choice_cache_error = ctx.save_kernel_choices().err().map(|e| {
            let path = ctx.choices.lock().unwrap().path.clone();
            format!("cannot write the kernel-choice cache {path:?}: {e}")
        });
        #[cfg(target_arch = "wasm32")]
        let choice_cache_error = None;
        Ok(Plan {
            network: network.clone(),
            batch,
            image,
            forward_train,
            forward_eval,
            train_loss,
            backward,
            optimizer,
            tensors: b.tensors,
            dispatches: b.dispatches,
            state: b.state,
            params: b.params,
            input,
            labels,
            logits,
            loss: loss_tensors,
            train_metrics,
            eval_metrics,
            scaler,
            precision,
            learning_rate,
            conv_choices: b.conv_choices,
            reductions: b.reductions,
            choice_cache_error,
        })
    }

    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id]
    }

    /// The tensor of a state-dict entry (None for `num_batches_tracked`, which
    /// the trainer counts on the CPU).
    pub fn state_tensor(&self, name: &str) -> Option<&Tensor> {
        self.state.get(name).map(|&id| &self.tensors[id])
    }

    pub fn state_entries(&self) -> Vec<StateEntry> {
        self.network.state_entries()
    }

    /// Parameters in SGD order with their gradient and momentum tensors.
    pub fn params(&self) -> impl Iterator<Item = (&str, &Tensor, &Tensor, &Tensor)> {
        self.params.iter().map(|(name, s)| {
            let t = &self.tensors;
            (name.as_str(), &t[s.value], &t[s.grad], &t[s.momentum])
        })
    }

    /// augment (given) -> forward -> loss -> backward -> SGD, into one pass.
    pub fn record_train_step(&self, pass: &mut wgpu::ComputePass<'_>) {
        for list in [
            &self.forward_train,
            &self.train_loss,
            &self.backward,
            &self.optimizer,
        ] {
            for &i in list {
                self.dispatches[i].record(pass);
            }
        }
    }

    /// The dispatches of a training step in order (for profiling).
    pub fn step_dispatches(&self) -> Vec<&Dispatch> {
        [
            &self.forward_train,
            &self.train_loss,
            &self.backward,
            &self.optimizer,
        ]
        .into_iter()
        .flatten()
        .map(|&i| &self.dispatches[i])
        .collect()
    }

    /// Forward with running statistics, then `loss` (from `eval_loss`).
    pub fn record_eval_batch(&self, pass: &mut wgpu::ComputePass<'_>, loss: &[Dispatch]) {
        for &i in &self.forward_eval {
            self.dispatches[i].record(pass);
        }
        for d in loss {
            d.record(pass);
        }
    }

    /// Loss dispatches accumulating into `eval_metrics`, counting only the first
    /// `valid` samples of the batch (a last, partial evaluation batch).
    pub fn eval_loss(&self, ctx: &GpuContext, valid: usize) -> Result<Vec<Dispatch>, GpuError> {
        self.loss
            .dispatches(ctx, &self.tensors, self.eval_metrics, "eval loss", valid)
    }

    /// One line per distinct conv (shape and kernels, with the first layer of
    /// that kind and how many there are): which candidate runs each pass and
    /// how it was chosen.
    pub fn conv_choice_lines(&self) -> Vec<String> {
        let mut groups: Vec<(&ConvChoice, usize)> = vec![];
        for c in &self.conv_choices {
            match groups
                .iter_mut()
                .find(|(g, _)| g.shape == c.shape && g.kernels == c.kernels)
            {
                Some(group) => group.1 += 1,
                None => groups.push((c, 1)),
            }
        }
        groups
            .into_iter()
            .map(|(c, count)| {
                let s = &c.shape;
                let passes: Vec<String> = crate::ops::conv::ConvPass::ALL
                    .iter()
                    .zip(c.sources)
                    .map(|(&pass, source)| {
                        format!(
                            "{} {} ({})",
                            pass.name(),
                            c.kernels.get(pass).name(),
                            source.name()
                        )
                    })
                    .collect();
                format!(
                    "{:<22} x{count:<3} {}x{}x{} -> {} {}x{}/{}: {}",
                    c.layer,
                    s.in_c,
                    s.in_h,
                    s.in_w,
                    s.out_c,
                    s.kernel_h,
                    s.kernel_w,
                    s.stride,
                    passes.join(", ")
                )
            })
            .collect()
    }

    /// One line: how the batch norms' and the loss's reductions end, counted.
    pub fn reduction_line(&self) -> String {
        let mut counts: Vec<(String, usize)> = vec![];
        for (layer, r, source) in &self.reductions {
            let what = if layer == "loss" {
                "loss"
            } else {
                "batch norm"
            };
            let key = format!("{what} {} ({})", r.name(), source.name());
            match counts.iter_mut().find(|(k, _)| *k == key) {
                Some(c) => c.1 += 1,
                None => counts.push((key, 1)),
            }
        }
        let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} x {k}")).collect();
        format!("reductions: {}", parts.join(", "))
    }

    /// How many conv passes had their kernel measured now, taken from the
    /// cache, built in, or taken from the resumed run's record.
    pub fn conv_choice_counts(&self) -> [usize; 4] {
        let mut counts = [0; 4];
        for source in self.conv_choices.iter().flat_map(|c| c.sources) {
            counts[match source {
                ChoiceSource::Measured => 0,
                ChoiceSource::Cached => 1,
                ChoiceSource::BuiltIn => 2,
                ChoiceSource::Run => 3,
            }] += 1;
        }
        counts
    }

    /// GPU FLOPs of the convs in one training step (forward, input gradient
    /// where one is computed, weight gradient): what `bench train` divides by
    /// the step time for its effective GFLOP/s.
    pub fn conv_flops_per_step(&self) -> f64 {
        self.conv_choices
            .iter()
            .enumerate()
            // The stem (first conv) computes no input gradient.
            .map(|(i, c)| c.shape.flops() * if i == 0 { 2.0 } else { 3.0 })
            .sum()
    }

    pub fn summary(&self) -> PlanSummary {
        // Parameter views are counted in their arena chunks.
        let own = || self.tensors.iter().filter(|t| !t.is_view());
        let largest = own()
            .max_by_key(|t| t.size_bytes())
            .expect("a plan has tensors");
        PlanSummary {
            total_bytes: own().map(Tensor::size_bytes).sum(),
            tensors: own().count(),
            largest_bytes: largest.size_bytes(),
            largest_name: largest.label().to_string(),
            dispatches_per_step: self.forward_train.len()
                + self.train_loss.len()
                + self.backward.len()
                + self.optimizer.len(),
        }
    }
}

/// Refuses a batch whose largest activation exceeds one storage binding, and
/// says which batch would fit.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// The largest batch below `failed` whose plan the adapter can allocate
/// (bisection over real allocations, with the built-in kernels so nothing is
/// measured); None when not even batch 1 fits.
#[cfg(not(target_arch = "wasm32"))]
fn largest_batch_that_fits(ctx: &GpuContext, failed: PlanRequest<'_>) -> Option<usize> {
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

fn check_batch_fits(
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

fn conv_shape(spec: &ConvBnSpec, batch: usize, hw: (usize, usize)) -> Conv2dShape {
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

impl Builder<'_> {
    fn typed_tensor(
        &mut self,
        label: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<TensorId, GpuError> {
        self.tensors
            .push(Tensor::zeros(self.ctx, label, shape, dtype)?);
        Ok(self.tensors.len() - 1)
    }

    /// Whether the plan trains in mixed precision (f16 activations).
    fn mixed(&self) -> bool {
        self.act == DType::F16
    }

    /// An f32 tensor (statistics, logits, metrics).
    pub(super) fn tensor(&mut self, label: &str, shape: &[usize]) -> Result<TensorId, GpuError> {
        self.typed_tensor(label, shape, DType::F32)
    }

    /// An activation, stored at the plan's precision.
    pub(super) fn activation(
        &mut self,
        label: &str,
        shape: &[usize],
    ) -> Result<TensorId, GpuError> {
        self.typed_tensor(label, shape, self.act)
    }

    fn add_dispatch(&mut self, d: Dispatch) -> usize {
        self.dispatches.push(d);
        self.dispatches.len() - 1
    }

    pub(super) fn push(&mut self, list: List, d: Dispatch) {
        let id = self.add_dispatch(d);
        if list == List::Both {
            self.lists[List::Train as usize].push(id);
            self.lists[List::Eval as usize].push(id);
        } else {
            self.lists[list as usize].push(id);
        }
    }

    pub(super) fn push_all(&mut self, list: List, ds: Vec<Dispatch>) {
        for d in ds {
            self.push(list, d);
        }
    }

    /// Gradient scratch of an activation of `shape` (at the plan's precision).
    pub(super) fn acquire(&mut self, shape: &[usize]) -> Result<TensorId, GpuError> {
        self.acquire_typed(shape, self.act)
    }

    /// Scratch of `shape` and `dtype`: a released buffer of that kind, else a new one.
    pub(super) fn acquire_typed(
        &mut self,
        shape: &[usize],
        dtype: DType,
    ) -> Result<TensorId, GpuError> {
        if let Some(pos) = self
            .free
            .iter()
            .position(|&id| self.tensors[id].shape() == shape && self.tensors[id].dtype() == dtype)
        {
            return Ok(self.free.swap_remove(pos));
        }
        let label = format!("grad scratch {shape:?} #{}", self.tensors.len());
        self.typed_tensor(&label, shape, dtype)
    }

    /// Returns scratch to the pool once every dispatch that reads it is built;
    /// later dispatches may overwrite it (wgpu orders them with barriers).
    pub(super) fn release(&mut self, id: TensorId) {
        self.free.push(id);
    }

    fn state_tensor(&mut self, name: &str, shape: &[usize]) -> Result<TensorId, GpuError> {
        let id = self.tensor(name, shape)?;
        self.state.insert(name.to_string(), id);
        Ok(id)
    }

    /// The value, gradient and momentum chunks of the parameter arena, and
    /// under mixed precision the f16 copies of the values.
    fn allocate_arena(&mut self, network: &Network) -> Result<(), GpuError> {
        let mut align = u64::from(self.ctx.limits.min_storage_buffer_offset_alignment).max(4);
        let half = self.mixed();
        if half {
            // A copy sits at half its value's offset, which must stay aligned.
            align *= 2;
        }
        let (slots, sizes) = ParamArena::layout(network, align, self.ctx.max_binding_bytes());
        for (i, bytes) in sizes.into_iter().enumerate() {
            let len = (bytes / 4) as usize;
            let mut chunk = [0; 3];
            for (k, kind) in ["values", "gradients", "momenta"].into_iter().enumerate() {
                chunk[k] = self.tensor(&format!("parameter {kind} {i}"), &[len])?;
            }
            self.arena.chunks.push(chunk);
            if half {
                let copy =
                    self.typed_tensor(&format!("parameter copies {i}"), &[len], DType::F16)?;
                self.arena.copies.push(copy);
            }
        }
        self.arena.slots = slots;
        Ok(())
    }

    /// Mixed precision: the f16 weight copies made from the f32 masters at
    /// the start of every forward pass, training and evaluation alike.
    fn record_weight_copies(&mut self) -> Result<(), GpuError> {
        for (i, &copy) in self.arena.copies.clone().iter().enumerate() {
            let value = self.arena.chunks[i][0];
            let t = &self.tensors;
            let label = format!("parameters {i}");
            let d = optim::copy_weights(self.ctx, &label, &t[value], &t[copy])?;
            self.push(List::Both, d);
        }
        Ok(())
    }

    /// SGD over each chunk; under mixed precision (f16 copies) first the
    /// overflow check of every gradient, SGD that unscales and skips a step
    /// that overflowed, then the next loss scale.
    fn record_optimizer(
        &mut self,
        sgd: &SgdConfig,
        learning_rate: &LearningRateBuffer,
        scaler: TensorId,
        train_metrics: TensorId,
    ) -> Result<(), GpuError> {
        let mixed = self.mixed();
        if mixed {
            for (i, [_, grad, _]) in self.arena.chunks.clone().into_iter().enumerate() {
                let t = &self.tensors;
                let label = format!("parameters {i}");
                let d = scaler::check_finite(self.ctx, &label, &t[grad], &t[scaler])?;
                self.push(List::Optimizer, d);
            }
        }
        for (i, [value, grad, momentum]) in self.arena.chunks.clone().into_iter().enumerate() {
            let t = &self.tensors;
            let label = format!("parameters {i}");
            let scaled = mixed.then(|| &t[scaler]);
            let d = sgd_step(
                self.ctx,
                &label,
                sgd,
                learning_rate,
                &t[value],
                &t[grad],
                &t[momentum],
                scaled,
            )?;
            self.push(List::Optimizer, d);
        }
        if mixed {
            let t = &self.tensors;
            let scaling = LossScaling::default();
            let d = scaler::update_scale(self.ctx, &scaling, &t[scaler], &t[train_metrics])?;
            self.push(List::Optimizer, d);
        }
        Ok(())
    }

    /// A view of `which` (0 values, 1 gradients, 2 momenta, 3 the f16
    /// copies) of the arena.
    fn arena_view(
        &mut self,
        name: &str,
        which: usize,
        label: &str,
        shape: &[usize],
    ) -> Result<TensorId, GpuError> {
        let &(chunk, offset) = self.arena.slots.get(name).ok_or_else(|| {
            GpuError::shape(
                name,
                "not a parameter of the network the plan was laid out for",
            )
        })?;
        let (base, offset) = match which {
            3 => (self.arena.copies[chunk], offset / 2),
            _ => (self.arena.chunks[chunk][which], offset),
        };
        let view = Tensor::view(self.ctx, &self.tensors[base], offset, label, shape)?;
        self.tensors.push(view);
        Ok(self.tensors.len() - 1)
    }

    /// A parameter's views; `matrix` parameters (conv and fc weights) are
    /// read by their kernels at the plan's precision, the others in f32.
    fn param(&mut self, name: &str, shape: &[usize], matrix: bool) -> Result<ParamSlot, GpuError> {
        let value = self.arena_view(name, 0, name, shape)?;
        let read = if matrix && self.mixed() {
            self.arena_view(name, 3, &format!("{name} f16"), shape)?
        } else {
            value
        };
        let slot = ParamSlot {
            value,
            grad: self.arena_view(name, 1, &format!("{name} grad"), shape)?,
            momentum: self.arena_view(name, 2, &format!("{name} momentum"), shape)?,
            read,
        };
        self.state.insert(name.to_string(), slot.value);
        self.params.push((name.to_string(), slot));
        Ok(slot)
    }

    /// conv (+ bias) -> norm (with `fusion`), forward dispatches recorded.
    /// Its parameters and statistics are the spec's state-dict entries.
    fn unit(
        &mut self,
        spec: &ConvBnSpec,
        x: TensorId,
        hw: (usize, usize),
        fusion: Fusion,
        residual: Option<TensorId>,
        tuning: ConvTuning,
    ) -> Result<Unit, GpuError> {
        let shape = conv_shape(spec, self.batch, hw);
        let (conv, sources) =
            choose_conv_kernels(self.ctx, Conv2d::new(&spec.conv, shape, tuning)?, self.act)?;
        self.conv_choices.push(ConvChoice {
            layer: spec.conv.clone(),
            shape,
            kernels: conv.kernels,
            sources,
        });
        let (mut weight, mut bias, mut gamma, mut beta) = (None, None, None, None);
        let (mut running_mean, mut running_var) = (None, None);
        for e in spec.state_entries() {
            match e.role {
                TensorRole::ConvWeight => weight = Some(self.param(&e.name, &e.shape, true)?),
                TensorRole::ConvBias => bias = Some(self.param(&e.name, &e.shape, false)?),
                TensorRole::NormWeight => gamma = Some(self.param(&e.name, &e.shape, false)?),
                TensorRole::NormBias => beta = Some(self.param(&e.name, &e.shape, false)?),
                TensorRole::RunningMean => {
                    running_mean = Some(self.state_tensor(&e.name, &e.shape)?)
                }
                TensorRole::RunningVar => running_var = Some(self.state_tensor(&e.name, &e.shape)?),
                // Counted on the CPU by the trainer.
                TensorRole::BatchesTracked => {}
                TensorRole::FcWeight | TensorRole::FcBias => {}
            }
        }
        let missing = |what| GpuError::shape(&spec.conv, format!("the unit has no {what}"));
        let weight = weight.ok_or_else(|| missing("conv weight"))?;
        let out = shape.output_shape();
        let c = self.activation(&format!("{} output", spec.conv), &out)?;
        let y = self.activation(&format!("{} output", spec.bn), &out)?;
        let t = &self.tensors;
        let fwd = conv.forward(self.ctx, &t[x], &t[weight.read], &t[c])?;
        self.push(List::Both, fwd);
        let bias = match bias {
            Some(slot) => {
                let op = Bias::new(
                    &format!("{} bias", spec.conv),
                    BatchNormShape {
                        batch: self.batch,
                        channels: spec.out_c,
                        hw: out[2] * out[3],
                    },
                );
                let d = op.forward(self.ctx, &self.tensors[slot.value], &self.tensors[c])?;
                self.push(List::Both, d);
                Some((op, slot))
            }
            None => None,
        };
        let state = NormState {
            gamma: gamma.ok_or_else(|| missing("norm weight"))?,
            beta: beta.ok_or_else(|| missing("norm bias"))?,
            running: running_mean.zip(running_var),
        };
        let io = NormIo { c, y, residual };
        let norm = NormLayer::build(self, spec, state, fusion, io)?;
        Ok(Unit {
            conv,
            weight,
            bias,
            norm,
            x,
            c,
            y,
        })
    }

    fn hw_of(&self, id: TensorId) -> (usize, usize) {
        let s = self.tensors[id].shape();
        (s[2], s[3])
    }

    fn block(
        &mut self,
        spec: &BlockSpec,
        x: TensorId,
        tuning: ConvTuning,
    ) -> Result<BuiltBlock, GpuError> {
        let hw = self.hw_of(x);
        let (shortcut, residual) = match &spec.shortcut {
            Shortcut::Identity => (BuiltShortcut::Identity, x),
            Shortcut::PadChannels {
                in_c,
                out_c,
                stride,
            } => {
                let sc = PadShortcut::new(
                    &format!("{} shortcut", spec.name),
                    shapes_shortcut(self.batch, *in_c, hw, *out_c, *stride),
                )?;
                let r = self.activation(
                    &format!("{} shortcut output", spec.name),
                    &sc.output_shape(),
                )?;
                let d = sc.forward(self.ctx, &self.tensors[x], &self.tensors[r])?;
                self.push(List::Both, d);
                (BuiltShortcut::Pad(sc), r)
            }
            Shortcut::Projection(p) => {
                let unit = self.unit(p, x, hw, Fusion::None, None, tuning)?;
                let r = unit.y;
                (BuiltShortcut::Projection(unit), r)
            }
        };
        let mut units = vec![];
        let mut h = x;
        for (i, u) in spec.units.iter().enumerate() {
            let last = i + 1 == spec.units.len();
            let (fusion, res) = if last {
                (Fusion::AddRelu, Some(residual))
            } else {
                (Fusion::Relu, None)
            };
            let hw = self.hw_of(h);
            let unit = self.unit(u, h, hw, fusion, res, tuning)?;
            h = unit.y;
            units.push(unit);
        }
        Ok(BuiltBlock {
            input: x,
            units,
            shortcut,
        })
    }

    fn max_pool(&mut self, x: TensorId) -> Result<((Pool, TensorId), TensorId), GpuError> {
        let s = self.tensors[x].shape().to_vec();
        let pool = Pool::new(
            "maxpool",
            PoolShape {
                batch: s[0],
                channels: s[1],
                in_h: s[2],
                in_w: s[3],
                kernel: 3,
                stride: 2,
                pad: 1,
            },
        )?;
        let out = pool.max_output_shape();
        let y = self.activation("maxpool output", &out)?;
        let argmax = self.typed_tensor("maxpool argmax", &out, DType::U32)?;
        let t = &self.tensors;
        let d = pool.max_forward(self.ctx, &t[x], &t[y], &t[argmax])?;
        self.push(List::Both, d);
        Ok(((pool, argmax), y))
    }

    fn max_pool_backward(
        &mut self,
        pool: &Pool,
        argmax: TensorId,
        x: TensorId,
        dy: TensorId,
    ) -> Result<TensorId, GpuError> {
        let dx = self.acquire(&self.tensors[x].shape().to_vec())?;
        let t = &self.tensors;
        let d = pool.max_backward(self.ctx, &t[dy], &t[argmax], &t[dx])?;
        self.push(List::Backward, d);
        self.release(dy);
        Ok(dx)
    }

    /// Global average pool and fc; returns the head and the logits tensor.
    fn head(&mut self, network: &Network, x: TensorId) -> Result<(Head, TensorId), GpuError> {
        let s = self.tensors[x].shape().to_vec();
        let gap = Pool::global_average("avgpool", s[0], s[1], s[2], s[3])?;
        let pooled = self.activation("avgpool output", &[s[0], s[1]])?;
        let fc = Linear::new(
            "fc",
            LinearShape {
                batch: self.batch,
                in_f: network.features,
                out_f: network.num_classes,
            },
        );
        let w = self.param("fc.weight", &[network.num_classes, network.features], true)?;
        let bias = self.param("fc.bias", &[network.num_classes], false)?;
        let logits = self.tensor("logits", &[self.batch, network.num_classes])?;
        let t = &self.tensors;
        let d1 = gap.global_avg_forward(self.ctx, &t[x], &t[pooled])?;
        let d2 = fc.forward(self.ctx, &t[pooled], &t[w.read], &t[bias.value], &t[logits])?;
        self.push(List::Both, d1);
        self.push(List::Both, d2);
        let head = Head {
            pool: gap,
            fc,
            weight: w,
            bias,
            pooled,
        };
        Ok((head, logits))
    }

    fn head_backward(
        &mut self,
        head: &Head,
        features: TensorId,
        grad_logits: TensorId,
    ) -> Result<TensorId, GpuError> {
        let Head {
            pool: gap,
            fc,
            weight: w,
            bias,
            pooled,
        } = head;
        let dpooled = self.acquire(&self.tensors[*pooled].shape().to_vec())?;
        let t = &self.tensors;
        let ds = fc.backward(
            self.ctx,
            &t[*pooled],
            &t[w.read],
            &t[grad_logits],
            &t[dpooled],
            &t[w.grad],
            &t[bias.grad],
        )?;
        self.push_all(List::Backward, ds);
        let dfeatures = self.acquire(&self.tensors[features].shape().to_vec())?;
        let t = &self.tensors;
        let d = gap.global_avg_backward(self.ctx, &t[dpooled], &t[dfeatures])?;
        self.push(List::Backward, d);
        self.release(dpooled);
        Ok(dfeatures)
    }

    /// Gradients of one unit from dy (the gradient of its output, released
    /// here); returns the gradient of its input (when asked) and, for the
    /// AddRelu form, of its residual.
    fn unit_backward(
        &mut self,
        unit: &Unit,
        dy: TensorId,
        need_dx: bool,
    ) -> Result<(Option<TensorId>, Option<TensorId>), GpuError> {
        let out_shape = self.tensors[unit.c].shape().to_vec();
        let dc = self.acquire(&out_shape)?;
        let dres = match unit.norm.fusion() {
            Fusion::AddRelu => Some(self.acquire(&out_shape)?),
            _ => None,
        };
        let io = NormIo {
            c: unit.c,
            y: unit.y,
            residual: None,
        };
        unit.norm.record_backward(self, io, dy, dc, dres)?;
        let t = &self.tensors;
        if let Some((op, slot)) = &unit.bias {
            let d = op.backward(self.ctx, &t[dc], &t[slot.grad])?;
            self.push(List::Backward, d);
        }
        let t = &self.tensors;
        let dw = unit
            .conv
            .backward_weight(self.ctx, &t[unit.x], &t[dc], &t[unit.weight.grad])?;
        self.push_all(List::Backward, dw);
        self.release(dy);
        let dx = if need_dx {
            let dx = self.acquire(&self.tensors[unit.x].shape().to_vec())?;
            let t = &self.tensors;
            let d = unit
                .conv
                .backward_input(self.ctx, &t[dc], &t[unit.weight.read], &t[dx])?;
            self.push(List::Backward, d);
            Some(dx)
        } else {
            None
        };
        self.release(dc);
        Ok((dx, dres))
    }

    fn block_backward(&mut self, block: &BuiltBlock, dout: TensorId) -> Result<TensorId, GpuError> {
        let mut dy = dout;
        let mut dres = None;
        for unit in block.units.iter().rev() {
            let (dx, r) = self.unit_backward(unit, dy, true)?;
            dres = dres.or(r);
            dy = dx.expect("asked for dx");
        }
        let dres = dres.expect("the last unit adds the residual");
        let dskip = match &block.shortcut {
            BuiltShortcut::Identity => dres,
            BuiltShortcut::Pad(sc) => {
                let dx = self.acquire(&self.tensors[block.input].shape().to_vec())?;
                let d = sc.backward(self.ctx, &self.tensors[dres], &self.tensors[dx])?;
                self.push(List::Backward, d);
                self.release(dres);
                dx
            }
            BuiltShortcut::Projection(unit) => self
                .unit_backward(unit, dres, true)?
                .0
                .expect("asked for dx"),
        };
        let dx = self.acquire(&self.tensors[block.input].shape().to_vec())?;
        let t = &self.tensors;
        let label = "residual gradient sum";
        let d = elementwise::add(self.ctx, label, &t[dy], &t[dskip], &t[dx])?;
        self.push(List::Backward, d);
        self.release(dy);
        self.release(dskip);
        Ok(dx)
    }
}

fn shapes_shortcut(
    batch: usize,
    in_c: usize,
    hw: (usize, usize),
    out_c: usize,
    stride: usize,
) -> crate::shapes::ShortcutShape {
    crate::shapes::ShortcutShape {
        batch,
        in_c,
        in_h: hw.0,
        in_w: hw.1,
        out_c,
        stride,
    }
}
