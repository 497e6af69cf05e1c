//! The trainer: memory plan, step recording, schedules, metrics and checkpoints.

pub mod checkpoint;
pub mod collective;
pub mod config;
mod feed;
pub mod metrics;
pub mod plan;
pub mod schedule;
pub mod throughput;
pub mod trainer;

pub use feed::FeedMode;
pub use plan::{ConvChoice, ParamArena, Plan, PlanRequest, PlanSummary, conv_layers};
pub use schedule::{DecayKind, Schedule};
pub use throughput::{StepClock, format_duration, format_rate, time_left};
pub use trainer::{
    CheckpointEvery, EpochReport, ModelSnapshot, Progress, StepReport, TrainConfig, TrainEvent,
    Trainer,
};
