// SGD with momentum and weight decay, PyTorch semantics (torch.optim.SGD):
//   g = grad + weight_decay * w
//   buf = momentum * buf + g       (buf starts at zero, so the first step gives
//                                   buf = g, as PyTorch's clone does; no dampening)
//   step = nesterov ? g + momentum * buf : buf
//   w -= lr * step
// The learning rate comes from its own uniform, written once per step by the
// host, so any schedule runs without touching the shader or the bind groups.

struct SgdParams {
    len: u32,
    nesterov: u32,
    momentum: f32,
    weight_decay: f32,
}

struct LearningRate {
    lr: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: SgdParams;
@group(0) @binding(1) var<uniform> schedule: LearningRate;
@group(0) @binding(2) var<storage, read_write> weight: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> momentum_buffer: array<f32>;

@compute @workgroup_size(WG, 1, 1)
fn sgd_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    if i >= p.len { return; }
    let w = weight[i];
    let g = grad[i] + p.weight_decay * w;
    let buf = p.momentum * momentum_buffer[i] + g;
    momentum_buffer[i] = buf;
    let step = select(buf, g + p.momentum * buf, p.nesterov != 0u);
    weight[i] = w - schedule.lr * step;
}

// Mixed precision: the same update from gradients of a loss multiplied by the
// scaler's scale (shaders/scaler.wgsl), skipped (weights and momenta untouched)
// when check_finite found an inf or NaN in this step's gradients, as PyTorch's
// GradScaler.step skips optimizer.step.
@group(0) @binding(5) var<storage, read> scaler: array<u32>;
const SCALER_SCALE: u32 = 0u;
const SCALER_FOUND_INF: u32 = 2u;

@compute @workgroup_size(WG, 1, 1)
fn sgd_step_scaled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    if i >= p.len || scaler[SCALER_FOUND_INF] != 0u { return; }
    let w = weight[i];
    let g = grad[i] / bitcast<f32>(scaler[SCALER_SCALE]) + p.weight_decay * w;
    let buf = p.momentum * momentum_buffer[i] + g;
    momentum_buffer[i] = buf;
    let step = select(buf, g + p.momentum * buf, p.nesterov != 0u);
    weight[i] = w - schedule.lr * step;
}

// The conv and fc kernels read weights as `act`: at f16, a rounded copy of the
// f32 master weights, made at the start of every forward pass (the masters
// change in SGD and when a checkpoint is loaded).
@group(0) @binding(6) var<storage, read_write> weight_copy: array<act>;

@compute @workgroup_size(WG, 1, 1)
fn copy_weights(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    if i >= p.len { return; }
    weight_copy[i] = act(weight[i]);
}
