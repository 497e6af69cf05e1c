//! 2-D convolution, NCHW input, OIHW weight, zero padding, no bias.

use crate::shapes::Conv2dShape;

/// Visits every (input index, weight index, output index) triple that one
/// multiply-add of the convolution connects; all three passes derive from it.
fn for_each_tap(s: &Conv2dShape, mut f: impl FnMut(usize, usize, usize)) {
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    for b in 0..s.batch {
        for co in 0..s.out_c {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let out = ((b * s.out_c + co) * oh_n + oh) * ow_n + ow;
                    for ci in 0..s.in_c {
                        for kh in 0..s.kernel_h {
                            let Some(ih) = (oh * s.stride + kh)
                                .checked_sub(s.pad)
                                .filter(|&h| h < s.in_h)
                            else {
                                continue;
                            };
                            for kw in 0..s.kernel_w {
                                let Some(iw) = (ow * s.stride + kw)
                                    .checked_sub(s.pad)
                                    .filter(|&w| w < s.in_w)
                                else {
                                    continue;
                                };
                                let inp = ((b * s.in_c + ci) * s.in_h + ih) * s.in_w + iw;
                                let wt = ((co * s.in_c + ci) * s.kernel_h + kh) * s.kernel_w + kw;
                                f(inp, wt, out);
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn forward(s: &Conv2dShape, x: &[f64], w: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; s.output_shape().iter().product()];
    for_each_tap(s, |i, k, o| y[o] += x[i] * w[k]);
    y
}

pub fn backward_input(s: &Conv2dShape, dy: &[f64], w: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; s.input_shape().iter().product()];
    for_each_tap(s, |i, k, o| dx[i] += dy[o] * w[k]);
    dx
}

pub fn backward_weight(s: &Conv2dShape, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let mut dw = vec![0.0; s.weight_shape().iter().product()];
    for_each_tap(s, |i, k, o| dw[k] += dy[o] * x[i]);
    dw
}
