//! Max pooling (padding counts as -inf, first maximum wins) and global average pooling.

use crate::shapes::PoolShape;

/// Output and, per output, the index of its maximum within the input plane.
pub fn max_forward(s: &PoolShape, x: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let mut y = Vec::with_capacity(s.planes() * oh_n * ow_n);
    let mut argmax = Vec::with_capacity(y.capacity());
    for plane in 0..s.planes() {
        let input = &x[plane * s.in_h * s.in_w..(plane + 1) * s.in_h * s.in_w];
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                let mut best: Option<(f64, usize)> = None;
                for kh in 0..s.kernel {
                    let Some(ih) = (oh * s.stride + kh)
                        .checked_sub(s.pad)
                        .filter(|&h| h < s.in_h)
                    else {
                        continue;
                    };
                    for kw in 0..s.kernel {
                        let Some(iw) = (ow * s.stride + kw)
                            .checked_sub(s.pad)
                            .filter(|&w| w < s.in_w)
                        else {
                            continue;
                        };
                        let index = ih * s.in_w + iw;
                        if best.is_none_or(|(v, _)| input[index] > v) {
                            best = Some((input[index], index));
                        }
                    }
                }
                let (v, index) =
                    best.expect("validated pool shapes have a real pixel in every window");
                y.push(v);
                argmax.push(index as u32);
            }
        }
    }
    (y, argmax)
}

pub fn max_backward(s: &PoolShape, dy: &[f64], argmax: &[u32]) -> Vec<f64> {
    let hw = s.in_h * s.in_w;
    let out_hw = s.out_h() * s.out_w();
    let mut dx = vec![0.0; s.planes() * hw];
    for (o, (&g, &index)) in dy.iter().zip(argmax).enumerate() {
        dx[(o / out_hw) * hw + index as usize] += g;
    }
    dx
}

/// x [planes, hw] -> y [planes].
pub fn global_avg_forward(planes: usize, hw: usize, x: &[f64]) -> Vec<f64> {
    (0..planes)
        .map(|p| x[p * hw..(p + 1) * hw].iter().sum::<f64>() / hw as f64)
        .collect()
}

pub fn global_avg_backward(planes: usize, hw: usize, dy: &[f64]) -> Vec<f64> {
    (0..planes * hw).map(|i| dy[i / hw] / hw as f64).collect()
}
