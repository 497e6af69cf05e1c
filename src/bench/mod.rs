//! Benchmarks: GPU time per op (`bench ops`), whole training steps (`bench
//! train`) and the per-adapter kernel choice (`bench tune`).

mod ops;
mod train;
mod tune;

pub use ops::{BenchOpsOptions, GemmVersion, bench_ops, gemm_rate};
pub use train::{BenchTrainOptions, TrainBenchResult, bench_train};
pub use tune::{BenchTuneOptions, bench_tune};
