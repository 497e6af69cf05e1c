// Softmax cross-entropy, mean over the batch, fused with its gradient, and the
// metrics a training loop wants without reading anything back per step.
//
// forward_backward: one invocation per sample writes its loss, whether its argmax
// equals the label (sample_correct[b]), whether the label's logit is among the
// five largest (sample_correct[batch + b]; ties count in its favour), and
// d(mean loss)/d(logits) = (softmax - onehot) / valid, times the loss scale
// (loss_scale[0]: 1 at f32; the dynamic scale of mixed precision, see
// shaders/scaler.wgsl, so that small f16 activation gradients do not flush to
// zero).
// Only the first `valid` samples count: an evaluation pass pads its last batch
// and the padding must add nothing to the loss, the accuracy or the gradient.
// reduce_metrics: one workgroup sums the batch and adds it to the metrics
// accumulator, which the host reads back (and clears) every few steps.

struct LossParams {
    batch: u32,
    classes: u32,
    valid: u32,
    _pad: u32,
}

// metrics layout (f32): running sums since the last clear, plus this batch's mean.
const METRIC_LOSS_SUM: u32 = 0u;
const METRIC_CORRECT: u32 = 1u;
const METRIC_SAMPLES: u32 = 2u;
const METRIC_BATCH_LOSS: u32 = 3u;
const METRIC_TOP5: u32 = 4u;

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: LossParams;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> grad_logits: array<f32>;
@group(0) @binding(4) var<storage, read_write> sample_loss: array<f32>;
// [2, batch]: top-1 hits, then top-5 hits.
@group(0) @binding(5) var<storage, read_write> sample_correct: array<f32>;
@group(0) @binding(6) var<storage, read_write> metrics: array<f32>;
// The loss scaler's words; word 0 is the scale.
@group(0) @binding(7) var<storage, read> loss_scale: array<f32>;

// workgroup_sum(value, lid) comes from the reduction prelude this file is
// compiled with (shaders/reduce.wgsl or reduce_subgroup.wgsl).

// One invocation per sample.
override WG_SAMPLES: u32 = 64u;
@compute @workgroup_size(WG_SAMPLES, 1, 1)
fn forward_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let b = gid.x;
    if b >= p.batch { return; }
    let row = b * p.classes;
    if b >= p.valid {
        sample_loss[b] = 0.0;
        sample_correct[b] = 0.0;
        sample_correct[p.batch + b] = 0.0;
        for (var k = 0u; k < p.classes; k++) {
            grad_logits[row + k] = 0.0;
        }
        return;
    }
    // The first maximum wins ties, like torch.argmax.
    var best = logits[row];
    var best_class = 0u;
    for (var k = 1u; k < p.classes; k++) {
        let v = logits[row + k];
        if v > best {
            best = v;
            best_class = k;
        }
    }
    var sum_exp = 0.0;
    for (var k = 0u; k < p.classes; k++) {
        sum_exp += exp(logits[row + k] - best);
    }
    let label = labels[b];
    let label_logit = logits[row + label];
    var above = 0u;
    for (var k = 0u; k < p.classes; k++) {
        above += select(0u, 1u, logits[row + k] > label_logit);
    }
    // log(sum exp(x - max)) - (x_label - max): adding the maximum back
    // (log(sum) + max - x_label) rounds the loss away when every logit is
    // large (2.0 instead of ln 10 at 1e7). Non-finite logits stay NaN: a
    // divergence, not a zero loss.
    sample_loss[b] = log(sum_exp) - (label_logit - best);
    sample_correct[b] = select(0.0, 1.0, best_class == label);
    sample_correct[p.batch + b] = select(0.0, 1.0, above < 5u);
    let scale = loss_scale[0] / f32(p.valid);
    for (var k = 0u; k < p.classes; k++) {
        let softmax = exp(logits[row + k] - best) / sum_exp;
        grad_logits[row + k] = (softmax - select(0.0, 1.0, k == label)) * scale;
    }
}

@compute @workgroup_size(WG, 1, 1)
fn reduce_metrics(@builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = vec2<f32>(0.0);
    var top5 = 0.0;
    for (var b = lid.x; b < p.batch; b += WG) {
        acc += vec2<f32>(sample_loss[b], sample_correct[b]);
        top5 += sample_correct[p.batch + b];
    }
    let total = workgroup_sum(acc, lid.x);
    let total_top5 = workgroup_sum(vec2<f32>(top5, 0.0), lid.x).x;
    if lid.x == 0u {
        metrics[METRIC_LOSS_SUM] += total.x;
        metrics[METRIC_CORRECT] += total.y;
        metrics[METRIC_TOP5] += total_top5;
        metrics[METRIC_SAMPLES] += f32(p.valid);
        metrics[METRIC_BATCH_LOSS] = total.x / f32(p.valid);
    }
}
