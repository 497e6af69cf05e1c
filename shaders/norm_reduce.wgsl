// Helpers of the two-level normalization reductions (batchnorm.wgsl,
// groupnorm.wgsl), joined after the reduction prelude (workgroup_sum) and
// before the op file, which defines WG and the `stats` buffer.
//
// A statistics pass runs a 2-D grid (parts x items): each workgroup reduces a
// part of one item's values to a partial, and the pass that needs the item's
// statistics merges the item's partials itself (no finalize dispatch).

// Count, mean and sum of squared deviations of some values (Welford; merged
// as Chan et al. do), numerically stable at any count and any offset.
struct Moments {
    count: f32,
    mean: f32,
    m2: f32,
}

fn moments_add(m: ptr<function, Moments>, x: f32) {
    (*m).count += 1.0;
    let d = x - (*m).mean;
    (*m).mean += d / (*m).count;
    (*m).m2 += d * (x - (*m).mean);
}

fn moments_merge(a: Moments, b: Moments) -> Moments {
    let n = a.count + b.count;
    if n == 0.0 {
        return a;
    }
    let d = b.mean - a.mean;
    return Moments(n, a.mean + d * (b.count / n), a.m2 + b.m2 + d * d * (a.count * b.count / n));
}

// The moments of the whole workgroup's values from each invocation's: the sum
// first, then the squared deviations from the workgroup's mean (exact in real
// arithmetic, no cancellation). Every invocation gets them; uniform control flow.
fn workgroup_moments(m: Moments, lid: u32) -> Moments {
    let total = workgroup_sum(vec2<f32>(m.count * m.mean, m.count), lid);
    let mean = select(0.0, total.x / total.y, total.y > 0.0);
    let d = m.mean - mean;
    let m2 = workgroup_sum(vec2<f32>(m.m2 + m.count * d * d, 0.0), lid).x;
    return Moments(total.y, mean, m2);
}

// Partials live in the op file's `stats` buffer, 4 words each (count, mean,
// M2, unused), an item's `parts` of them one after another from `first`.
fn store_moments(at: u32, m: Moments) {
    stats[at] = m.count;
    stats[at + 1u] = m.mean;
    stats[at + 2u] = m.m2;
}

// The moments of an item's `parts` partials from `first`, merged over the
// workgroup; every invocation gets them. Call from uniform control flow.
fn merged_moments(first: u32, parts: u32, lid: u32) -> Moments {
    var m = Moments(0.0, 0.0, 0.0);
    for (var q = lid; q < parts; q += WG) {
        let b = first + 4u * q;
        m = moments_merge(m, Moments(stats[b], stats[b + 1u], stats[b + 2u]));
    }
    return workgroup_moments(m, lid);
}

// Walks t, t + WG, t + 2 WG, ... as (row, col) over rows of `len` values,
// with no division per step: the reductions' loops over (sample, plane)
// positions, so no element pays a run-time division or modulo.
struct Cursor {
    row: u32,
    col: u32,
    drow: u32,
    dcol: u32,
    len: u32,
}

fn cursor_at(t: u32, len: u32) -> Cursor {
    return Cursor(t / len, t % len, WG / len, WG % len, len);
}

fn cursor_step(c: ptr<function, Cursor>) {
    (*c).row += (*c).drow;
    (*c).col += (*c).dcol;
    if (*c).col >= (*c).len {
        (*c).col -= (*c).len;
        (*c).row += 1u;
    }
}
