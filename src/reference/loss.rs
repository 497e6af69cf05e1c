//! Softmax cross-entropy averaged over the batch (nn.CrossEntropyLoss).

/// Loss, gradient and accuracy of one batch.
#[derive(Clone, Debug)]
pub struct CrossEntropy {
    pub mean_loss: f64,
    pub per_sample_loss: Vec<f64>,
    /// d(mean_loss) / d(logits)
    pub grad_logits: Vec<f64>,
    /// Samples whose first maximal logit is the label.
    pub correct: usize,
    /// Samples whose label's logit has fewer than five logits above it.
    pub top5: usize,
}

pub fn softmax_cross_entropy(logits: &[f64], labels: &[u32], classes: usize) -> CrossEntropy {
    let batch = labels.len();
    let mut out = CrossEntropy {
        mean_loss: 0.0,
        per_sample_loss: vec![],
        grad_logits: vec![0.0; logits.len()],
        correct: 0,
        top5: 0,
    };
    for (b, &label) in labels.iter().enumerate() {
        let row = &logits[b * classes..(b + 1) * classes];
        let argmax = (0..classes).fold(0, |best, k| if row[k] > row[best] { k } else { best });
        let max = row[argmax];
        let sum_exp: f64 = row.iter().map(|v| (v - max).exp()).sum();
        // The kernel's form: nothing large is added back.
        let loss = sum_exp.ln() - (row[label as usize] - max);
        out.per_sample_loss.push(loss);
        out.correct += usize::from(argmax == label as usize);
        let above = row.iter().filter(|&&v| v > row[label as usize]).count();
        out.top5 += usize::from(above < 5);
        for k in 0..classes {
            let p = (row[k] - max).exp() / sum_exp;
            out.grad_logits[b * classes + k] =
                (p - f64::from(u8::from(k == label as usize))) / batch as f64;
        }
    }
    out.mean_loss = out.per_sample_loss.iter().sum::<f64>() / batch as f64;
    out
}
