//! Data parallelism over MPI with real processes: `mpirun -np 2` of the
//! binary on this machine's adapter (lavapipe in CI). Needs the `mpi` feature
//! and Open MPI (`mpirun`); `.ci/run` runs it as
//! `cargo test --features mpi --test mpi`.
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::metrics;
use resnet_wgpu::train::checkpoint::StateDict;

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-wgpu-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The binary with a private kernel-choice cache.
fn with_cache(mut command: Command) -> Command {
    let cache = std::env::temp_dir().join(format!("resnet-wgpu-mpi-cache-{}", std::process::id()));
    command.env("RESNET_WGPU_CACHE_DIR", cache);
    command
}

/// `mpirun -np <np> resnet-wgpu <args>` (as root too, more ranks than cores).
fn mpirun(np: usize, args: &str) -> Command {
    let mut command = Command::new("mpirun");
    command
        .args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(np.to_string())
        .arg(env!("CARGO_BIN_EXE_resnet-wgpu"))
        .args(args.split_whitespace());
    with_cache(command)
}

/// The binary alone, without MPI.
fn alone(args: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_resnet-wgpu"));
    command.args(args.split_whitespace());
    with_cache(command)
}

fn run(mut command: Command) -> Output {
    command
        .output()
        .expect("mpirun (Open MPI) and the binary run")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn model(run: &Path) -> StateDict {
    let last = std::fs::read_to_string(run.join("checkpoints/last")).unwrap();
    StateDict::read(&run.join("checkpoints").join(last).join("model.safetensors")).unwrap()
}

/// The largest difference between two state dicts' values, over the largest
/// value: 0 for the same weights.
fn relative_difference(a: &StateDict, b: &StateDict) -> f32 {
    assert_eq!(a.tensors.len(), b.tensors.len());
    let (mut diff, mut scale) = (0f32, 0f32);
    for (name, (shape, values)) in &a.tensors {
        let (other_shape, other) = &b.tensors[name];
        assert_eq!(shape, other_shape, "{name}");
        for (x, y) in values.iter().zip(other) {
            diff = diff.max((x - y).abs());
            scale = scale.max(x.abs());
        }
    }
    diff / scale
}

const TINY: &str = "train --no-gui --model resnet8 --synthetic-test 16 --crop-pad 0 --no-flip \
                    --schedule constant --lr 0.05 --name run";

/// DDP's promise: 2 processes of batch B train as 1 of batch 2B. Group norm
/// has no batch statistics, and without augmentation a step's images are
/// the same either way, so the weights after 8 steps differ by summation
/// order only: a float's rounding over a few hundred terms per gradient,
/// grown through 8 steps of momentum, about 1e-6 of the largest weight
/// (measured 5.8e-8 on lavapipe); 1e-4 leaves room. Summing the gradients instead
/// of averaging them doubles every step (relative difference ~1e-2), and a
/// rank that trained on the other rank's images sees other gradients.
#[test]
fn two_processes_train_as_one_with_the_combined_batch() {
    let out = out_dir("exact");
    let flags = format!(
        "{TINY} --synthetic-train 64 --norm group --groups 4 --epochs 2 --out {}",
        out.display()
    );
    let two = run(mpirun(2, &format!("{flags} --batch-size 8")));
    assert!(two.status.success(), "{}", text(&two));
    assert!(text(&two).contains("batch 8 x 2 processes = 16 per step"));
    assert!(text(&two).contains("gradient exchange (2 processes)"));
    let two_dir = out.join("run");
    let one_dir = out_dir("exact-one");
    let one_flags = format!(
        "{TINY} --synthetic-train 64 --norm group --groups 4 --epochs 2 --out {}",
        one_dir.display()
    );
    let one = run(alone(&format!("{one_flags} --batch-size 16")));
    assert!(one.status.success(), "{}", text(&one));
    let one_dir = one_dir.join("run");

    let difference = relative_difference(&model(&two_dir), &model(&one_dir));
    eprintln!("2 processes of batch 8 vs 1 of batch 16: weights differ by {difference:e}");
    assert!(difference < 1e-4, "weights differ by {difference:e}");
    for (a, b) in metrics(&two_dir).iter().zip(metrics(&one_dir)) {
        assert_eq!(a.step, b.step);
        assert!((a.train_loss - b.train_loss).abs() < 1e-4, "{a:?} {b:?}");
        assert!((a.test_loss - b.test_loss).abs() < 1e-4, "{a:?} {b:?}");
        assert_eq!(a.test_acc, b.test_acc);
    }
    let config = std::fs::read_to_string(two_dir.join("config.json")).unwrap();
    assert!(config.contains("\"world_size\": 2"), "{config}");
}

/// With batch norm each process normalizes with its own batch's statistics,
/// yet the weights stay the same everywhere (the drift check after every
/// epoch would stop the run otherwise) and the loss falls. A replica that
/// drifts is caught and named.
#[test]
fn batch_norm_processes_stay_identical_and_learn_and_drift_is_named() {
    let out = out_dir("bn");
    let flags = format!(
        "{TINY} --synthetic-train 128 --batch-size 16 --epochs 3 --out {}",
        out.display()
    );
    let two = run(mpirun(2, &flags));
    assert!(two.status.success(), "{}", text(&two));
    let records = metrics(&out.join("run"));
    assert_eq!(records.len(), 3);
    assert!(
        records[2].train_loss < records[0].train_loss,
        "the loss did not fall: {records:?}"
    );

    let drifted = out_dir("drift");
    let flags = format!(
        "{TINY} --synthetic-train 64 --batch-size 8 --epochs 2 --out {}",
        drifted.display()
    );
    let mut command = mpirun(2, &flags);
    command.env("RESNET_WGPU_PERTURB_RANK", "1");
    let failed = run(command);
    assert!(!failed.status.success());
    let said = text(&failed);
    assert!(
        said.contains("rank(s) 1 hold other weights than rank 0"),
        "{said}"
    );
}

/// A process killed with SIGKILL mid-run ends the whole job within seconds,
/// naming it (no process waits forever in the all-reduce); the checkpoint
/// written before stays loadable by a process alone.
#[test]
fn a_killed_rank_ends_the_job_and_the_checkpoint_stays_usable() {
    let out = out_dir("kill");
    let flags = format!(
        "{TINY} --batch-size 8 --synthetic-train 128 --epochs 3 --out {}",
        out.display()
    );
    let mut command = mpirun(2, &flags);
    // 8 steps per epoch: killed in the second epoch, after a checkpoint.
    command.env("RESNET_WGPU_KILL_RANK", "1:11");
    let started = Instant::now();
    let killed = run(command);
    assert!(!killed.status.success());
    let said = text(&killed);
    assert!(said.contains("rank 1"), "{said}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the job took {:?} to end",
        started.elapsed()
    );
    // The epoch's checkpoint, written by rank 0 before the kill, evaluates
    // and resumes without MPI: one process takes the global batch.
    let dir = out.join("run");
    let eval = run(alone(&format!(
        "eval --checkpoint {} --json",
        dir.display()
    )));
    assert!(eval.status.success(), "{}", text(&eval));
    let resumed = run(alone(&format!(
        "train --no-gui --resume {} --epochs 3",
        dir.display()
    )));
    let said = text(&resumed);
    assert!(resumed.status.success(), "{said}");
    assert!(said.contains("it goes on with 1 of batch 16"), "{said}");
    assert_eq!(metrics(&dir).last().unwrap().step, 24);
}

/// A resume with a process count that cannot split the global batch is
/// refused, naming the counts that can; SIGUSR1 to mpirun (which it
/// forwards) stops every process after the same step, with a checkpoint.
#[test]
fn resumes_regroup_or_refuse_and_a_forwarded_signal_checkpoints() {
    let out = out_dir("resume");
    let flags = format!(
        "{TINY} --batch-size 8 --synthetic-train 2048 --epochs 1 --out {}",
        out.display()
    );
    let mut child = mpirun(2, &flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let dir = out.join("run");
    // Signal once the run is under way (its config is written).
    let started = Instant::now();
    while !dir.join("config.json").exists() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(5));
    let _ = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status();
    let stopped = child.wait_with_output().unwrap();
    let said = text(&stopped);
    assert!(said.contains("stopped by signal 10 at step"), "{said}");
    let last = std::fs::read_to_string(dir.join("checkpoints/last")).unwrap();
    let step: u64 = last.trim_start_matches("step-").parse().unwrap();
    assert!(step > 0 && step < 128, "{last}");

    // The same number of processes goes on from the checkpoint.
    let more = format!(
        "train --no-gui --resume {} --max-steps {}",
        dir.display(),
        step + 2
    );
    let resumed = run(mpirun(2, &more));
    assert!(resumed.status.success(), "{}", text(&resumed));
    let last = std::fs::read_to_string(dir.join("checkpoints/last")).unwrap();
    assert_eq!(last, format!("step-{:08}", step + 2));

    let three = run(mpirun(
        3,
        &format!("train --no-gui --resume {}", dir.display()),
    ));
    assert!(!three.status.success());
    let said = text(&three);
    assert!(
        said.contains("3 processes cannot split them evenly"),
        "{said}"
    );
}
