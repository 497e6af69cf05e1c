//! What the plots and the status line show: the metrics of a run as they come
//! back from the GPU, kept as plot points.

use web_time::{Duration, Instant};

use crate::train::{EpochReport, StepReport, Throughput, Trainer};

/// Weight of the past in the smoothed loss (TensorBoard's default smoothing).
const SMOOTHING: f64 = 0.9;

pub struct History {
    /// (step, loss of that step's batch).
    pub batch_loss: Vec<[f64; 2]>,
    /// (step, exponential moving average of the batch loss, bias-corrected).
    pub smoothed_loss: Vec<[f64; 2]>,
    /// (epoch, accuracy in percent) after each evaluation.
    pub train_acc: Vec<[f64; 2]>,
    pub test_acc: Vec<[f64; 2]>,
    /// (epoch, learning rate) over the whole planned run.
    pub lr_schedule: Vec<[f64; 2]>,
    pub last_step: Option<StepReport>,
    pub last_epoch: Option<EpochReport>,
    pub steps_per_epoch: usize,
    pub total_steps: u64,
    batch_size: usize,
    ema: f64,
    ema_weight: f64,
    throughput: Throughput,
    images_per_sec: f64,
    /// When the first step of this session came back, and its step number.
    first_report: Option<(Instant, u64)>,
}

impl History {
    pub fn new(trainer: &Trainer) -> Self {
        let total_steps = trainer.total_steps();
        let steps_per_epoch = trainer.steps_per_epoch;
        // One point per step up to 2000 points: enough to show every decay.
        let stride = (total_steps / 2000).max(1);
        let lr_schedule = (0..total_steps)
            .step_by(stride as usize)
            .chain(std::iter::once(total_steps.saturating_sub(1)))
            .map(|s| {
                [
                    s as f64 / steps_per_epoch as f64,
                    f64::from(trainer.lr_for_step(s)),
                ]
            })
            .collect();
        History {
            batch_loss: vec![],
            smoothed_loss: vec![],
            train_acc: vec![],
            test_acc: vec![],
            lr_schedule,
            last_step: None,
            last_epoch: None,
            steps_per_epoch,
            total_steps,
            batch_size: trainer.config.batch_size,
            ema: 0.0,
            ema_weight: 0.0,
            throughput: Throughput::default(),
            images_per_sec: 0.0,
            first_report: None,
        }
    }

    pub fn push_step(&mut self, report: StepReport) {
        let step = report.step as f64;
        let loss = f64::from(report.batch_loss);
        self.ema = SMOOTHING * self.ema + (1.0 - SMOOTHING) * loss;
        self.ema_weight = SMOOTHING * self.ema_weight + (1.0 - SMOOTHING);
        self.batch_loss.push([step, loss]);
        self.smoothed_loss.push([step, self.ema / self.ema_weight]);
        self.images_per_sec = self.throughput.update(report.step, self.batch_size);
        self.first_report
            .get_or_insert_with(|| (Instant::now(), report.step));
        self.last_step = Some(report);
    }

    pub fn push_epoch(&mut self, report: EpochReport) {
        self.train_acc
            .push([report.epoch, 100.0 * f64::from(report.train_acc)]);
        self.test_acc
            .push([report.epoch, 100.0 * f64::from(report.test_acc)]);
        self.last_epoch = Some(report);
    }

    pub fn images_per_sec(&self) -> f64 {
        self.images_per_sec
    }

    /// Steps whose metrics have come back.
    pub fn steps_done(&self) -> u64 {
        self.last_step.as_ref().map_or(0, |s| s.step)
    }

    /// Time left at the rate of this session so far (None before two reports).
    pub fn eta(&self) -> Option<Duration> {
        let (since, first) = self.first_report?;
        let done = self.steps_done().checked_sub(first).filter(|&d| d > 0)?;
        let per_step = since.elapsed().as_secs_f64() / done as f64;
        let left = self.total_steps.saturating_sub(self.steps_done());
        Some(Duration::from_secs_f64(per_step * left as f64))
    }

    /// Seconds one step takes at the current rate (None until measured).
    pub fn step_seconds(&self) -> Option<f64> {
        (self.images_per_sec > 0.0).then(|| self.batch_size as f64 / self.images_per_sec)
    }
}

/// "1 h 02 min", "3 min 05 s", "42 s".
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}
