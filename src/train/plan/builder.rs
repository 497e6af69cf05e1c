//! The plan under construction: its tensors, its dispatches filed into the
//! step's lists, the scratch pool of the backward pass, and what the layer
//! files (unit, block, pool, head, arena) record into it.

use std::collections::HashMap;

use crate::gpu::{ChoiceSource, DType, Dispatch, GpuContext, GpuError, Precision, Tensor};
use crate::ops::Reduction;

use super::arena::{ParamArena, ParamSlot};
use super::{ConvChoice, TensorId};

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
    pub(super) batch: usize,
    /// What activations and their gradients are stored as.
    pub(super) act: DType,
    pub(super) tensors: Vec<Tensor>,
    pub(super) dispatches: Vec<Dispatch>,
    /// Dispatch ids of Train, Eval, Backward and Optimizer, in recording order.
    pub(super) lists: [Vec<usize>; 4],
    pub(super) state: HashMap<String, TensorId>,
    pub(super) params: Vec<(String, ParamSlot)>,
    /// Gradient scratch no longer read by any later dispatch of the backward pass.
    free: Vec<TensorId>,
    pub(super) conv_choices: Vec<ConvChoice>,
    pub(super) reductions: Vec<(String, Reduction, ChoiceSource)>,
    pub(super) arena: ParamArena,
}

impl<'c> Builder<'c> {
    pub(super) fn new(ctx: &'c GpuContext, batch: usize, precision: Precision) -> Self {
        Builder {
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
            arena: ParamArena::default(),
        }
    }

    pub(super) fn typed_tensor(
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
    pub(super) fn mixed(&self) -> bool {
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

    pub(super) fn add_dispatch(&mut self, d: Dispatch) -> usize {
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

    pub(super) fn state_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
    ) -> Result<TensorId, GpuError> {
        let id = self.tensor(name, shape)?;
        self.state.insert(name.to_string(), id);
        Ok(id)
    }

    pub(super) fn hw_of(&self, id: TensorId) -> (usize, usize) {
        let s = self.tensors[id].shape();
        (s[2], s[3])
    }
}
