//! Benchmarks: GPU time per op (`bench ops`) and whole training steps (`bench train`).

mod ops;
mod train;

pub use ops::{BenchOpsOptions, bench_ops};
pub use train::{BenchTrainOptions, TrainBenchResult, bench_train};
