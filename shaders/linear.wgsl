// Fully connected layer y = x W^T + b, x [batch, in_f], W [out_f, in_f] (PyTorch
// layout), b [out_f]. Small in a ResNet (64x10 on CIFAR), so one output per invocation.
// x, W (the f16 copy at f16) and dx are `act`; the logits, their gradient, dW and
// db are f32 at either precision, so the loss and SGD never see f16.

struct LinearParams {
    batch: u32,
    in_f: u32,
    out_f: u32,
    _pad0: u32,
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: LinearParams;
@group(0) @binding(1) var<storage, read> input: array<act>;
@group(0) @binding(2) var<storage, read> weight: array<act>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;
@group(0) @binding(5) var<storage, read> grad_output: array<f32>;
@group(0) @binding(6) var<storage, read_write> grad_input: array<act>;
@group(0) @binding(7) var<storage, read_write> grad_weight: array<f32>;
@group(0) @binding(8) var<storage, read_write> grad_bias: array<f32>;

@compute @workgroup_size(WG, 1, 1)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= p.batch * p.out_f { return; }
    let b = i / p.out_f;
    let o = i % p.out_f;
    var sum = bias[o];
    for (var k = 0u; k < p.in_f; k++) {
        sum = fma(f32(input[b * p.in_f + k]), f32(weight[o * p.in_f + k]), sum);
    }
    output[i] = sum;
}

@compute @workgroup_size(WG, 1, 1)
fn backward_input(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= p.batch * p.in_f { return; }
    let b = i / p.in_f;
    let k = i % p.in_f;
    var sum = 0.0;
    for (var o = 0u; o < p.out_f; o++) {
        sum = fma(grad_output[b * p.out_f + o], f32(weight[o * p.in_f + k]), sum);
    }
    grad_input[i] = act(sum);
}

@compute @workgroup_size(WG, 1, 1)
fn backward_weight(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= p.out_f * p.in_f { return; }
    let o = i / p.in_f;
    let k = i % p.in_f;
    var sum = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        sum = fma(grad_output[b * p.out_f + o], f32(input[b * p.in_f + k]), sum);
    }
    grad_weight[i] = sum;
}

@compute @workgroup_size(WG, 1, 1)
fn backward_bias(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    if o >= p.out_f { return; }
    var sum = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        sum += grad_output[b * p.out_f + o];
    }
    grad_bias[o] = sum;
}
