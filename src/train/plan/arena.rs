//! The parameter arena's layout: every parameter's value, gradient and
//! momentum (and under mixed precision its f16 copy) at one offset of a few
//! shared chunks, so that SGD updates a whole chunk in one dispatch.
//! `params.rs` allocates the chunks and records what reads and updates them.

use std::collections::HashMap;

use crate::model::Network;

use super::TensorId;

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

/// Where the parameters live: values, gradients and momenta each in shared
/// buffers with the same layout (one per chunk of at most one storage
/// binding), every parameter at an offset aligned for binding. Kernels see a
/// parameter as its own buffer (a view), and SGD updates a whole chunk in one
/// dispatch instead of one per parameter (173 fewer dispatches for ResNet-56).
#[derive(Default)]
pub struct ParamArena {
    /// Parameter name -> (chunk, byte offset).
    pub(super) slots: HashMap<String, (usize, u64)>,
    pub(super) chunks: Vec<Chunk>,
}

/// One chunk of the arena: its buffers, with the same layout.
#[derive(Clone, Copy)]
pub(super) struct Chunk {
    pub(super) values: TensorId,
    pub(super) gradients: TensorId,
    pub(super) momenta: TensorId,
    /// Under mixed precision, the f16 copy of the values, at half the byte
    /// offsets (the f32 layout is aligned twice as coarsely).
    pub(super) copies: Option<TensorId>,
}

/// Which of a parameter's buffers a view shows.
#[derive(Clone, Copy)]
pub(super) enum ArenaPart {
    Values,
    Gradients,
    Momenta,
    /// The f16 copy of the values (mixed precision).
    Copies,
}

/// What a parameter's kernels read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ParamRead {
    /// The f32 value (biases, norm affine parameters).
    F32,
    /// The value at the plan's precision: under mixed precision the f16 copy
    /// (conv and fc weights, the matrices of the big products).
    AtPlanPrecision,
}

impl ParamArena {
    /// (values, gradients) of each chunk.
    pub(super) fn chunk_buffers(&self) -> Vec<(TensorId, TensorId)> {
        self.chunks
            .iter()
            .map(|c| (c.values, c.gradients))
            .collect()
    }
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
