//! Benchmarks: GPU time per op (`bench ops`), whole training steps (`bench
//! train`), the per-adapter kernel choice (`bench tune`) and the input
//! pipeline alone (`bench data`).

mod data;
mod ops;
mod train;
mod tune;

pub use data::{BenchDataOptions, DataBenchRow, bench_data};
pub use ops::{BenchOpsOptions, GemmVersion, bench_ops, gemm_rate};
pub use train::{BenchTrainOptions, TrainBenchResult, bench_train};
pub use tune::{BenchTuneOptions, bench_tune};
