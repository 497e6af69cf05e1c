//! The memory plan: every tensor a training step touches (parameters, gradients,
//! momenta, saved activations, gradient scratch) allocated once for a model and
//! batch size, and every dispatch of the step prepared once. Recording a step is
//! then a walk over prepared dispatch lists.
//!
//! `Builder` (builder.rs) allocates tensors and files dispatches into the
//! step's lists; each layer kind is built in its own file with its tensors,
//! its forward and its backward side by side: `unit` (conv + bias + norm,
//! with `norm` for the norm slot), `block` (residual blocks and their
//! shortcuts), `pool` (the stem's max pool) and `head` (average pool, fc and
//! the loss). `arena` holds the parameters; `fit` checks that a batch fits.

use std::collections::HashMap;

use crate::gpu::{ChoiceSource, DType, Dispatch, GpuContext, GpuError, Precision, Tensor};
use crate::model::{Network, StateEntry};
use crate::ops::Reduction;
use crate::ops::conv::ConvKernels;
use crate::ops::conv::ConvTuning;
use crate::ops::loss::METRICS_LEN;
use crate::ops::optim::LearningRateBuffer;
use crate::ops::scaler::{self, LossScaling, SCALER_WORDS};
use crate::ops::tune::choose_loss_reduction;
use crate::shapes::{Conv2dShape, Fusion, ImageShape, SgdConfig};

mod arena;
mod block;
mod builder;
mod fit;
mod head;
mod norm;
mod params;
mod pool;
mod unit;

pub use arena::{ArenaLayout, ParamArena, ParamSlot};
use builder::Builder;
use fit::check_batch_fits;
pub use fit::conv_layers;
#[cfg(not(target_arch = "wasm32"))]
use fit::largest_batch_that_fits;
use head::LossTensors;

pub type TensorId = usize;

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
    /// The parameter arena's chunks: (values, gradients) of each, which
    /// data parallelism reads back and averages whole.
    chunks: Vec<(TensorId, TensorId)>,
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
        let mut b = Builder::new(ctx, batch, precision);
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
            chunks: b.arena.chunk_buffers(),
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
    /// augment (given) -> forward -> loss -> backward, without SGD: a step
    /// of several processes averages the gradients between the two.
    pub fn record_forward_backward(&self, pass: &mut wgpu::ComputePass<'_>) {
        for list in [&self.forward_train, &self.train_loss, &self.backward] {
            for &i in list {
                self.dispatches[i].record(pass);
            }
        }
    }

    /// The SGD update (and under mixed precision the loss scale's checks).
    pub fn record_optimizer(&self, pass: &mut wgpu::ComputePass<'_>) {
        for &i in &self.optimizer {
            self.dispatches[i].record(pass);
        }
    }

    /// Each arena chunk's gradients, in chunk order.
    pub fn gradient_chunks(&self) -> impl Iterator<Item = &Tensor> {
        self.chunks.iter().map(|&(_, grads)| &self.tensors[grads])
    }

    /// Each arena chunk's parameter values, in chunk order.
    pub fn value_chunks(&self) -> impl Iterator<Item = &Tensor> {
        self.chunks.iter().map(|&(values, _)| &self.tensors[values])
    }

    pub fn record_train_step(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.record_forward_backward(pass);
        self.record_optimizer(pass);
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

/// MiB, for messages.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}
