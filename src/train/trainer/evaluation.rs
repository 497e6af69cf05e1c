//! Evaluation: the test (or validation) set through the training plan's
//! evaluation forward, one submit per batch, the last batch padded and
//! masked; with several processes each evaluates its part and the sums are
//! the job's.

use super::report::{ReportTag, Tag};
use super::{FeedMode, Trainer};
use crate::gpu;

impl Trainer {
    /// Replaces the evaluation set's pictures with `images` (CHW bytes, as
    /// many as the set holds; written before the next submit): a
    /// predictor evaluates new pictures on the plan it built once.
    pub fn set_eval_images(&mut self, images: &[u8]) -> Result<(), gpu::GpuError> {
        self.test.replace_images(&self.ctx, images)
    }

    /// Evaluates on the test (or validation) set: one submit per batch, the
    /// last batch padded and masked. Its report arrives as an `Epoch` event.
    pub fn submit_eval(&mut self) {
        let ctx = self.ctx.clone();
        let batch = self.config.batch_size;
        let n = self.test.data.len();
        let batches = n.div_ceil(batch);
        for i in 0..batches {
            let start = i * batch;
            let valid = (n - start).min(batch);
            if self.test.mode == FeedMode::Pipelined {
                let delivery = self.test.load_pipelined(&ctx, i as u64, batches as u64);
                if !self.delivered(delivery) {
                    self.test.stop_pipeline();
                    return;
                }
            } else {
                let samples: Vec<u32> = (0..batch)
                    .map(|j| (start + j.min(valid - 1)) as u32)
                    .collect();
                self.test.load(&ctx, &samples);
            }
            let eval_metrics = self.plan.tensor(self.plan.eval_metrics);
            let mut encoder = gpu::encoder(&ctx, "eval batch");
            if i == 0 {
                encoder.clear_buffer(eval_metrics.buffer(), 0, None);
            }
            let loss = if valid == batch {
                &self.eval_loss_full
            } else {
                &self.eval_loss_last
            };
            gpu::record_pass(&mut encoder, "eval batch", |pass| {
                self.test.dispatch.record(pass);
                self.plan.record_eval_batch(pass, loss);
            });
            if let Some(capture) = &mut self.predictions {
                let logits = self.plan.tensor(self.plan.logits).buffer();
                capture.copy_batch(&ctx.device, &mut encoder, logits, i == 0, start, valid);
            }
            if i + 1 == batches {
                if self.exchange.is_some() {
                    // The job's sums before the report copies them.
                    ctx.queue.submit([encoder.finish()]);
                    if let Err(e) = self.sum_eval_metrics() {
                        self.data_failure = Some(format!("summing the evaluation failed: {e}"));
                        return;
                    }
                    encoder = gpu::encoder(&ctx, "eval report");
                }
                let eval_metrics = self.plan.tensor(self.plan.eval_metrics);
                let staging = self.metrics.record_eval(&ctx, &mut encoder, eval_metrics);
                let index = ctx.queue.submit([encoder.finish()]);
                // The steps after it are timed from its end.
                self.clock.submitted_other(&ctx.queue);
                let step = self.progress.global_step;
                if let Some(capture) = &mut self.predictions {
                    capture.close(step);
                }
                self.metrics.close_eval(
                    staging,
                    Tag::Eval(ReportTag {
                        step,
                        steps_per_epoch: self.steps_per_epoch,
                        lr: self.lr_for_step(step.saturating_sub(1)),
                        data_wait_s: self.epoch_wait_s,
                        epoch_elapsed_s: self.epoch_started.elapsed().as_secs_f64(),
                    }),
                    index,
                );
            } else {
                ctx.queue.submit([encoder.finish()]);
            }
        }
        self.test.stop_pipeline();
    }
}
