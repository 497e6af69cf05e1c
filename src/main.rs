//! Command-line front end.

use anyhow::Result;
use clap::{Parser, Subcommand};
use resnet_wgpu::bench::{self, BenchOpsOptions};
use resnet_wgpu::gpu::{BackendChoice, GpuContext};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the adapter, its API, device type and the limits that matter here.
    Info,
    /// Measure GPU time per op.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Every op at the shapes of ResNet-20, next to this project's GEMM.
    Ops(BenchOpsOptions),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let ctx = GpuContext::new_blocking(cli.backend)?;
    match cli.command {
        Command::Info => print_info(&ctx),
        Command::Bench {
            what: BenchWhat::Ops(options),
        } => bench::bench_ops(&ctx, &options)?,
    }
    Ok(())
}

fn print_info(ctx: &GpuContext) {
    let l = &ctx.limits;
    println!("adapter: {}", ctx.describe());
    println!(
        "timestamp queries: {}",
        if ctx.has_timestamps() { "yes" } else { "no" }
    );
    println!(
        "max storage buffer binding: {} MiB",
        l.max_storage_buffer_binding_size >> 20
    );
    println!("max buffer size: {} MiB", l.max_buffer_size >> 20);
    println!(
        "max storage buffers per stage: {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "max workgroups per dimension: {}",
        l.max_compute_workgroups_per_dimension
    );
    println!(
        "max invocations per workgroup: {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "max workgroup storage: {} KiB",
        l.max_compute_workgroup_storage_size >> 10
    );
}
