//! Option-A shortcut: y[:, pad_front + c] = x[:, c, ::s, ::s], other channels zero.

use crate::shapes::ShortcutShape;

fn for_each_pair(s: &ShortcutShape, mut f: impl FnMut(usize, usize)) {
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    for b in 0..s.batch {
        for c in 0..s.in_c {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let x = ((b * s.in_c + c) * s.in_h + oh * s.stride) * s.in_w + ow * s.stride;
                    let y = ((b * s.out_c + c + s.pad_front()) * oh_n + oh) * ow_n + ow;
                    f(x, y);
                }
            }
        }
    }
}

pub fn forward(s: &ShortcutShape, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; s.batch * s.out_c * s.out_h() * s.out_w()];
    for_each_pair(s, |i, o| y[o] = x[i]);
    y
}

pub fn backward(s: &ShortcutShape, dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; s.batch * s.in_c * s.in_h * s.in_w];
    for_each_pair(s, |i, o| dx[i] = dy[o]);
    dx
}
