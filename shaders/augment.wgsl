// Builds a training batch on the GPU from the u8 dataset resident there:
// index gather, pad-and-random-crop, random horizontal flip, per-channel normalize.
// Randomness is a hash of (seed, sample), so a step is reproducible from its seed
// and the CPU oracle can replay it exactly.
//
// Padding is zero in pixel space before normalizing, like torchvision's
// RandomCrop(padding=4) on the raw image followed by Normalize.

struct AugmentParams {
    batch: u32,
    channels: u32,   // at most 4
    height: u32,
    width: u32,
    pad: u32,        // crop offsets in [-pad, pad]; 0 disables cropping
    flip: u32,       // 1: flip each sample with probability 1/2
    seed: u32,
    dataset_len: u32,
    mean: vec4<f32>,
    inv_std: vec4<f32>,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: AugmentParams;
// Dataset images, u8 NCHW packed four to a u32 (little-endian).
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> dataset_labels: array<u32>;
// Dataset index of each batch sample.
@group(0) @binding(3) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read_write> output: array<act>;
@group(0) @binding(5) var<storage, read_write> labels: array<u32>;

// PCG hash (Jarzynski and Olano, "Hash Functions for GPU Rendering", 2020).
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn image_byte(offset: u32) -> f32 {
    return f32((images[offset / 4u] >> ((offset % 4u) * 8u)) & 0xffu);
}

@compute @workgroup_size(WG, 1, 1)
fn augment(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat_index(wg, lid, groups, WG);
    let hw = p.height * p.width;
    let chw = p.channels * hw;
    if i >= p.batch * chw { return; }
    let b = i / chw;
    let c = (i / hw) % p.channels;
    let y = (i % hw) / p.width;
    let x = i % p.width;
    let sample = min(indices[b], p.dataset_len - 1u);

    let h0 = pcg_hash(p.seed ^ pcg_hash(b));
    let h1 = pcg_hash(h0);
    let h2 = pcg_hash(h1);
    let span = 2u * p.pad + 1u;
    let dy = i32(h0 % span) - i32(p.pad);
    let dx = i32(h1 % span) - i32(p.pad);
    let flipped = p.flip != 0u && (h2 & 1u) == 1u;

    let xs = select(x, p.width - 1u - x, flipped);
    let sy = i32(y) + dy;
    let sx = i32(xs) + dx;
    var pixel = 0.0;
    if sy >= 0 && sy < i32(p.height) && sx >= 0 && sx < i32(p.width) {
        pixel = image_byte(sample * chw + c * hw + u32(sy) * p.width + u32(sx));
    }
    output[i] = act((pixel / 255.0 - p.mean[c]) * p.inv_std[c]);
    if (i % chw) == 0u {
        labels[b] = dataset_labels[sample];
    }
}
