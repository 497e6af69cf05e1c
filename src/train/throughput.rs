//! Images per second, as the front ends show it.

/// Images per second over the last reported steps.
#[derive(Default)]
pub struct Throughput {
    since: Option<(web_time::Instant, u64)>,
    value: f64,
}

impl Throughput {
    /// Counts steps done up to `step`; returns the rate, refreshed every half second.
    pub fn update(&mut self, step: u64, batch: usize) -> f64 {
        let now = web_time::Instant::now();
        match self.since {
            Some((t, s)) if step > s && (now - t).as_secs_f64() > 0.5 => {
                self.value = (step - s) as f64 * batch as f64 / (now - t).as_secs_f64();
                self.since = Some((now, step));
            }
            None => self.since = Some((now, step)),
            _ => {}
        }
        self.value
    }
}
