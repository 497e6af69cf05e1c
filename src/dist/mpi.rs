//! The job's processes over MPI (the `mpi` crate, feature `mpi`): Open MPI
//! or MPICH, whichever the build links. The collectives are MPI's; this file
//! adds a watchdog, so that a collective waiting on a process that hangs
//! ends the job with a message instead of waiting forever (a process that
//! dies is the launcher's to notice: mpirun ends the job).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::train::collective::Collective;

/// This process's place in an MPI job.
pub struct MpiWorld {
    /// Finalizes MPI when dropped (after the run).
    _universe: Universe,
    world: SimpleCommunicator,
    /// Milliseconds since `started` at which the collective in progress
    /// began (0: none): what the watchdog reads.
    waiting_since: Arc<AtomicU64>,
    started: Instant,
}

impl MpiWorld {
    /// Initializes MPI (None when it cannot be) and starts the watchdog:
    /// a collective that waits longer than `timeout` ends the job.
    pub fn init(timeout: Duration) -> Option<MpiWorld> {
        let universe = mpi::initialize()?;
        let world = universe.world();
        let waiting_since = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let watched = waiting_since.clone();
        let rank = world.rank();
        std::thread::Builder::new()
            .name("collective watchdog".into())
            .spawn(move || watchdog(&watched, started, timeout, rank))
            .ok()?;
        Some(MpiWorld {
            _universe: universe,
            world,
            waiting_since,
            started,
        })
    }

    /// The rank of this process among the processes of its machine (from
    /// a node-local split of the job), for the default adapter.
    pub fn local_rank(&self) -> usize {
        self.world.split_shared(self.world.rank()).rank() as usize
    }

    /// Ends every process of the job with `code` (after this process said
    /// why): MPI_Abort.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Runs a collective under the watchdog's eye.
    fn watched<T>(&self, collective: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let now = self.started.elapsed().as_millis() as u64;
        self.waiting_since.store(now.max(1), Ordering::SeqCst);
        let out = collective(&self.world);
        self.waiting_since.store(0, Ordering::SeqCst);
        out
    }
}

/// Ends the job when one collective has waited longer than `timeout`.
fn watchdog(waiting_since: &AtomicU64, started: Instant, timeout: Duration, rank: i32) {
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let since = waiting_since.load(Ordering::SeqCst);
        if since == 0 {
            continue;
        }
        let waited = started
            .elapsed()
            .saturating_sub(Duration::from_millis(since));
        if waited > timeout {
            eprintln!(
                "rank {rank}: error: waited {:.0} s for the other processes in a collective \
                 (one of them hangs, or died without the launcher noticing); ending the job \
                 (--collective-timeout sets the limit)",
                waited.as_secs_f64()
            );
            // Not MPI_Abort: MPI is not for other threads here. A process
            // that exits makes mpirun end the others.
            std::process::abort();
        }
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn sum_f32(&self, values: &mut [f32]) {
        // MPI counts in i32: large gradient chunks go in slices.
        for slice in values.chunks_mut(1 << 28) {
            let send = slice.to_vec();
            self.watched(|w| w.all_reduce_into(&send[..], slice, SystemOperation::sum()));
        }
    }

    fn gather_u64(&self, value: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size()];
        self.watched(|w| w.all_gather_into(&value, &mut all[..]));
        all
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        let mut len = bytes.len() as u64;
        self.watched(|w| w.process_at_rank(0).broadcast_into(&mut len));
        bytes.resize(len as usize, 0);
        for slice in bytes.chunks_mut(1 << 30) {
            self.watched(|w| w.process_at_rank(0).broadcast_into(slice));
        }
    }
}
