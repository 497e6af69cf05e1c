#[cfg(not(target_arch = "wasm32"))]
use super::error::GpuError;
#[cfg(not(target_arch = "wasm32"))]
use super::{Dispatch, GpuContext};

/// How long a group of dispatches took on the GPU, per repetition.
#[derive(Clone, Copy, Debug)]
pub struct OpTiming {
    pub seconds: f64,
    /// True when measured with GPU timestamp queries, false for CPU wall clock
    /// around submit-and-wait (adapters without TIMESTAMP_QUERY).
    pub from_timestamps: bool,
}

/// Runs `dispatches` once to warm up (drivers such as lavapipe compile a shader at
/// its first dispatch), then `reps` times in one compute pass, and reports the
/// time per repetition.
#[cfg(not(target_arch = "wasm32"))]
pub fn time_dispatches(
    ctx: &GpuContext,
    dispatches: &[&Dispatch],
    reps: u32,
) -> Result<OpTiming, GpuError> {
    super::submit(ctx, "bench warm-up", dispatches);
    ctx.wait_idle()?;
    let reps = reps.max(1);
    let queries = ctx.has_timestamps().then(|| {
        ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("bench timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        })
    });
    let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench timestamps resolve"),
        size: 16,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench timestamps staging"),
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("bench"),
        });
    {
        let timestamp_writes = queries.as_ref().map(|q| wgpu::ComputePassTimestampWrites {
            query_set: q,
            beginning_of_pass_write_index: Some(0),
            end_of_pass_write_index: Some(1),
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("bench"),
            timestamp_writes,
        });
        for _ in 0..reps {
            for d in dispatches {
                d.record(&mut pass);
            }
        }
    }
    if let Some(q) = &queries {
        encoder.resolve_query_set(q, 0..2, &resolve, 0);
        encoder.copy_buffer_to_buffer(&resolve, 0, &staging, 0, 16);
    }
    let start = std::time::Instant::now();
    ctx.queue.submit([encoder.finish()]);
    ctx.wait_idle()?;
    let wall = start.elapsed().as_secs_f64();

    let Some(_) = queries else {
        return Ok(OpTiming {
            seconds: wall / f64::from(reps),
            from_timestamps: false,
        });
    };
    let ticks: [u64; 2] = super::readback::read_blocking(ctx, staging, "bench timestamps", |b| {
        *bytemuck::from_bytes(&b[..16])
    })?;
    let nanos =
        ticks[1].saturating_sub(ticks[0]) as f64 * f64::from(ctx.queue.get_timestamp_period());
    // A driver that reports zero-width timestamps is not measuring: fall back.
    if nanos <= 0.0 {
        return Ok(OpTiming {
            seconds: wall / f64::from(reps),
            from_timestamps: false,
        });
    }
    Ok(OpTiming {
        seconds: nanos * 1e-9 / f64::from(reps),
        from_timestamps: true,
    })
}
