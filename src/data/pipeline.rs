//! The input pipeline of a file-backed dataset: `workers` threads decode and
//! augment pictures into a ring of `DEPTH` batch buffers, ahead of the GPU.
//! Workers claim samples one at a time in batch order (so all of them help
//! with the next batch, and memory is `DEPTH` batches whatever the worker
//! count); a worker that has decoded a sample of a batch whose buffer is
//! still in use waits for it. The consumer takes whole batches in order.
//!
//! An unreadable file is recorded (reported once, by the consumer) and its
//! place taken by the next readable file of the dataset, so a batch is always
//! full and the substitute is the same in every run.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::decode::Decoder;
use super::index::ImageFiles;
use super::transform::Transform;
use super::{DataError, epoch_order, shard_order};

/// Batches decoded ahead of the one the consumer waits for, at most.
pub const DEPTH: usize = 4;
/// Packed shards: samples in the shuffle buffer across shards.
pub const SHUFFLE_BUFFER: usize = 2048;
/// A failure of this many files in a row is a broken dataset, not a bad file.
const MAX_SUBSTITUTES: usize = 64;

/// A file that could not be made into a sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadFile {
    pub path: PathBuf,
    pub reason: String,
}

/// Which samples each batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOrder {
    /// Training: batch k is step k, the epoch's seeded shuffle (drop-last).
    /// With several processes (`ranks`), a step's global batch is `ranks`
    /// batches of the shuffle in a row, and this one's is the `rank`-th.
    Train {
        seed: u64,
        steps_per_epoch: u64,
        rank: u64,
        ranks: u64,
    },
    /// Evaluation: the dataset in order, the last batch padded by repeating
    /// its last sample (as the trainer masks it).
    Sequential,
}

/// What a pipeline decodes.
#[derive(Clone)]
pub struct PipelineSpec {
    pub files: Arc<ImageFiles>,
    pub labels: Arc<Vec<u32>>,
    pub transform: Transform,
    pub side: u32,
    pub batch: usize,
    pub workers: usize,
    pub order: BatchOrder,
}

impl PipelineSpec {
    /// The pipeline of a file-backed set's pictures as `side` x `side`
    /// samples (`set.shape`); None for a set in memory.
    pub fn new(
        set: &super::Dataset,
        transform: Transform,
        batch: usize,
        workers: usize,
        order: BatchOrder,
    ) -> Option<PipelineSpec> {
        Some(PipelineSpec {
            files: set.files.clone()?,
            labels: Arc::new(set.labels.clone()),
            transform,
            side: set.shape.height as u32,
            batch,
            workers,
            order,
        })
    }
}

struct Slot {
    state: Mutex<SlotState>,
    changed: Condvar,
}

struct SlotState {
    /// The batch this buffer holds or is being filled with.
    batch: u64,
    images: Vec<u8>,
    labels: Vec<u32>,
    filled: usize,
    bad: Vec<BadFile>,
    failure: Option<String>,
}

struct Shared {
    spec: PipelineSpec,
    slots: Vec<Slot>,
    /// The next sample position to decode (batch * batch size + index).
    claim: AtomicU64,
    end: u64,
    stop: AtomicBool,
    /// The shuffles of the epochs being decoded (at most two are live).
    orders: Mutex<Vec<(u64, Arc<Vec<u32>>)>>,
}

/// A running pipeline from batch `first` to (not including) `end`.
pub struct Pipeline {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    next: u64,
}

impl Pipeline {
    pub fn start(spec: PipelineSpec, first: u64, end: u64) -> Pipeline {
        let sample_bytes = 3 * spec.side as usize * spec.side as usize;
        let slots = (0..DEPTH as u64)
            .map(|s| Slot {
                state: Mutex::new(SlotState {
                    batch: first + (s + DEPTH as u64 - first % DEPTH as u64) % DEPTH as u64,
                    images: vec![0; spec.batch * sample_bytes],
                    labels: vec![0; spec.batch],
                    filled: 0,
                    bad: vec![],
                    failure: None,
                }),
                changed: Condvar::new(),
            })
            .collect();
        let workers = spec.workers.max(1);
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(first * spec.batch as u64),
            end: end.saturating_mul(spec.batch as u64),
            spec,
            slots,
            stop: AtomicBool::new(false),
            orders: Mutex::new(vec![]),
        });
        let threads = (0..workers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("decode-{i}"))
                    .spawn(move || work(&shared))
                    .expect("spawning a decode thread")
            })
            .collect();
        Pipeline {
            shared,
            threads,
            next: first,
        }
    }

    /// The batch `next_batch` will hand out.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Waits for the next batch and lends its images (CHW u8, batch-major)
    /// and labels to `use_batch`; returns the files newly found bad in it.
    pub fn next_batch(
        &mut self,
        use_batch: impl FnOnce(&[u8], &[u32]),
    ) -> Result<Vec<BadFile>, DataError> {
        let k = self.next;
        let slot = &self.shared.slots[(k % DEPTH as u64) as usize];
        let mut state = lock(&slot.state);
        while state.filled < self.shared.spec.batch && state.failure.is_none() {
            state = slot
                .changed
                .wait(state)
                .expect("no panics under the slot lock");
        }
        if let Some(detail) = state.failure.take() {
            return Err(DataError::Invalid {
                path: self.shared.spec.files.root.clone(),
                detail,
            });
        }
        use_batch(&state.images, &state.labels);
        let bad = std::mem::take(&mut state.bad);
        state.batch += DEPTH as u64;
        state.filled = 0;
        slot.changed.notify_all();
        self.next += 1;
        Ok(bad)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for slot in &self.shared.slots {
            let _guard = lock(&slot.state);
            slot.changed.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A decode thread: claims sample positions in order until the end or a stop.
fn work(shared: &Shared) {
    let spec = &shared.spec;
    let sample_bytes = 3 * spec.side as usize * spec.side as usize;
    let mut decoder = Decoder::new();
    let mut sample = vec![0u8; sample_bytes];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let position = shared.claim.fetch_add(1, Ordering::SeqCst);
        if position >= shared.end {
            return;
        }
        let (k, i) = (
            position / spec.batch as u64,
            (position % spec.batch as u64) as usize,
        );
        let (epoch, index) = shared.sample_at(k, i);
        let made = make_sample(spec, &mut decoder, epoch, index, &mut sample);
        let slot = &shared.slots[(k % DEPTH as u64) as usize];
        let mut state = lock(&slot.state);
        while state.batch != k {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            state = slot
                .changed
                .wait(state)
                .expect("no panics under the slot lock");
        }
        match made {
            Ok((used, bad)) => {
                state.images[i * sample_bytes..(i + 1) * sample_bytes].copy_from_slice(&sample);
                state.labels[i] = spec.labels[used as usize];
                state.bad.extend(bad);
                state.filled += 1;
            }
            Err(detail) => state.failure = Some(detail),
        }
        if state.filled == spec.batch || state.failure.is_some() {
            slot.changed.notify_all();
        }
    }
}

impl Shared {
    /// The epoch and dataset index at position `i` of batch `k`.
    fn sample_at(&self, k: u64, i: usize) -> (u64, u32) {
        let len = self.spec.labels.len() as u64;
        let batch = self.spec.batch as u64;
        match self.spec.order {
            BatchOrder::Sequential => (0, (k * batch + i as u64).min(len - 1) as u32),
            BatchOrder::Train {
                seed,
                steps_per_epoch,
                rank,
                ranks,
            } => {
                let epoch = k / steps_per_epoch;
                let position = ((k % steps_per_epoch) * ranks + rank) * batch + i as u64;
                (epoch, self.epoch_order(seed, epoch)[position as usize])
            }
        }
    }

    fn epoch_order(&self, seed: u64, epoch: u64) -> Arc<Vec<u32>> {
        let mut orders = lock(&self.orders);
        if let Some((_, order)) = orders.iter().find(|(e, _)| *e == epoch) {
            return order.clone();
        }
        let files = &self.spec.files;
        let order = Arc::new(if files.is_packed() {
            let shard_of: Vec<u32> = files.members.iter().map(|m| m.shard).collect();
            shard_order(seed, epoch as usize, &shard_of, SHUFFLE_BUFFER)
        } else {
            epoch_order(seed, epoch as usize, self.spec.labels.len())
        });
        orders.push((epoch, order.clone()));
        if orders.len() > 2 {
            orders.remove(0);
        }
        order
    }
}

/// Decodes `index` into `out`, or the next readable file when it is bad
/// (files already known bad are passed over without reading). Returns the
/// index used and the files newly found bad.
fn make_sample(
    spec: &PipelineSpec,
    decoder: &mut Decoder,
    epoch: u64,
    index: u32,
    out: &mut [u8],
) -> Result<(u32, Vec<BadFile>), String> {
    let len = spec.labels.len() as u32;
    let mut newly_bad = vec![];
    let mut candidate = index;
    for _ in 0..MAX_SUBSTITUTES {
        let known_bad = lock(&spec.files.bad).contains_key(&candidate);
        if !known_bad {
            let path = spec.files.path(candidate as usize);
            // A decoder bug on a hostile file is a bad file, not a dead worker.
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                decoder.sample_indexed(
                    &spec.files,
                    &spec.transform,
                    epoch,
                    candidate,
                    spec.side,
                    out,
                )
            }))
            .unwrap_or_else(|_| Err("the decoder panicked on this file".into()));
            match result {
                Ok(()) => return Ok((candidate, newly_bad)),
                Err(reason) => {
                    if lock(&spec.files.bad)
                        .insert(candidate, reason.clone())
                        .is_none()
                    {
                        newly_bad.push(BadFile { path, reason });
                    }
                }
            }
        }
        candidate = (candidate + 1) % len;
    }
    Err(format!(
        "{MAX_SUBSTITUTES} files in a row could not be read (the first: {}); the dataset is \
         damaged or not pictures",
        spec.files.path(index as usize).display()
    ))
}
