//! Geometry of each op, shared by the GPU kernels' host code and the CPU oracle.
//! All tensors are NCHW f32 like PyTorch; conv weights are OIHW.

/// A 2-D convolution without bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_c: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Conv2dShape {
    /// A square kernel with the given stride and padding.
    pub fn square(
        batch: usize,
        in_c: usize,
        in_hw: (usize, usize),
        out_c: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Self {
        Conv2dShape {
            batch,
            in_c,
            in_h: in_hw.0,
            in_w: in_hw.1,
            out_c,
            kernel_h: kernel,
            kernel_w: kernel,
            stride,
            pad,
        }
    }
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.pad - self.kernel_h) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.pad - self.kernel_w) / self.stride + 1
    }
    pub fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.in_c, self.in_h, self.in_w]
    }
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.out_c, self.in_c, self.kernel_h, self.kernel_w]
    }
    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.out_c, self.out_h(), self.out_w()]
    }
    /// Multiply-adds times two, for one pass (each of the three passes has the same count).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch
            * self.out_c
            * self.out_h()
            * self.out_w()
            * self.in_c
            * self.kernel_h
            * self.kernel_w) as f64
    }
    /// The problem is well formed: positive sizes, the kernel fits the padded input.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            self.batch,
            self.in_c,
            self.in_h,
            self.in_w,
            self.out_c,
            self.kernel_h,
            self.kernel_w,
            self.stride,
        ];
        if sizes.contains(&0) {
            return Err(format!("conv shape {self:?} has a zero size or stride"));
        }
        if self.kernel_h > self.in_h + 2 * self.pad || self.kernel_w > self.in_w + 2 * self.pad {
            return Err(format!(
                "conv kernel larger than its padded input: {self:?}"
            ));
        }
        Ok(())
    }
}

/// Batch norm over N, H, W for each of C channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchNormShape {
    pub batch: usize,
    pub channels: usize,
    pub hw: usize,
}

impl BatchNormShape {
    pub fn numel(&self) -> usize {
        self.batch * self.channels * self.hw
    }
    /// Values per channel that the batch statistics average over.
    pub fn count(&self) -> usize {
        self.batch * self.hw
    }
}

/// Which activation follows a normalization (batch or group norm), fused
/// into its kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fusion {
    /// y = norm(x)
    None,
    /// y = relu(norm(x))
    Relu,
    /// y = relu(norm(x) + residual)
    AddRelu,
}

/// Group normalization: each sample's channels in `groups` groups of
/// channels / groups, normalized over the group and the plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupNormShape {
    pub batch: usize,
    pub channels: usize,
    pub groups: usize,
    pub hw: usize,
}

impl GroupNormShape {
    pub fn numel(&self) -> usize {
        self.batch * self.channels * self.hw
    }

    pub fn channels_per_group(&self) -> usize {
        self.channels / self.groups
    }

    /// Values each (sample, group) statistic averages over.
    pub fn group_len(&self) -> usize {
        self.channels_per_group() * self.hw
    }

    /// (sample, group) pairs: one mean and one invstd each.
    pub fn stats_len(&self) -> usize {
        self.batch * self.groups
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.groups == 0 || self.channels % self.groups != 0 {
            return Err(format!(
                "{} channels do not split into {} groups",
                self.channels, self.groups
            ));
        }
        if self.numel() == 0 {
            return Err(format!("empty group norm input {self:?}"));
        }
        Ok(())
    }
}

/// Max pooling with a square window (and the global average pool's input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
}

impl PoolShape {
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.pad - self.kernel) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.pad - self.kernel) / self.stride + 1
    }
    pub fn planes(&self) -> usize {
        self.batch * self.channels
    }
    pub fn validate(&self) -> Result<(), String> {
        if [
            self.batch,
            self.channels,
            self.in_h,
            self.in_w,
            self.kernel,
            self.stride,
        ]
        .contains(&0)
        {
            return Err(format!("pool shape {self:?} has a zero size"));
        }
        // PyTorch's rule: every window then holds at least one real pixel.
        if 2 * self.pad > self.kernel {
            return Err(format!(
                "pool padding {} exceeds half the window {}",
                self.pad, self.kernel
            ));
        }
        if self.kernel > self.in_h + 2 * self.pad || self.kernel > self.in_w + 2 * self.pad {
            return Err(format!(
                "pool window larger than its padded input: {self:?}"
            ));
        }
        Ok(())
    }
}

/// The option-A shortcut: subsample by `stride`, zero-pad channels in_c -> out_c.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortcutShape {
    pub batch: usize,
    pub in_c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_c: usize,
    pub stride: usize,
}

impl ShortcutShape {
    /// x[:, :, ::s, ::s] keeps ceil(H / s) rows.
    pub fn out_h(&self) -> usize {
        self.in_h.div_ceil(self.stride)
    }
    pub fn out_w(&self) -> usize {
        self.in_w.div_ceil(self.stride)
    }
    /// Zero channels before the copied ones; the rest go after.
    pub fn pad_front(&self) -> usize {
        (self.out_c - self.in_c) / 2
    }
    pub fn validate(&self) -> Result<(), String> {
        if self.out_c < self.in_c || self.stride == 0 {
            return Err(format!(
                "option-A shortcut needs out_c >= in_c and stride > 0: {self:?}"
            ));
        }
        Ok(())
    }
}

/// A fully connected layer: x [batch, in_f] -> y [batch, out_f].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    pub batch: usize,
    pub in_f: usize,
    pub out_f: usize,
}

/// GPU augmentation settings: crop offsets in [-pad, pad], optional flip, then
/// (x/255 - mean) / std per channel.
/// mean/std hold four channels for the shader's vec4; files hold the three
/// of RGB images.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    pub pad: u32,
    pub flip: bool,
    #[serde(with = "rgb_mean")]
    pub mean: [f32; 4],
    #[serde(with = "rgb_std")]
    pub std: [f32; 4],
}

/// Three channels on disk, the fourth (padding) channel implied. Files with
/// four (written before) are read too.
fn rgb_to_disk<S: serde::Serializer>(v: &[f32; 4], s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&v[..3], s)
}

fn rgb_from_disk<'de, D: serde::Deserializer<'de>>(d: D, pad: f32) -> Result<[f32; 4], D::Error> {
    let v: Vec<f32> = serde::Deserialize::deserialize(d)?;
    match v.as_slice() {
        [r, g, b] | [r, g, b, _] => Ok([*r, *g, *b, pad]),
        _ => Err(serde::de::Error::custom(format!(
            "expected 3 channel values, got {}",
            v.len()
        ))),
    }
}

mod rgb_mean {
    pub(super) use super::rgb_to_disk as serialize;
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f32; 4], D::Error> {
        super::rgb_from_disk(d, 0.0)
    }
}

mod rgb_std {
    pub(super) use super::rgb_to_disk as serialize;
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f32; 4], D::Error> {
        super::rgb_from_disk(d, 1.0)
    }
}

impl AugmentConfig {
    /// The CIFAR-10 recipe: pad 4, flip, the usual per-channel statistics.
    pub fn cifar_train() -> Self {
        AugmentConfig {
            pad: 4,
            flip: true,
            mean: [0.4914, 0.4822, 0.4465, 0.0],
            std: [0.2023, 0.1994, 0.2010, 1.0],
        }
    }
    /// No crop or flip, normalizing with RGB `mean`/`std` (the padding
    /// channel keeps the identity).
    pub fn normalize_only(mean: [f32; 3], std: [f32; 3]) -> Self {
        AugmentConfig {
            pad: 0,
            flip: false,
            mean: [mean[0], mean[1], mean[2], 0.0],
            std: [std[0], std[1], std[2], 1.0],
        }
    }

    /// The RGB mean and std (without the padding channel).
    pub fn rgb_normalization(&self) -> ([f32; 3], [f32; 3]) {
        let (m, s) = (self.mean, self.std);
        ([m[0], m[1], m[2]], [s[0], s[1], s[2]])
    }

    /// Evaluation: normalize only.
    pub fn eval(self) -> Self {
        AugmentConfig {
            pad: 0,
            flip: false,
            ..self
        }
    }
}

/// Image geometry of a dataset (u8, C x H x W per image).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    pub fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// SGD hyper-parameters (PyTorch's torch.optim.SGD without dampening).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
}
