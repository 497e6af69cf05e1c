//! The plan's parameters: the arena's chunks allocated, each parameter's
//! views into them, and the dispatches over whole chunks (the f16 weight
//! copies, the overflow check, SGD and the loss scale's update).

use crate::gpu::{DType, GpuError, Tensor};
use crate::model::Network;
use crate::ops::optim::{self, LearningRateBuffer, sgd_step};
use crate::ops::scaler::{self, LossScaling};
use crate::shapes::SgdConfig;

use super::TensorId;
use super::arena::{ArenaPart, Chunk, ParamArena, ParamRead, ParamSlot};
use super::builder::{Builder, List};

impl Builder<'_> {
    /// The value, gradient and momentum chunks of the parameter arena, and
    /// under mixed precision the f16 copies of the values.
    pub(super) fn allocate_arena(&mut self, network: &Network) -> Result<(), GpuError> {
        let mut align = u64::from(self.ctx.limits.min_storage_buffer_offset_alignment).max(4);
        let half = self.mixed();
        if half {
            // A copy sits at half its value's offset, which must stay aligned.
            align *= 2;
        }
        let (slots, sizes) = ParamArena::layout(network, align, self.ctx.max_binding_bytes());
        for (i, bytes) in sizes.into_iter().enumerate() {
            let len = (bytes / 4) as usize;
            let chunk = Chunk {
                values: self.tensor(&format!("parameter values {i}"), &[len])?,
                gradients: self.tensor(&format!("parameter gradients {i}"), &[len])?,
                momenta: self.tensor(&format!("parameter momenta {i}"), &[len])?,
                copies: match half {
                    true => {
                        let label = format!("parameter copies {i}");
                        Some(self.typed_tensor(&label, &[len], DType::F16)?)
                    }
                    false => None,
                },
            };
            self.arena.chunks.push(chunk);
        }
        self.arena.slots = slots;
        Ok(())
    }

    /// Mixed precision: the f16 weight copies made from the f32 masters at
    /// the start of every forward pass, training and evaluation alike.
    pub(super) fn record_weight_copies(&mut self) -> Result<(), GpuError> {
        for (i, chunk) in self.arena.chunks.clone().into_iter().enumerate() {
            let Some(copy) = chunk.copies else { continue };
            let (t, value) = (&self.tensors, chunk.values);
            let label = format!("parameters {i}");
            let d = optim::copy_weights(self.ctx, &label, &t[value], &t[copy])?;
            self.push(List::Both, d);
        }
        Ok(())
    }

    /// SGD over each chunk; under mixed precision (f16 copies) first the
    /// overflow check of every gradient, SGD that unscales and skips a step
    /// that overflowed, then the next loss scale.
    pub(super) fn record_optimizer(
        &mut self,
        sgd: &SgdConfig,
        learning_rate: &LearningRateBuffer,
        scaler: TensorId,
        train_metrics: TensorId,
    ) -> Result<(), GpuError> {
        let mixed = self.mixed();
        if mixed {
            for (i, chunk) in self.arena.chunks.clone().into_iter().enumerate() {
                let t = &self.tensors;
                let label = format!("parameters {i}");
                let d = scaler::check_finite(self.ctx, &label, &t[chunk.gradients], &t[scaler])?;
                self.push(List::Optimizer, d);
            }
        }
        for (i, chunk) in self.arena.chunks.clone().into_iter().enumerate() {
            let t = &self.tensors;
            let label = format!("parameters {i}");
            let scaled = mixed.then(|| &t[scaler]);
            let d = sgd_step(
                self.ctx,
                &label,
                sgd,
                learning_rate,
                &t[chunk.values],
                &t[chunk.gradients],
                &t[chunk.momenta],
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

    /// A view of `part` of parameter `name` in the arena.
    fn arena_view(
        &mut self,
        name: &str,
        part: ArenaPart,
        label: &str,
        shape: &[usize],
    ) -> Result<TensorId, GpuError> {
        let &(chunk, offset) = self.arena.slots.get(name).ok_or_else(|| {
            GpuError::shape(
                name,
                "not a parameter of the network the plan was laid out for",
            )
        })?;
        let chunk = self.arena.chunks[chunk];
        let (base, offset) = match part {
            ArenaPart::Values => (chunk.values, offset),
            ArenaPart::Gradients => (chunk.gradients, offset),
            ArenaPart::Momenta => (chunk.momenta, offset),
            ArenaPart::Copies => {
                let copies = chunk.copies.ok_or_else(|| {
                    GpuError::shape(name, "an f32 plan has no f16 parameter copies")
                })?;
                (copies, offset / 2)
            }
        };
        let view = Tensor::view(self.ctx, &self.tensors[base], offset, label, shape)?;
        self.tensors.push(view);
        Ok(self.tensors.len() - 1)
    }

    /// A parameter's views, its kernels reading it as `read` says.
    pub(super) fn param(
        &mut self,
        name: &str,
        shape: &[usize],
        read: ParamRead,
    ) -> Result<ParamSlot, GpuError> {
        let value = self.arena_view(name, ArenaPart::Values, name, shape)?;
        let read = if read == ParamRead::AtPlanPrecision && self.mixed() {
            self.arena_view(name, ArenaPart::Copies, &format!("{name} f16"), shape)?
        } else {
            value
        };
        let slot = ParamSlot {
            value,
            grad: self.arena_view(name, ArenaPart::Gradients, &format!("{name} grad"), shape)?,
            momentum: self.arena_view(
                name,
                ArenaPart::Momenta,
                &format!("{name} momentum"),
                shape,
            )?,
            read,
        };
        self.state.insert(name.to_string(), slot.value);
        self.params.push((name.to_string(), slot));
        Ok(slot)
    }
}
