//! Command-line front end.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::builder::TypedValueParser;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use resnet_wgpu::bench::{
    self, BenchDataOptions, BenchOpsOptions, BenchSoakOptions, BenchTrainOptions, BenchTuneOptions,
};
use resnet_wgpu::cli::TrainArgs;
use resnet_wgpu::cli::eval::{EvalArgs, eval};
use resnet_wgpu::cli::info::{InfoArgs, info};
use resnet_wgpu::cli::train::{launched_as_job, train, train_job};
use resnet_wgpu::gpu::{BackendChoice, GpuContext, TunePolicy};
use resnet_wgpu::settings::RunSettings;
use resnet_wgpu::{headless, out};

#[derive(Parser)]
#[command(
    name = "resnet-wgpu",
    version,
    about = "Deep residual networks trained on the GPU with WGSL compute shaders"
)]
struct Cli {
    /// Graphics API to run on (auto honours WGPU_BACKEND).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, global = true)]
    backend: BackendChoice,
    /// Which kernel candidates run (convs, batch-norm and loss reductions):
    /// auto = the cached choice for this adapter, measuring missing shapes on a
    /// GPU and using the built-in choice on a CPU adapter; cached = never
    /// measure; off = built-in choices only; all = measure every shape again
    /// (see `bench tune`); gpu = the built-in choices of a hardware GPU on any
    /// adapter (to test on a CPU driver the kernels a GPU runs).
    #[arg(long, global = true, default_value = "auto", value_parser = clap::builder::PossibleValuesParser::new(TunePolicy::NAMES).map(|s| s.parse::<TunePolicy>().expect("a listed name")))]
    tune: TunePolicy,
    /// The adapter to run on: an index in `info`'s list [default: the one the
    /// backend prefers; under MPI, the process's rank on its machine modulo
    /// the adapters]. The window picks its own.
    #[arg(long, global = true, value_name = "N", value_parser = resnet_wgpu::cli::whole::<usize>())]
    adapter: Option<usize>,
    /// Without a command: the desktop window, training on the built-in dataset.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a ResNet (the built-in dataset unless --data is given) in the
    /// desktop window, or in the terminal with --no-gui.
    Train(Box<TrainArgs>),
    /// Loss and accuracy of a checkpoint on a dataset's test set (the run's
    /// own data unless data flags pick other data).
    Eval(EvalArgs),
    /// The most likely classes of image files under a checkpoint, prepared
    /// as its run prepared images.
    Predict(PredictArgs),
    /// Fetch CIFAR-10 or CIFAR-100 (binary version, MD5-checked) with curl
    /// and unpack it; prints the --data folder.
    Download(DownloadArgs),
    /// The adapter, its limits, and the memory plan of a model.
    Info(InfoArgs),
    /// Decode every picture of an image folder (or packed shards) once and
    /// list those that cannot be read (training skips them, with a warning each).
    Check(CheckArgs),
    /// Write an image folder once as WebDataset tar shards with the pictures'
    /// longer side capped, for faster epochs (`--data SHARDS` trains on them).
    Pack(PackArgs),
    /// Measure GPU time per op, or images/s of whole training steps.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Every op at the shapes of ResNet-20, next to this project's GEMM.
    Ops(BenchOpsOptions),
    /// Images/s, first-step time and step recording time of whole models.
    Train(BenchTrainOptions),
    /// Time every kernel candidate of every conv of the models on this adapter
    /// and cache the fastest (what training then runs).
    Tune(BenchTuneOptions),
    /// Images/s of the input pipeline alone (read, decode, augment, batch; no
    /// GPU) on an image folder, per worker count.
    Data(BenchDataOptions),
    /// A long run (evaluations, checkpoints, a run folder) that prints its
    /// resident memory, open files and GPU memory after each epoch.
    Soak(BenchSoakOptions),
}

#[derive(Args)]
struct PackArgs {
    /// The image folder (train/ and val/ with a folder per class).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// The new folder of shards (train/, val/, classes.txt).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Longer side of the re-encoded pictures (smaller ones keep their size).
    #[arg(long, value_name = "PIXELS", default_value_t = 512, value_parser = resnet_wgpu::cli::whole::<u32>())]
    max_side: u32,
    /// Bytes per shard before the next one starts, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024, value_parser = resnet_wgpu::cli::whole::<u64>())]
    shard_mib: u64,
    /// JPEG quality of the re-encoded pictures.
    #[arg(long, default_value_t = 90, value_parser = resnet_wgpu::cli::whole_in::<u8>(1, 100))]
    quality: u8,
    /// Encoding threads [default: one per core].
    #[arg(long, value_name = "N", value_parser = resnet_wgpu::cli::whole::<usize>())]
    workers: Option<usize>,
}

#[derive(Args)]
struct CheckArgs {
    /// An image folder (train/ and val/ with a folder per class, or class
    /// folders directly).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Decode threads [default: one per core].
    #[arg(long, value_name = "N", value_parser = resnet_wgpu::cli::whole::<usize>())]
    workers: Option<usize>,
}

#[derive(Args)]
struct PredictArgs {
    /// A run folder, a checkpoint folder or a model.safetensors of this tool.
    #[arg(long, value_name = "PATH")]
    checkpoint: PathBuf,
    /// JPEG or PNG files.
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
    /// How many classes to list per image.
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = resnet_wgpu::cli::whole::<usize>())]
    top: usize,
    /// Print one JSON array: [{"image", "top": [{"class", "probability"}]}].
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DownloadArgs {
    /// cifar10 or cifar100.
    #[arg(value_parser = ["cifar10", "cifar100"])]
    dataset: String,
    /// Folder to put it in.
    #[arg(long, value_name = "DIR", default_value = "data")]
    to: PathBuf,
    /// Fetch from this address instead (a mirror), with its MD5.
    #[arg(long, value_name = "URL", requires = "md5")]
    url: Option<String>,
    /// The MD5 of the archive at --url.
    #[arg(long, value_name = "HEX", requires = "url")]
    md5: Option<String>,
    /// Give up when under 1 KiB/s arrives for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = resnet_wgpu::cli::whole_in::<u32>(1, 3600))]
    stall_timeout: u32,
}

fn main() {
    // Whole-number flags parse "-1" themselves and refuse it by name.
    let matches =
        resnet_wgpu::cli::numbers::negative_numbers_as_values(Cli::command()).get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Which flags were typed (a resume refuses those that contradict its run,
    // even when they equal the default).
    let typed = |name: &str| {
        matches
            .subcommand_matches(name)
            .map(flags_given)
            .unwrap_or_default()
    };
    match &mut cli.command {
        Some(Command::Train(args)) => args.given = typed("train"),
        Some(Command::Eval(args)) => args.given = typed("eval"),
        _ => {}
    }
    headless::init_logging();
    match run(cli) {
        Ok(Some(signal)) => std::process::exit(128 + signal),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The flags given on the command line, as `--name`.
fn flags_given(matches: &clap::ArgMatches) -> std::collections::BTreeSet<String> {
    matches
        .ids()
        .filter(|id| {
            matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
        })
        .map(|id| format!("--{}", id.as_str().replace('_', "-")))
        .collect()
}

/// Runs the command; Some(signal) when a stop signal ended a training run
/// (after its checkpoint), for the exit code.
fn run(cli: Cli) -> Result<Option<i32>> {
    let command = match cli.command {
        // No GPU needed.
        Some(Command::Download(args)) => return download(&args),
        Some(Command::Check(args)) => return check(&args).map(|()| None),
        Some(Command::Pack(args)) => return pack(&args).map(|()| None),
        Some(Command::Bench {
            what: BenchWhat::Data(options),
        }) => return bench::bench_data(&options).map(|_| None),
        None => return window(cli.backend, cli.tune, RunSettings::default(), true),
        Some(Command::Train(args)) if launched_as_job() => {
            return train_job(cli.backend, cli.tune, cli.adapter, &args);
        }
        Some(Command::Train(args)) if !args.no_gui => {
            return window(cli.backend, cli.tune, args.settings(), false);
        }
        // A modeled GPU, not this machine's.
        Some(Command::Info(args)) if args.dispatches => {
            resnet_wgpu::cli::name_settings_by_flags();
            return resnet_wgpu::cli::info::info_dispatches(&args).map(|()| None);
        }
        Some(command) => command,
    };
    resnet_wgpu::cli::name_settings_by_flags();
    let ctx = Arc::new(GpuContext::on_adapter(cli.backend, cli.adapter)?);
    ctx.set_tune_policy(cli.tune);
    let done = |r: Result<()>| r.map(|()| None);
    match command {
        Command::Train(args) => train(ctx, &args.settings()),
        Command::Eval(args) => done(eval(ctx, &args)),
        Command::Predict(args) => done(predict(ctx, &args)),
        Command::Info(args) => done(info(&ctx, cli.backend, &args)),
        Command::Download(args) => download(&args),
        Command::Check(args) => done(check(&args)),
        Command::Pack(args) => done(pack(&args)),
        Command::Bench {
            what: BenchWhat::Data(options),
        } => done(bench::bench_data(&options).map(|_| ())),
        Command::Bench {
            what: BenchWhat::Ops(options),
        } => done(Ok(bench::bench_ops(&ctx, &options)?)),
        Command::Bench {
            what: BenchWhat::Train(options),
        } => done(bench::bench_train(ctx, &options).map(|_| ())),
        Command::Bench {
            what: BenchWhat::Tune(options),
        } => done(bench::bench_tune(&ctx, &options)),
        Command::Bench {
            what: BenchWhat::Soak(options),
        } => done(bench::bench_soak(ctx, &options).map(|_| ())),
    }
}

/// The desktop window; without a display (or a build without it) the same
/// run goes on in the terminal.
fn window(
    backend: BackendChoice,
    tune: TunePolicy,
    settings: RunSettings,
    defaults: bool,
) -> Result<Option<i32>> {
    #[cfg(feature = "gui")]
    {
        use resnet_wgpu::ui::{AppOptions, desktop};
        let options = AppOptions {
            autostart: true,
            defaults_may_shrink: defaults,
        };
        match desktop::run(backend, tune, settings.clone(), options) {
            Ok(()) => return Ok(None),
            Err(e) => {
                eprintln!("no window: {e}; training in the terminal instead (--no-gui skips this)")
            }
        }
    }
    #[cfg(not(feature = "gui"))]
    eprintln!("this build has no window (feature \"gui\" off); training in the terminal");
    resnet_wgpu::cli::name_settings_by_flags();
    let mut settings = settings;
    let ctx = GpuContext::new_blocking(backend)?;
    ctx.set_tune_policy(tune);
    if defaults && ctx.is_software() {
        // The small run the window would pick on a CPU adapter, for the same reason.
        settings.shrink_for_cpu();
    }
    train(Arc::new(ctx), &settings)
}

/// `check`: every picture of both splits decoded once; the unreadable ones
/// listed (an error when there are any).
fn check(args: &CheckArgs) -> Result<()> {
    use resnet_wgpu::data::pipeline::{BatchOrder, Pipeline, PipelineSpec};
    use resnet_wgpu::data::transform::{EVAL_CROP, Transform};
    use resnet_wgpu::data::{default_workers, load_pictures};
    let split = load_pictures(&args.data, 32)?;
    let mut bad = 0;
    for (name, set) in [("training", &split.train), ("evaluation", &split.test)] {
        const BATCH: usize = 64;
        let batches = set.len().div_ceil(BATCH) as u64;
        let workers = args.workers.unwrap_or_else(default_workers).max(1);
        let eval = Transform::Eval { crop: EVAL_CROP };
        let spec = PipelineSpec::new(set, eval, BATCH, workers, BatchOrder::Sequential)
            .expect("an image folder is file-backed");
        let files = spec.files.clone();
        let mut decoding = Pipeline::start(spec, 0, batches);
        for _ in 0..batches {
            for file in decoding.next_batch(|_, _| {})? {
                out!("{}: {}", file.path.display(), file.reason);
            }
        }
        out!(
            "{name} set: {} pictures, {} unreadable",
            set.len(),
            files.bad_count()
        );
        bad += files.bad_count();
    }
    if bad > 0 {
        bail!(
            "{}: {bad} pictures cannot be read (listed above)",
            args.data.display()
        );
    }
    Ok(())
}

/// `pack`: the folder as shards, with what was written and skipped.
fn pack(args: &PackArgs) -> Result<()> {
    use resnet_wgpu::data::shards::{PackOptions, pack};
    if !(8..=65_535).contains(&args.max_side) {
        bail!("--max-side must be 8 to 65535, got {}", args.max_side);
    }
    if !(1..=100).contains(&args.quality) || args.shard_mib == 0 || args.workers == Some(0) {
        bail!("--quality must be 1 to 100, and --shard-mib and --workers at least 1");
    }
    let options = PackOptions {
        max_side: args.max_side,
        shard_bytes: args.shard_mib.saturating_mul(1 << 20),
        quality: args.quality,
        workers: args
            .workers
            .unwrap_or_else(resnet_wgpu::data::default_workers),
    };
    let summary = pack(&args.data, &args.out, options)?;
    for (path, reason) in &summary.bad {
        eprintln!("warning: skipped {}: {reason}", path.display());
    }
    out!(
        "{}: {} pictures in {} shards, {:.1} MiB ({} unreadable skipped); train with --data {}",
        args.out.display(),
        summary.samples,
        summary.shards,
        summary.bytes as f64 / f64::from(1 << 20),
        summary.bad.len(),
        args.out.display()
    );
    Ok(())
}

/// Some(signal) when a stop signal ended it (for the exit code).
fn download(args: &DownloadArgs) -> Result<Option<i32>> {
    let (_, known) = resnet_wgpu::download::ARCHIVES
        .iter()
        .find(|(name, _)| *name == args.dataset)
        .context("unknown dataset")?;
    let md5 = args.md5.as_deref().map(str::to_lowercase);
    let archive = match (&args.url, &md5) {
        (Some(url), Some(md5)) => resnet_wgpu::download::Archive { url, md5, ..*known },
        _ => *known,
    };
    headless::handle_stop_signals().context("installing the Ctrl-C/SIGTERM handler")?;
    let transfer = resnet_wgpu::download::Transfer {
        stall_seconds: args.stall_timeout,
        stopped: &headless::stop_requested,
    };
    let folder = match resnet_wgpu::download::download(&archive, &args.to, &transfer) {
        Err(e) => match e.downcast_ref::<resnet_wgpu::download::Interrupted>() {
            Some(&resnet_wgpu::download::Interrupted(signal)) => {
                eprintln!("download {e}");
                return Ok(Some(signal));
            }
            None => return Err(e),
        },
        Ok(folder) => folder,
    };
    out!("{}", folder.display());
    eprintln!(
        "train on it: resnet-wgpu train --no-gui --data {}",
        folder.display()
    );
    Ok(None)
}

fn predict(ctx: Arc<GpuContext>, args: &PredictArgs) -> Result<()> {
    let predictions = resnet_wgpu::predict::predict(ctx, &args.checkpoint, &args.images, args.top)?;
    if args.json {
        out!("{}", serde_json::to_string(&predictions)?);
        return Ok(());
    }
    for p in predictions {
        let classes: Vec<String> = p
            .top
            .iter()
            .map(|c| format!("{} {:.1}%", c.class, 100.0 * c.probability))
            .collect();
        out!("{}: {}", p.image.display(), classes.join(", "));
    }
    Ok(())
}
