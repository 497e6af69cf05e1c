//! What the plots and the status line show: the metrics of a run as they come
//! back from the GPU, kept as plot points.

use web_time::Duration;

use crate::train::{EpochReport, StepReport, Trainer};

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
    /// (epoch, learning rate) over the whole planned run, as a staircase.
    pub lr_schedule: Vec<[f64; 2]>,
    pub last_step: Option<StepReport>,
    pub last_epoch: Option<EpochReport>,
    pub steps_per_epoch: usize,
    pub total_steps: u64,
    pub batch_size: usize,
    ema: f64,
    ema_weight: f64,
    images_per_sec: f64,
}

impl History {
    pub fn new(trainer: &Trainer) -> Self {
        let total_steps = trainer.total_steps();
        let steps_per_epoch = trainer.steps_per_epoch;
        let lr_schedule =
            schedule_staircase(total_steps, steps_per_epoch, |s| trainer.lr_for_step(s));
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
            images_per_sec: 0.0,
        }
    }

    pub fn push_step(&mut self, report: StepReport) {
        let step = report.step as f64;
        let loss = f64::from(report.batch_loss);
        self.ema = SMOOTHING * self.ema + (1.0 - SMOOTHING) * loss;
        self.ema_weight = SMOOTHING * self.ema_weight + (1.0 - SMOOTHING);
        self.batch_loss.push([step, loss]);
        self.smoothed_loss.push([step, self.ema / self.ema_weight]);
        if let Some(rate) = report.images_per_sec {
            self.images_per_sec = rate;
        }
        self.last_step = Some(report);
    }

    pub fn push_epoch(&mut self, report: EpochReport) {
        self.train_acc
            .push([report.epoch, 100.0 * f64::from(report.train_acc)]);
        self.test_acc
            .push([report.epoch, 100.0 * f64::from(report.test_acc)]);
        self.last_epoch = Some(report);
    }

    /// The planned run's length in epochs (the plots' x range before any point).
    pub fn epochs(&self) -> f64 {
        self.total_steps as f64 / self.steps_per_epoch.max(1) as f64
    }

    pub fn images_per_sec(&self) -> f64 {
        self.images_per_sec
    }

    /// Steps whose metrics have come back.
    pub fn steps_done(&self) -> u64 {
        self.last_step.as_ref().map_or(0, |s| s.step)
    }

    /// Time left at the steps' current rate (the one shown beside it; None
    /// until a step is timed).
    pub fn eta(&self) -> Option<Duration> {
        let rate = Some(self.images_per_sec);
        let left = self.total_steps.saturating_sub(self.steps_done());
        crate::train::time_left(rate, self.batch_size, left)
    }

    /// Seconds one step takes at the current rate (None until measured).
    pub fn step_seconds(&self) -> Option<f64> {
        (self.images_per_sec > 0.0).then(|| self.batch_size as f64 / self.images_per_sec)
    }
}

/// The learning rate of each step as (epoch, rate) points of a staircase:
/// step s holds its rate from s to s + 1, so a milestone is one vertical edge
/// at its epoch. Samples every step up to 2000 points (enough for a cosine),
/// and always the steps on both sides of a change of rate, so no decay is
/// drawn as a slope or a spike between two samples.
pub fn schedule_staircase(
    total_steps: u64,
    steps_per_epoch: usize,
    lr: impl Fn(u64) -> f32,
) -> Vec<[f64; 2]> {
    let per_epoch = steps_per_epoch.max(1) as f64;
    let stride = (total_steps / 2000).max(1);
    let mut points: Vec<[f64; 2]> = vec![];
    // The previous step's rate, and whether it equalled the one before it.
    let mut previous: Option<(f32, bool)> = None;
    for step in 0..total_steps {
        let rate = lr(step);
        // A jump after a flat stretch (a milestone); a rate that changes a
        // little every step (cosine, warm-up; flat for a step where f32
        // rounds two alike) is sampled instead.
        let jump = previous.filter(|&(before, flat)| {
            flat && (before - rate).abs() > 0.01 * before.abs().max(rate.abs())
        });
        if let Some((before, _)) = jump {
            points.push([step as f64 / per_epoch, f64::from(before)]);
        }
        if jump.is_some() || step % stride == 0 {
            points.push([step as f64 / per_epoch, f64::from(rate)]);
        }
        let flat = previous.is_none_or(|(before, _)| before == rate);
        previous = Some((rate, flat));
    }
    if let Some((rate, _)) = previous {
        points.push([total_steps as f64 / per_epoch, f64::from(rate)]);
    }
    points
}

#[cfg(test)]
mod tests {
    use super::schedule_staircase;
    use crate::train::schedule::{DecayKind, Schedule};

    fn schedule(decay: DecayKind, warmup_epochs: f32) -> Schedule {
        Schedule {
            base_lr: 0.1,
            decay,
            milestones: vec![5, 8],
            gamma: 0.1,
            warmup_epochs,
            warmup_lr: 0.01,
            epochs: 10,
        }
    }

    #[test]
    fn a_step_schedule_is_drawn_as_steps() {
        let s = schedule(DecayKind::MultiStep, 0.0);
        let points = schedule_staircase(100, 10, |step| s.lr_at(step as f64 / 10.0));
        // Every point is one of the three rates and they never rise: no spike.
        let rates = [0.1f32, 0.01, 0.001].map(f64::from);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(
            points
                .iter()
                .all(|[_, y]| rates.iter().any(|r| close(*r, *y))),
            "{points:?}"
        );
        assert!(
            points.windows(2).all(|w| w[1][1] <= w[0][1] + 1e-12),
            "{points:?}"
        );
        // Each milestone is one vertical edge at its epoch, nothing slants.
        for (m, (high, low)) in [(5.0, (0.1, 0.01)), (8.0, (0.01, 0.001))] {
            let at: Vec<f64> = points
                .iter()
                .filter(|p| close(p[0], m))
                .map(|p| p[1])
                .collect();
            assert!(
                at.len() == 2
                    && close(at[0], f64::from(high as f32))
                    && close(at[1], f64::from(low as f32)),
                "at epoch {m}: {at:?}"
            );
        }
        for w in points.windows(2) {
            assert!(
                close(w[0][0], w[1][0]) || close(w[0][1], w[1][1]),
                "a slope: {w:?}"
            );
        }
        assert_eq!(points.first().unwrap()[0], 0.0);
        assert_eq!(points.last().unwrap()[0], 10.0);
    }

    #[test]
    fn smooth_schedules_stay_sampled() {
        let s = schedule(DecayKind::Cosine, 1.0);
        let points = schedule_staircase(100_000, 10_000, |step| s.lr_at(step as f64 / 10_000.0));
        assert!(points.len() <= 2002, "{} points", points.len());
        assert!(
            points.windows(2).all(|w| w[1][0] > w[0][0]),
            "x goes back or repeats"
        );
        // The warm-up rises, then the cosine falls to 0 at the end.
        let peak = points.iter().map(|p| p[1]).fold(0.0, f64::max);
        assert!((peak - 0.1).abs() < 1e-3, "{peak}");
        assert!(points.last().unwrap()[1] < 1e-4);
    }
}
