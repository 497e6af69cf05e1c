//! Benchmarks: GPU time per op (`bench ops`), whole training steps (`bench
//! train`), the per-adapter kernel choice (`bench tune`), the input
//! pipeline alone (`bench data`) and a long run's resources (`bench soak`).

mod data;
mod ops;
mod soak;
mod train;
mod tune;

pub use data::{BenchDataOptions, DataBenchRow, bench_data};
pub use ops::{BenchOpsOptions, GemmVersion, bench_ops, gemm_rate};
pub use soak::{BenchSoakOptions, SoakSample, bench_soak};
pub use train::{BenchTrainOptions, TrainBenchResult, bench_train};
pub use tune::{BenchTuneOptions, bench_tune};
