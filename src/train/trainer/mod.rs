//! The trainer core. It never blocks: `submit_steps` records and submits up to
//! N training steps (one command buffer each: augment -> forward -> loss ->
//! backward -> SGD) and `poll` returns the metrics that have come back. The
//! headless loop, the desktop window and the browser all drive it this way.

use std::sync::Arc;

mod evaluation;
mod exchange;
mod predictions;
mod report;
mod snapshot;

pub use super::config::{
    CheckpointEvery, MAX_BATCH, MAX_EPOCHS, MAX_REPORT_EVERY, MAX_WORKERS, MIN_EVAL_BATCH,
    TrainConfig,
};
use exchange::Exchange;
use predictions::PredictionCapture;
pub use report::{EpochReport, Progress, StepReport, TrainEvent};
use report::{ReportTag, Tag};
pub use snapshot::ModelSnapshot;

use web_time::Instant;

use super::collective::Share;
use super::feed::{Delivery, Feed, FeedMode, FeedSource};
use super::metrics::{MetricsRing, ReportKind};
use super::plan::{Plan, PlanRequest};
use crate::data::pipeline::BatchOrder;
use crate::data::{DataSplit, Dataset, epoch_order, step_seed};
use crate::gpu::{self, Dispatch, GpuContext, GpuError, Precision};
use crate::model::initial_parameters;
use crate::ops::conv::ConvTuning;
use crate::ops::loss::METRICS_LEN;
use crate::setting::Setting;

pub struct Trainer {
    ctx: Arc<GpuContext>,
    pub config: TrainConfig,
    plan: Plan,
    train: Feed,
    test: Feed,
    eval_loss_full: Vec<Dispatch>,
    eval_loss_last: Vec<Dispatch>,
    pub steps_per_epoch: usize,
    progress: Progress,
    order: Vec<u32>,
    metrics: MetricsRing<Tag>,
    last_step: Option<StepReport>,
    diverged: bool,
    started: Instant,
    last_epoch_report: (Instant, u64),
    reported_step: u64,
    eval_set: crate::data::EvalSet,
    last_submission: Option<wgpu::SubmissionIndex>,
    /// When the GPU finished each step: the reports' images/s.
    clock: crate::train::StepClock,
    predictions: Option<PredictionCapture>,
    /// CPU time the last step took to record (batch upload, uniforms, encoder).
    pub last_record_seconds: f64,
    /// This epoch: when its first step was submitted and how long its steps
    /// waited for data.
    epoch_started: Instant,
    epoch_wait_s: f64,
    /// Events found while submitting (unreadable files), for the next poll.
    pending: Vec<TrainEvent>,
    /// The input pipeline failed (a damaged dataset): no more steps.
    data_failure: Option<String>,
    /// This process's share of each global batch and of the evaluation set.
    share: Share,
    /// The other processes of a data-parallel run (`join`).
    exchange: Option<Exchange>,
}

impl Trainer {
    /// Builds the memory plan, uploads the data and He-initializes the model.
    pub fn new(
        ctx: Arc<GpuContext>,
        config: TrainConfig,
        data: DataSplit,
    ) -> Result<Self, GpuError> {
        Self::new_rank(ctx, config, data, 0)
    }

    /// `new` for process `rank` of the run's `world_size`: it trains on the
    /// `rank`-th batch of each step's global batch and evaluates its part of
    /// the evaluation set (then `join` the others).
    pub fn new_rank(
        ctx: Arc<GpuContext>,
        config: TrainConfig,
        mut data: DataSplit,
        rank: usize,
    ) -> Result<Self, GpuError> {
        let network = config.model.network();
        let batch = config.batch_size;
        let share = Share {
            rank,
            ranks: config.world_size,
        };
        if rank >= share.ranks || data.test.len() < share.ranks {
            return Err(GpuError::Setup(format!(
                "rank {rank} of {} processes, with {} evaluation images: each process needs                  one at least",
                share.ranks,
                data.test.len()
            )));
        }
        if share.ranks > 1 {
            let mine: Vec<usize> = share.range_of(data.test.len()).collect();
            data.test = data.test.select(&mine);
        }
        if data.train.classes() != network.num_classes {
            return Err(GpuError::Setup(format!(
                "the dataset has {} classes but the model was built for {}",
                data.train.classes(),
                network.num_classes
            )));
        }
        if config.precision == Precision::F16 && !ctx.supports_f16() {
            return Err(GpuError::Setup(format!(
                "{} f16 needs the adapter's shader-f16 feature, which {} does not have \
                 (use {} f32)",
                Setting::Precision,
                ctx.adapter_info.name,
                Setting::Precision
            )));
        }
        let steps_per_epoch = data.train.len() / (batch * share.ranks);
        if steps_per_epoch == 0 {
            let of = match share.ranks {
                1 => format!("{batch}"),
                n => format!("{batch} x {n} processes"),
            };
            return Err(GpuError::Setup(format!(
                "the training set has {} images, fewer than one batch of {of}",
                data.train.len()
            )));
        }
        let plan = Plan::new(
            &ctx,
            PlanRequest {
                network: &network,
                batch,
                image: data.train.shape,
                sgd: &config.sgd,
                tuning: ConvTuning::default(),
                precision: config.precision,
            },
        )?;
        let workers = match config.workers {
            0 => crate::data::default_workers(),
            n => n,
        };
        let source = |data, augment, order, train| FeedSource {
            data,
            augment,
            order,
            train,
            seed: config.seed,
            workers,
            force_stream: config.stream_data,
        };
        let train_order = BatchOrder::Train {
            seed: config.seed,
            steps_per_epoch: steps_per_epoch as u64,
            rank: rank as u64,
            ranks: share.ranks as u64,
        };
        let train = Feed::new(
            &ctx,
            &plan,
            source(data.train, config.augment, train_order, true),
            "train",
        )?;
        let test = Feed::new(
            &ctx,
            &plan,
            source(
                data.test,
                config.augment.eval(),
                BatchOrder::Sequential,
                false,
            ),
            "eval",
        )?;
        let eval_loss_full = plan.eval_loss(&ctx, batch)?;
        let remainder = test.data.len() % batch;
        let eval_loss_last = if remainder == 0 {
            vec![]
        } else {
            plan.eval_loss(&ctx, remainder)?
        };
        let now = Instant::now();
        let trainer = Trainer {
            metrics: MetricsRing::new(config.report_every),
            ctx,
            plan,
            train,
            test,
            eval_loss_full,
            eval_loss_last,
            steps_per_epoch,
            progress: Progress {
                epoch: 0,
                step_in_epoch: 0,
                global_step: 0,
                train_metrics: [0.0; METRICS_LEN],
                batches_tracked_base: 0,
            },
            order: vec![],
            last_step: None,
            diverged: false,
            started: now,
            last_epoch_report: (now, 0),
            reported_step: 0,
            eval_set: data.eval_set,
            last_submission: None,
            clock: Default::default(),
            predictions: None,
            last_record_seconds: 0.0,
            epoch_started: now,
            epoch_wait_s: 0.0,
            pending: vec![],
            data_failure: None,
            share,
            exchange: None,
            config,
        };
        let init = initial_parameters(&trainer.plan.network, trainer.config.seed);
        for (entry, values) in trainer.plan.state_entries().iter().zip(&init) {
            if let Some(t) = trainer.plan.state_tensor(&entry.name) {
                t.write_f32(&trainer.ctx, values)?;
            }
        }
        trainer.ctx.check_uncaptured()?;
        Ok(trainer)
    }

    pub fn ctx(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn progress(&self) -> Progress {
        self.progress
    }

    /// "test" or "validation": what the evaluation set is.
    pub fn eval_name(&self) -> &'static str {
        self.eval_set.name()
    }

    pub fn test_data(&self) -> &Dataset {
        &self.test.data
    }

    /// How the training and evaluation batches reach the GPU.
    pub fn feed_modes(&self) -> (FeedMode, FeedMode) {
        (self.train.mode, self.test.mode)
    }

    /// Unreadable files skipped so far (training and evaluation sets).
    pub fn skipped_files(&self) -> u64 {
        [&self.train.data, &self.test.data]
            .iter()
            .filter_map(|d| d.files.as_ref())
            .map(|f| f.bad_count() as u64)
            .sum()
    }

    /// BN `num_batches_tracked` before this run's first step (from a loaded
    /// state dict).
    pub fn set_batches_tracked_base(&mut self, count: u64) {
        self.progress.batches_tracked_base = count;
    }

    /// Continues from a saved position (the model and momenta are written
    /// separately by the checkpoint loader). A position that does not fit this
    /// run's data (a damaged or hand-edited file) is refused.
    pub fn set_progress(&mut self, progress: Progress) -> Result<(), String> {
        let spe = self.steps_per_epoch;
        if progress.step_in_epoch >= spe
            || progress.global_step
                != (progress.epoch as u64) * spe as u64 + progress.step_in_epoch as u64
        {
            return Err(format!(
                "the saved position (epoch {}, step {} of the epoch, step {} in all) does not fit \
                 {spe} steps per epoch",
                progress.epoch, progress.step_in_epoch, progress.global_step
            ));
        }
        if !progress.train_metrics.iter().all(|v| v.is_finite()) {
            return Err(format!(
                "the saved training metrics are not finite: {:?}",
                progress.train_metrics
            ));
        }
        self.progress = progress;
        self.reported_step = progress.global_step;
        self.last_epoch_report = (Instant::now(), progress.global_step);
        if progress.step_in_epoch > 0 {
            self.order = epoch_order(self.config.seed, progress.epoch, self.train.data.len());
        }
        let metrics = self.plan.tensor(self.plan.train_metrics);
        self.ctx.queue.write_buffer(
            metrics.buffer(),
            0,
            bytemuck::cast_slice(&progress.train_metrics),
        );
        Ok(())
    }

    pub fn total_steps(&self) -> u64 {
        let all = (self.steps_per_epoch as u64).saturating_mul(self.config.epochs as u64);
        self.config.max_steps.map_or(all, |m| m.min(all))
    }

    /// Every step submitted (or the run diverged, or its data failed).
    pub fn is_finished(&self) -> bool {
        self.diverged
            || self.data_failure.is_some()
            || self.stop_agreed()
            || self.progress.global_step >= self.total_steps()
    }

    /// Every submitted step's metrics have come back.
    pub fn is_idle(&self) -> bool {
        self.metrics.pending() == 0
            && self
                .predictions
                .as_ref()
                .is_none_or(|c| c.in_flight.is_empty())
    }

    pub fn has_diverged(&self) -> bool {
        self.diverged
    }

    /// Steps submitted whose metrics have not come back yet.
    pub fn steps_in_flight(&self) -> u64 {
        self.progress.global_step - self.reported_step
    }

    pub fn lr_for_step(&self, step: u64) -> f32 {
        self.config
            .schedule
            .lr_at(step as f64 / self.steps_per_epoch as f64)
    }

    /// Submits up to `max` steps; stops early at the end of an epoch (after
    /// submitting its evaluation) or of the run. Returns the steps submitted.
    pub fn submit_steps(&mut self, max: usize) -> usize {
        let mut done = 0;
        while done < max && !self.is_finished() {
            let epoch_end = self.submit_train_step();
            done += 1;
            // The end of the run is evaluated; an agreed stop is not (a
            // process alone stopping is not either).
            if epoch_end || (self.is_finished() && !self.stop_agreed()) {
                self.submit_eval();
                break;
            }
        }
        done
    }

    /// Submits one training step and no evaluation (`submit_steps` adds those
    /// at epoch ends). Returns whether the step ended an epoch.
    pub fn submit_train_step(&mut self) -> bool {
        let recording = Instant::now();
        let ctx = self.ctx.clone();
        let p = self.progress;
        let batch = self.config.batch_size;
        if p.step_in_epoch == 0 {
            self.epoch_started = recording;
            self.epoch_wait_s = 0.0;
        }
        if self.train.mode == FeedMode::Pipelined {
            let end = self.total_steps();
            let delivery = self.train.load_pipelined(&ctx, p.global_step, end);
            if !self.delivered(delivery) {
                return false;
            }
        } else {
            if p.step_in_epoch == 0 {
                self.order = epoch_order(self.config.seed, p.epoch, self.train.data.len());
            }
            // This process's batch of the step's global batch.
            let first = (p.step_in_epoch * self.share.ranks + self.share.rank) * batch;
            self.train.load(&ctx, &self.order[first..first + batch]);
        }
        // Each process draws its own crops and flips (rank 0 the ones a
        // process alone draws).
        let rank_stream = (self.share.rank as u32).wrapping_mul(0x9e37_79b9);
        self.train.augment.set_seed(
            &ctx,
            step_seed(self.config.seed, p.global_step) ^ rank_stream,
        );
        let lr = self.lr_for_step(p.global_step);
        self.plan.learning_rate.set(&ctx, lr);

        let mut encoder = gpu::encoder(&ctx, "train step");
        let metrics = self.plan.tensor(self.plan.train_metrics).buffer();
        if p.step_in_epoch == 0 {
            encoder.clear_buffer(metrics, 0, None);
        }
        if self.exchange.is_some() {
            // Forward and backward, the gradients averaged over the
            // processes, then SGD in a second command buffer.
            gpu::record_pass(&mut encoder, "forward and backward", |pass| {
                self.train.dispatch.record(pass);
                self.plan.record_forward_backward(pass);
            });
            let computed = ctx.queue.submit([encoder.finish()]);
            if let Err(e) = self.exchange_gradients(computed, p.step_in_epoch == 0) {
                self.data_failure = Some(format!("the gradient exchange failed: {e}"));
                return false;
            }
            encoder = gpu::encoder(&ctx, "optimizer");
            gpu::record_pass(&mut encoder, "optimizer", |pass| {
                self.plan.record_optimizer(pass);
            });
        } else {
            gpu::record_pass(&mut encoder, "train step", |pass| {
                self.train.dispatch.record(pass);
                self.plan.record_train_step(pass);
            });
        }
        let metrics = self.plan.tensor(self.plan.train_metrics);
        let tag = Tag::Step(ReportTag {
            step: p.global_step + 1,
            steps_per_epoch: self.steps_per_epoch,
            lr,
            data_wait_s: self.epoch_wait_s,
            epoch_elapsed_s: self.epoch_started.elapsed().as_secs_f64(),
        });
        let full = self.metrics.record_step(&ctx, &mut encoder, metrics, tag);
        let commands = encoder.finish();
        self.last_record_seconds = recording.elapsed().as_secs_f64();
        self.last_submission = Some(ctx.queue.submit([commands]));
        self.clock.submitted_step(&ctx.queue, p.global_step + 1);
        if full {
            self.close_step_report();
        }
        self.progress.global_step += 1;
        self.progress.step_in_epoch += 1;
        if self.progress.step_in_epoch == self.steps_per_epoch {
            self.progress.step_in_epoch = 0;
            self.progress.epoch += 1;
        }
        let epoch_end = self.progress.step_in_epoch == 0;
        if epoch_end || self.is_finished() {
            self.close_step_report();
        }
        if let Some(x) = &mut self.exchange {
            x.stats.step_s += recording.elapsed().as_secs_f64();
        }
        if epoch_end && let Err(e) = self.check_replicas() {
            self.data_failure = Some(e.to_string());
        }
        epoch_end
    }

    /// Takes a pipelined batch's wait and bad files into account; false
    /// (and the run ends) when the pipeline failed.
    fn delivered(&mut self, delivery: Result<Delivery, crate::data::DataError>) -> bool {
        match delivery {
            Ok(d) => {
                self.epoch_wait_s += d.waited_s;
                self.pending
                    .extend(d.bad.into_iter().map(TrainEvent::SkippedFile));
                true
            }
            Err(e) => {
                self.data_failure = Some(e.to_string());
                false
            }
        }
    }

    /// Sends the metrics of the steps submitted so far back now, instead of
    /// when `report_every` steps are together: call when no more steps will
    /// be submitted for a while (stop, pause), so that `is_idle` can come.
    pub fn flush_reports(&mut self) {
        self.close_step_report();
    }

    fn close_step_report(&mut self) {
        if let Some(index) = self.last_submission.clone() {
            self.metrics.close(index);
        }
    }

    /// Metrics that have come back since the last call; never blocks.
    pub fn poll(&mut self) -> Result<Vec<TrainEvent>, GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.ctx.device.poll(wgpu::PollType::Poll);
        self.ctx.check_uncaptured()?;
        if let Some(failure) = &self.data_failure {
            return Err(GpuError::Setup(failure.clone()));
        }
        let mut events = std::mem::take(&mut self.pending);
        for report in self.metrics.take_ready()? {
            match report {
                ReportKind::Steps(steps) => {
                    for (tag, snap) in steps {
                        if let Tag::Step(t) = tag {
                            self.step_event(t, snap, &mut events);
                        }
                    }
                }
                ReportKind::Eval((Tag::Eval(t), snap)) if !snap.mean_loss().is_finite() => {
                    // A model whose evaluation loss is not finite holds
                    // non-finite or exploding state (BN running stats first):
                    // no checkpoint may be written from it.
                    if !self.diverged {
                        events.push(TrainEvent::Diverged {
                            step: t.step,
                            loss: snap.mean_loss(),
                            evaluation: true,
                        });
                    }
                    self.diverged = true;
                }
                ReportKind::Eval((Tag::Eval(t), snap)) => events.push(self.epoch_event(t, snap)),
                ReportKind::Eval(_) => {}
            }
        }
        self.take_predictions(&mut events)?;
        Ok(events)
    }

    /// Whether the training batches come from the input pipeline.
    fn pipelined(&self) -> bool {
        self.train.mode == FeedMode::Pipelined
    }

    /// Whether the plan trains in mixed precision (and so scales the loss).
    fn mixed(&self) -> bool {
        self.plan.precision == Precision::F16
    }

    /// Blocks until the oldest pending metrics report is ready (native edges
    /// only: the headless loop when it is far enough ahead of the GPU).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_for_report(&self) -> Result<(), GpuError> {
        // A lost device finishes nothing: no wait.
        if self.ctx.device_lost().is_some() {
            return self.ctx.check_uncaptured();
        }
        if let Some(index) = self.metrics.oldest_submission() {
            self.ctx
                .device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(index),
                    timeout: None,
                })
                .map_err(|e| GpuError::Poll {
                    what: "the oldest step in flight".into(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Blocks until every submitted step is done (native edges only: before a
    /// checkpoint, at the end of a run).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait_for_gpu(&self) -> Result<(), GpuError> {
        // What follows (a checkpoint written, the run's end) is no step's time.
        self.clock.pause_before(self.progress.global_step + 1);
        self.ctx.wait_idle()
    }

    /// `num_batches_tracked` of every BN layer after the steps submitted so far.
    pub fn batches_tracked(&self) -> u64 {
        self.progress.batches_tracked_base + self.progress.global_step
    }
}
