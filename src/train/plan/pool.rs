//! The stem's 3x3/2 max pool (ImageNet ResNets): forward with its argmax,
//! and the backward that routes each gradient to its argmax.

use crate::gpu::{DType, GpuError};
use crate::ops::pool::Pool;
use crate::shapes::PoolShape;

use super::TensorId;
use super::builder::{Builder, List};

impl Builder<'_> {
    pub(super) fn max_pool(
        &mut self,
        x: TensorId,
    ) -> Result<((Pool, TensorId), TensorId), GpuError> {
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

    pub(super) fn max_pool_backward(
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
}
