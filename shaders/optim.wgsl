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
