//! Finite-difference checks (f64, central differences) of every backward pass in
//! the CPU oracle: for a random upstream gradient g, the oracle's input gradient
//! must equal d/dx sum(g * f(x)) measured numerically.

use rand::{Rng, SeedableRng};
use resnet_wgpu::reference::*;
use resnet_wgpu::seeded::SeededRng;
use resnet_wgpu::shapes::*;

fn random(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = SeededRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Compares `analytic` with the numerical gradient of x -> sum(g * f(x)).
fn check(what: &str, x: &[f64], g: &[f64], f: impl Fn(&[f64]) -> Vec<f64>, analytic: &[f64]) {
    const H: f64 = 1e-6;
    assert_eq!(x.len(), analytic.len(), "{what}: gradient length");
    let mut xp = x.to_vec();
    for i in 0..x.len() {
        xp[i] = x[i] + H;
        let up = dot(g, &f(&xp));
        xp[i] = x[i] - H;
        let down = dot(g, &f(&xp));
        xp[i] = x[i];
        let numeric = (up - down) / (2.0 * H);
        let tol = 1e-6 + 1e-5 * numeric.abs();
        assert!(
            (numeric - analytic[i]).abs() <= tol,
            "{what}: d/dx[{i}] numeric {numeric} vs analytic {}",
            analytic[i]
        );
    }
}

#[test]
fn conv_gradients() {
    for (i, s) in [
        Conv2dShape::square(2, 3, (5, 4), 2, 3, 1, 1),
        Conv2dShape::square(1, 2, (7, 7), 3, 3, 2, 1),
        Conv2dShape::square(1, 2, (9, 8), 2, 7, 2, 3),
        Conv2dShape::square(2, 3, (4, 5), 2, 1, 2, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let x = random(seed, s.input_shape().iter().product());
        let w = random(seed + 1, s.weight_shape().iter().product());
        let g = random(seed + 2, s.output_shape().iter().product());
        check(
            &format!("{s:?} dx"),
            &x,
            &g,
            |x| conv::forward(&s, x, &w),
            &conv::backward_input(&s, &g, &w),
        );
        check(
            &format!("{s:?} dw"),
            &w,
            &g,
            |w| conv::forward(&s, &x, w),
            &conv::backward_weight(&s, &x, &g),
        );
    }
}

#[test]
fn batchnorm_gradients_in_every_fused_form() {
    let s = BatchNormShape {
        batch: 2,
        channels: 3,
        hw: 5,
    };
    let n = s.numel();
    let (x, gamma, beta, residual, g) = (
        random(1, n),
        random(2, 3),
        random(3, 3),
        random(4, n),
        random(5, n),
    );
    for fusion in [Fusion::None, Fusion::Relu, Fusion::AddRelu] {
        let res = (fusion == Fusion::AddRelu).then_some(&residual[..]);
        let forward = |x: &[f64], gamma: &[f64], beta: &[f64], residual: Option<&[f64]>| {
            let stats = batchnorm::batch_stats(&s, x, 1e-5);
            batchnorm::apply(&s, x, &stats, gamma, beta, fusion, residual)
        };
        let stats = batchnorm::batch_stats(&s, &x, 1e-5);
        let y = forward(&x, &gamma, &beta, res);
        let grads = batchnorm::backward(&s, &x, &stats, &gamma, &y, &g, fusion);
        check(
            &format!("{fusion:?} dx"),
            &x,
            &g,
            |x| forward(x, &gamma, &beta, res),
            &grads.dx,
        );
        check(
            &format!("{fusion:?} dgamma"),
            &gamma,
            &g,
            |gm| forward(&x, gm, &beta, res),
            &grads.dgamma,
        );
        check(
            &format!("{fusion:?} dbeta"),
            &beta,
            &g,
            |b| forward(&x, &gamma, b, res),
            &grads.dbeta,
        );
        if let Some(dr) = &grads.dresidual {
            check(
                &format!("{fusion:?} dresidual"),
                &residual,
                &g,
                |r| forward(&x, &gamma, &beta, Some(r)),
                dr,
            );
        }
    }
}

#[test]
fn groupnorm_gradients_in_every_fused_form() {
    for (i, s) in [
        GroupNormShape {
            batch: 2,
            channels: 6,
            groups: 3,
            hw: 5,
        },
        GroupNormShape {
            batch: 3,
            channels: 4,
            groups: 1,
            hw: 3,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let (n, c) = (s.numel(), s.channels);
        let seed = 20 * i as u64;
        let (x, gamma, beta, residual, g) = (
            random(seed + 1, n),
            random(seed + 2, c),
            random(seed + 3, c),
            random(seed + 4, n),
            random(seed + 5, n),
        );
        for fusion in [Fusion::None, Fusion::Relu, Fusion::AddRelu] {
            let res = (fusion == Fusion::AddRelu).then_some(&residual[..]);
            let forward = |x: &[f64], gamma: &[f64], beta: &[f64], residual: Option<&[f64]>| {
                let stats = groupnorm::stats(&s, x, 1e-5);
                groupnorm::apply(&s, x, &stats, gamma, beta, fusion, residual)
            };
            let stats = groupnorm::stats(&s, &x, 1e-5);
            let y = forward(&x, &gamma, &beta, res);
            let grads = groupnorm::backward(&s, &x, &stats, &gamma, &y, &g, fusion);
            let what = |t: &str| format!("{s:?} {fusion:?} {t}");
            check(
                &what("dx"),
                &x,
                &g,
                |x| forward(x, &gamma, &beta, res),
                &grads.dx,
            );
            check(
                &what("dgamma"),
                &gamma,
                &g,
                |gm| forward(&x, gm, &beta, res),
                &grads.dgamma,
            );
            check(
                &what("dbeta"),
                &beta,
                &g,
                |b| forward(&x, &gamma, b, res),
                &grads.dbeta,
            );
            if let Some(dr) = &grads.dresidual {
                check(
                    &what("dresidual"),
                    &residual,
                    &g,
                    |r| forward(&x, &gamma, &beta, Some(r)),
                    dr,
                );
            }
        }
    }
}

#[test]
fn conv_bias_gradient() {
    let s = BatchNormShape {
        batch: 3,
        channels: 5,
        hw: 7,
    };
    let (x, b, g) = (random(60, s.numel()), random(61, 5), random(62, s.numel()));
    check(
        "bias",
        &b,
        &g,
        |b| bias::forward(&s, &x, b),
        &bias::backward(&s, &g),
    );
}

#[test]
fn relu_and_add_gradients() {
    let (x, other, g) = (random(1, 20), random(2, 20), random(3, 20));
    let y = elementwise::relu(&x);
    check(
        "relu",
        &x,
        &g,
        elementwise::relu,
        &elementwise::relu_backward(&g, &y),
    );
    // add's backward is the identity for each operand.
    check("add lhs", &x, &g, |x| elementwise::add(x, &other), &g);
    check("add rhs", &other, &g, |o| elementwise::add(&x, o), &g);
}

#[test]
fn shortcut_gradient() {
    let s = ShortcutShape {
        batch: 2,
        in_c: 3,
        in_h: 5,
        in_w: 4,
        out_c: 8,
        stride: 2,
    };
    let x = random(1, 2 * 3 * 5 * 4);
    let g = random(2, 2 * 8 * s.out_h() * s.out_w());
    check(
        "shortcut",
        &x,
        &g,
        |x| shortcut::forward(&s, x),
        &shortcut::backward(&s, &g),
    );
}

#[test]
fn pooling_gradients() {
    let s = PoolShape {
        batch: 1,
        channels: 2,
        in_h: 7,
        in_w: 6,
        kernel: 3,
        stride: 2,
        pad: 1,
    };
    let x = random(1, 2 * 7 * 6);
    let (y, argmax) = pool::max_forward(&s, &x);
    let g = random(2, y.len());
    check(
        "max pool",
        &x,
        &g,
        |x| pool::max_forward(&s, x).0,
        &pool::max_backward(&s, &g, &argmax),
    );
    let gg = random(3, 2);
    check(
        "global avg",
        &x,
        &gg,
        |x| pool::global_avg_forward(2, 42, x),
        &pool::global_avg_backward(2, 42, &gg),
    );
}

#[test]
fn linear_gradients() {
    let s = LinearShape {
        batch: 3,
        in_f: 5,
        out_f: 4,
    };
    let (x, w, b, g) = (random(1, 15), random(2, 20), random(3, 4), random(4, 12));
    check(
        "fc dx",
        &x,
        &g,
        |x| linear::forward(&s, x, &w, &b),
        &linear::backward_input(&s, &g, &w),
    );
    check(
        "fc dw",
        &w,
        &g,
        |w| linear::forward(&s, &x, w, &b),
        &linear::backward_weight(&s, &x, &g),
    );
    check(
        "fc db",
        &b,
        &g,
        |b| linear::forward(&s, &x, &w, b),
        &linear::backward_bias(&s, &g),
    );
}

#[test]
fn cross_entropy_gradient() {
    let (classes, labels) = (5, [3u32, 0, 4]);
    let logits: Vec<f64> = random(1, 15).iter().map(|v| 3.0 * v).collect();
    let ce = loss::softmax_cross_entropy(&logits, &labels, classes);
    check(
        "cross entropy",
        &logits,
        &[1.0],
        |l| vec![loss::softmax_cross_entropy(l, &labels, classes).mean_loss],
        &ce.grad_logits,
    );
}

#[test]
fn sgd_follows_the_pytorch_update_rule() {
    // Two steps written out by hand from torch.optim.SGD's documentation, with
    // hyper-parameters exact in binary so the comparison can be exact too.
    let cfg = SgdConfig {
        momentum: 0.5,
        weight_decay: 0.25,
        nesterov: false,
    };
    let (lr, grad) = (0.5, [2.0]);
    let (mut w, mut buf) = (vec![1.0], vec![0.0]);
    optim::sgd_step(&cfg, lr, &mut w, &grad, &mut buf);
    let b1 = 2.0 + 0.25 * 1.0; // first step: buf = g
    let w1 = 1.0 - lr * b1;
    assert_eq!((buf[0], w[0]), (b1, w1));
    optim::sgd_step(&cfg, lr, &mut w, &grad, &mut buf);
    let b2 = 0.5 * b1 + (2.0 + 0.25 * w1);
    assert_eq!((buf[0], w[0]), (b2, w1 - lr * b2));
    // Nesterov steps along g + momentum * buf.
    let nesterov = SgdConfig {
        nesterov: true,
        ..cfg
    };
    let (mut w, mut buf) = (vec![1.0], vec![0.0]);
    optim::sgd_step(&nesterov, lr, &mut w, &grad, &mut buf);
    assert_eq!(w[0], 1.0 - lr * (b1 + 0.5 * b1));
}
