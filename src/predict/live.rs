//! Predicting without blocking: one small evaluation plan per model (built
//! once, refilled per picture), its weights loaded from a file or copied on
//! the GPU from a running trainer, its logits mapped back asynchronously.
//! The browser predicts dropped pictures and camera frames with it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, bail};

use super::{ClassProbability, ModelCard, most_likely, prediction_trainer};
use crate::data::prepare_rgba;
use crate::gpu::{self, GpuContext, MapState, Mapping, Precision};
use crate::train::checkpoint::{self, LoadMode, StateDict};
use crate::train::trainer::MIN_EVAL_BATCH;
use crate::train::{TrainEvent, Trainer};

/// Classes reported per picture.
pub const TOP: usize = 5;

pub struct Predictor {
    pub card: ModelCard,
    trainer: Trainer,
    /// The logits of the picture being predicted, on their way back.
    pending: Option<Mapping>,
}

impl Predictor {
    /// An evaluation plan for `card`'s model; give it weights with `load`
    /// or `copy_weights` before predicting.
    pub fn new(ctx: Arc<GpuContext>, card: ModelCard, precision: Precision) -> Result<Self> {
        // The smallest evaluation batch (batch norm's statistics need two
        // values); the picture is in it twice.
        let batch = MIN_EVAL_BATCH;
        let images = vec![0; batch * 3 * card.side * card.side];
        let trainer = prediction_trainer(ctx, &card, images, batch, precision)?;
        Ok(Predictor {
            card,
            trainer,
            pending: None,
        })
    }

    /// A model file's weights, every tensor checked as `eval` checks them.
    pub fn load(&mut self, dict: &StateDict, path: &Path) -> Result<()> {
        checkpoint::load_model(&mut self.trainer, dict, path, LoadMode::Strict)?;
        Ok(())
    }

    /// The weights of `from` (a trainer of the same model and precision) as
    /// they are after its steps submitted so far: GPU copies, no readback.
    pub fn copy_weights(&mut self, from: &Trainer) -> Result<()> {
        let (source, target) = (from.plan(), self.trainer.plan());
        if from.config.model != self.card.spec
            || from.config.precision != self.trainer.config.precision
        {
            bail!("the predictor was built for another model or precision");
        }
        let ctx = self.trainer.ctx();
        let mut encoder = gpu::encoder(ctx, "predictor weights");
        for e in target.state_entries() {
            let (Some(s), Some(t)) = (source.state_tensor(&e.name), target.state_tensor(&e.name))
            else {
                continue; // num_batches_tracked: the CPU's, unused by evaluation
            };
            if s.size_bytes() != t.size_bytes() || s.dtype() != t.dtype() {
                bail!("'{}' differs between the trainer and the predictor", e.name);
            }
            encoder.copy_buffer_to_buffer(
                s.buffer(),
                s.offset(),
                t.buffer(),
                t.offset(),
                t.size_bytes(),
            );
        }
        ctx.queue.submit([encoder.finish()]);
        Ok(())
    }

    pub fn precision(&self) -> Precision {
        self.trainer.config.precision
    }

    /// Whether a prediction is on its way back.
    pub fn is_busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Starts predicting an RGBA picture (`width` x `height`, rows top to
    /// bottom), prepared as the model's evaluation prepared pictures. One
    /// at a time: `poll` until it returns the classes.
    pub fn submit(&mut self, rgba: &[u8], width: u32, height: u32) -> Result<()> {
        if self.pending.is_some() {
            bail!("a prediction is still on its way back");
        }
        let picture = prepare_rgba(rgba, width, height, self.card.side, self.card.eval_crop)
            .map_err(anyhow::Error::msg)?;
        self.trainer
            .set_eval_images(&picture.repeat(MIN_EVAL_BATCH))?;
        self.trainer.submit_eval();
        let plan = self.trainer.plan();
        let logits = plan.tensor(plan.logits);
        let ctx = self.trainer.ctx();
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("prediction logits"),
            size: logits.size_bytes(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = gpu::encoder(ctx, "prediction logits");
        encoder.copy_buffer_to_buffer(
            logits.buffer(),
            logits.offset(),
            &staging,
            0,
            logits.size_bytes(),
        );
        ctx.queue.submit([encoder.finish()]);
        self.pending = Some(Mapping::request(staging, "prediction logits"));
        Ok(())
    }

    /// The picture's most likely classes once its logits are back; None
    /// before (never blocks).
    pub fn poll(&mut self) -> Result<Option<Vec<ClassProbability>>> {
        for event in self.trainer.poll()? {
            if let TrainEvent::Diverged { .. } = event {
                self.pending = None;
                bail!("the model does not compute finite outputs on this picture");
            }
        }
        let ready = self
            .pending
            .as_ref()
            .is_some_and(|m| m.state() != MapState::Pending);
        if !ready {
            return Ok(None);
        }
        let mapping = self.pending.take().expect("checked above");
        let plan = self.trainer.plan();
        let logits = plan.tensor(plan.logits);
        let classes = self.card.spec.num_classes;
        let (row, _) = mapping.read(|b| gpu::f32_values(b, logits.dtype(), classes))?;
        Ok(Some(most_likely(&row, &self.card.class_names, TOP)))
    }

    /// Blocks until the prediction is back (native: tests and tools).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&mut self) -> Result<Vec<ClassProbability>> {
        loop {
            if let Some(top) = self.poll()? {
                return Ok(top);
            }
            self.trainer.ctx().wait_idle()?;
        }
    }
}
