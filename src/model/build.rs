//! The layer lists of the two ResNet shapes: basic blocks (CIFAR ResNets,
//! ResNet-18/34) and bottleneck blocks (ResNet-50/101/152), with torchvision's
//! names.

use super::{BlockSpec, ConvBnSpec, Network, Norm, Shortcut, ShortcutKind};

pub(super) fn stages_of(widths: [usize; 4], layers: [usize; 4]) -> Vec<(usize, usize, usize)> {
    (0..4)
        .map(|i| (widths[i], layers[i], if i == 0 { 1 } else { 2 }))
        .collect()
}

fn conv_bn(
    prefix: &str,
    conv: &str,
    bn: &str,
    io: (usize, usize),
    k: usize,
    s: usize,
) -> ConvBnSpec {
    let join = |n: &str| {
        if prefix.is_empty() {
            n.to_string()
        } else {
            format!("{prefix}.{n}")
        }
    };
    ConvBnSpec {
        conv: join(conv),
        bn: join(bn),
        in_c: io.0,
        out_c: io.1,
        kernel: k,
        stride: s,
        pad: k / 2,
        norm: Norm::Batch,
        bias: false,
    }
}

fn shortcut(
    prefix: &str,
    kind: ShortcutKind,
    in_c: usize,
    out_c: usize,
    stride: usize,
) -> Shortcut {
    if in_c == out_c && stride == 1 {
        return Shortcut::Identity;
    }
    match kind {
        ShortcutKind::A => Shortcut::PadChannels {
            in_c,
            out_c,
            stride,
        },
        ShortcutKind::B => Shortcut::Projection(conv_bn(
            prefix,
            "downsample.0",
            "downsample.1",
            (in_c, out_c),
            1,
            stride,
        )),
    }
}

fn stem(in_channels: usize, width: usize, imagenet: bool) -> ConvBnSpec {
    let (kernel, stride) = if imagenet { (7, 2) } else { (3, 1) };
    conv_bn("", "conv1", "bn1", (in_channels, width), kernel, stride)
}

/// Stages of basic blocks: (width, blocks, stride of the first block).
pub(super) fn basic_network(
    in_channels: usize,
    stem_width: usize,
    imagenet: bool,
    stages: &[(usize, usize, usize)],
    kind: ShortcutKind,
    num_classes: usize,
) -> Network {
    let mut blocks = vec![];
    let mut in_c = stem_width;
    for (stage, &(width, count, first_stride)) in stages.iter().enumerate() {
        for i in 0..count {
            let prefix = format!("layer{}.{i}", stage + 1);
            let stride = if i == 0 { first_stride } else { 1 };
            blocks.push(BlockSpec {
                units: vec![
                    conv_bn(&prefix, "conv1", "bn1", (in_c, width), 3, stride),
                    conv_bn(&prefix, "conv2", "bn2", (width, width), 3, 1),
                ],
                shortcut: shortcut(&prefix, kind, in_c, width, stride),
                name: prefix,
            });
            in_c = width;
        }
    }
    Network {
        stem: stem(in_channels, stem_width, imagenet),
        stem_max_pool: imagenet,
        blocks,
        features: in_c,
        num_classes,
        in_channels,
    }
}

/// torchvision's Bottleneck (v1.5): the stride sits on the 3x3 conv.
pub(super) fn bottleneck_network(
    in_channels: usize,
    layers: [usize; 4],
    num_classes: usize,
) -> Network {
    let mut blocks = vec![];
    let mut in_c = 64;
    for (stage, &(width, count, first_stride)) in
        stages_of([64, 128, 256, 512], layers).iter().enumerate()
    {
        let out_c = width * 4;
        for i in 0..count {
            let prefix = format!("layer{}.{i}", stage + 1);
            let stride = if i == 0 { first_stride } else { 1 };
            blocks.push(BlockSpec {
                units: vec![
                    conv_bn(&prefix, "conv1", "bn1", (in_c, width), 1, 1),
                    conv_bn(&prefix, "conv2", "bn2", (width, width), 3, stride),
                    conv_bn(&prefix, "conv3", "bn3", (width, out_c), 1, 1),
                ],
                shortcut: shortcut(&prefix, ShortcutKind::B, in_c, out_c, stride),
                name: prefix,
            });
            in_c = out_c;
        }
    }
    Network {
        stem: stem(in_channels, 64, true),
        stem_max_pool: true,
        blocks,
        features: in_c,
        num_classes,
        in_channels,
    }
}
