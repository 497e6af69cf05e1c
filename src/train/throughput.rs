//! Images per second, one figure for every front end: measured over the
//! steps' own completion on the GPU, not over the arrival of their metrics.
//!
//! Metrics are read back asynchronously, several steps at a time, so reports
//! arrive in bursts (and the first ones after an evaluation carry its time):
//! a rate over report arrivals swung 6x within an epoch. Instead the trainer
//! registers every step's submission with a `StepClock`, which hears when
//! the GPU finished it (`Queue::on_submitted_work_done`, in submission
//! order). A step's time runs from the end of whatever the GPU did before it
//! (the previous step, or an evaluation: so evaluations are not counted) to
//! its own end; after a pause of the trainer's (a checkpoint written, a run
//! resumed) it runs from the step's submission instead, so the pause is not
//! counted either. Waits for data are counted: the rate is what the run
//! gets. The rate is over the latest steps covering `WINDOW_S` seconds (at
//! least one step, at most `WINDOW_STEPS`); the first step of a clock is
//! not counted (it compiles the kernels).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use web_time::Instant;

/// Seconds of steps the rate is taken over (a steady run shows a steady
/// figure; a change of speed shows within this time).
pub const WINDOW_S: f64 = 3.0;
/// At most this many steps in the window (fast steps).
pub const WINDOW_STEPS: usize = 256;

#[derive(Default)]
struct Clock {
    /// When the GPU last finished anything registered (a step or other work).
    last_done: Option<Instant>,
    /// The next step submitted after a pause (its time starts at its
    /// submission, not at the end of the work before it).
    after_pause: Option<u64>,
    /// A step measured from the start of the clock: not counted.
    first_seen: bool,
    /// (step, seconds) of the latest steps, oldest first.
    steps: VecDeque<(u64, f64)>,
}

/// The completion times of a trainer's work, shared with wgpu's callbacks.
#[derive(Clone, Default)]
pub struct StepClock {
    clock: Arc<Mutex<Clock>>,
}

impl StepClock {
    /// Step `step` (1-based, as reports count) was just submitted to `queue`.
    pub fn submitted_step(&self, queue: &wgpu::Queue, step: u64) {
        let submitted = Instant::now();
        let clock = self.clone();
        queue.on_submitted_work_done(move || clock.step_done(step, submitted, Instant::now()));
    }

    /// Work that is no training step (an evaluation) was just submitted:
    /// the step after it starts when it ends.
    pub fn submitted_other(&self, queue: &wgpu::Queue) {
        let clock = self.clone();
        queue.on_submitted_work_done(move || clock.other_done(Instant::now()));
    }

    /// The trainer pauses (a checkpoint, a resume) before submitting step
    /// `next_step`: that step's time starts at its submission.
    pub fn pause_before(&self, next_step: u64) {
        self.lock().after_pause = Some(next_step);
    }

    /// The GPU finished step `step`, submitted at `submitted`, at `done`.
    pub fn step_done(&self, step: u64, submitted: Instant, done: Instant) {
        let mut c = self.lock();
        let mut start = c.last_done.unwrap_or(submitted);
        if c.after_pause == Some(step) {
            start = start.max(submitted);
            c.after_pause = None;
        }
        c.last_done = Some(done);
        if !c.first_seen {
            c.first_seen = true;
            return;
        }
        c.steps
            .push_back((step, done.saturating_duration_since(start).as_secs_f64()));
        if c.steps.len() > WINDOW_STEPS {
            c.steps.pop_front();
        }
    }

    /// The GPU finished other work at `done`.
    pub fn other_done(&self, done: Instant) {
        self.lock().last_done = Some(done);
    }

    /// Images per second at `batch` images per step over the window; None
    /// before a step was measured.
    pub fn images_per_sec(&self, batch: usize) -> Option<f64> {
        let c = self.lock();
        let (mut steps, mut seconds) = (0usize, 0.0f64);
        for &(_, s) in c.steps.iter().rev() {
            steps += 1;
            seconds += s;
            if seconds >= WINDOW_S {
                break;
            }
        }
        (steps > 0 && seconds > 0.0).then(|| (steps * batch) as f64 / seconds)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clock> {
        // A poisoned clock only held timings: keep using them.
        self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A rate as the front ends show it: images per second from 1 image/s up,
/// below that seconds per step (never "0.0 img/s"); "-" before one is known.
pub fn format_rate(images_per_sec: Option<f64>, batch: usize) -> String {
    match images_per_sec {
        Some(ips) if ips >= 1.0 => format!("{ips:.1} img/s"),
        Some(ips) if ips > 0.0 => {
            let per_step = batch as f64 / ips;
            if per_step >= 10.0 {
                format!("{per_step:.0} s/step")
            } else {
                format!("{per_step:.2} s/step")
            }
        }
        _ => "- img/s".into(),
    }
}

/// "1 h 02 min", "3 min 05 s", "42 s".
pub fn format_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// Time left for `steps_left` steps of `batch` images at `images_per_sec`.
pub fn time_left(
    images_per_sec: Option<f64>,
    batch: usize,
    steps_left: u64,
) -> Option<std::time::Duration> {
    let ips = images_per_sec.filter(|&r| r > 0.0)?;
    Some(std::time::Duration::from_secs_f64(
        steps_left as f64 * batch as f64 / ips,
    ))
}
