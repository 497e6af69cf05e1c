//! What data-parallel training needs from the processes of a job: their
//! number, this one's rank, and a few collectives. `dist::mpi` implements it
//! over MPI; the trainer only sees this trait, so the core builds (and the
//! browser runs) without MPI.

/// One process's view of the job's processes (ranks `0..size`).
pub trait Collective {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Sums `values` element-wise over all ranks, in place.
    fn sum_f32(&self, values: &mut [f32]);
    /// Every rank's `value`, in rank order.
    fn gather_u64(&self, value: u64) -> Vec<u64>;
    /// Rank 0's `bytes` on every rank (others' are replaced).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>);
}

/// A world shared with the code that started it (to end the job on an
/// error after the trainer took its copy).
impl<C: Collective + ?Sized> Collective for std::rc::Rc<C> {
    fn rank(&self) -> usize {
        (**self).rank()
    }

    fn size(&self) -> usize {
        (**self).size()
    }

    fn sum_f32(&self, values: &mut [f32]) {
        (**self).sum_f32(values)
    }

    fn gather_u64(&self, value: u64) -> Vec<u64> {
        (**self).gather_u64(value)
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        (**self).broadcast_bytes(bytes)
    }
}

/// The share of each global batch and of the evaluation set a rank takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub rank: usize,
    pub ranks: usize,
}

impl Share {
    /// A process training alone.
    pub const ALONE: Share = Share { rank: 0, ranks: 1 };

    /// This rank's contiguous part of `0..len` (the evaluation set): the
    /// first `len % ranks` ranks take one more.
    pub fn range_of(self, len: usize) -> std::ops::Range<usize> {
        let (base, extra) = (len / self.ranks, len % self.ranks);
        let start = self.rank * base + self.rank.min(extra);
        start..start + base + usize::from(self.rank < extra)
    }
}

/// The time and volume of a run's gradient exchange, for the end-of-run
/// report and `README`'s scaling estimate.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExchangeStats {
    pub steps: u64,
    /// Bytes of gradients each rank contributed per step.
    pub bytes_per_step: u64,
    /// Seconds spent reading gradients back, in the all-reduce, and writing
    /// them back, over all steps.
    pub readback_s: f64,
    pub all_reduce_s: f64,
    pub write_s: f64,
    /// Seconds waiting for the forward and backward before the exchange.
    pub compute_wait_s: f64,
    /// Wall time of the steps that exchanged (recording to the optimizer's
    /// submit).
    pub step_s: f64,
}

#[cfg(test)]
mod tests {
    use super::Share;

    #[test]
    fn shares_cover_the_set_once() {
        for len in [0, 1, 7, 10, 11] {
            for ranks in 1..5 {
                let mut next = 0;
                for rank in 0..ranks {
                    let r = Share { rank, ranks }.range_of(len);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
