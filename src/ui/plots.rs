//! The live plots: loss per step, accuracy per epoch, the learning-rate
//! schedule. All zoom and pan (drag, scroll, double-click to reset).

use eframe::egui::{self, Color32};
use egui_plot::{
    AxisHints, GridInput, Legend, Line, Plot, PlotPoints, Points, VLine, uniform_grid_spacer,
};

use super::history::History;

const RAW: Color32 = Color32::from_rgb(120, 160, 220);
const SMOOTH: Color32 = Color32::from_rgb(240, 150, 40);
const TRAIN: Color32 = Color32::from_rgb(90, 150, 240);
const TEST: Color32 = Color32::from_rgb(240, 110, 60);

/// Grid steps whose largest is a round number (1, 2 or 5 x 10^k) that labels
/// the axis about five times: egui_plot's default powers of ten leave a narrow
/// 0..6 epoch axis with the single label 0.
fn about_five_marks(input: GridInput) -> [f64; 3] {
    let wanted = ((input.bounds.1 - input.bounds.0).abs() / 5.0).max(1e-9);
    let magnitude = 10f64.powf(wanted.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= wanted)
        .unwrap_or(10.0 * magnitude);
    [step / 10.0, step / 2.0, step]
}

fn points(values: &[[f64; 2]]) -> PlotPoints<'_> {
    PlotPoints::from(values.to_vec())
}

pub fn loss(ui: &mut egui::Ui, history: &History, height: f32) {
    Plot::new("loss plot")
        .height(height)
        .legend(Legend::default())
        .x_axis_label("step")
        .y_axis_label("training loss")
        .include_y(0.0)
        .show(ui, |plot| {
            plot.line(
                Line::new("batch loss", points(&history.batch_loss)).color(RAW.gamma_multiply(0.6)),
            );
            plot.line(
                Line::new("smoothed", points(&history.smoothed_loss))
                    .color(SMOOTH)
                    .width(2.0),
            );
        });
}

/// A plot over epochs, with round-number epoch labels.
fn epoch_plot<'a>(id: &str, y_label: &str, height: f32) -> Plot<'a> {
    Plot::new(id)
        .height(height)
        .legend(Legend::default())
        .x_grid_spacer(uniform_grid_spacer(about_five_marks))
        // Epoch labels are short numbers: egui_plot's default spacing for x
        // labels (60 points, for wide ones) hid every label of an 8-epoch
        // run in a narrow plot.
        .custom_x_axes(vec![
            AxisHints::new_x()
                .label("epoch")
                .formatter(|mark, _| format!("{}", (mark.value * 100.0).round() / 100.0))
                .label_spacing(28.0..=40.0),
        ])
        .y_axis_label(y_label.to_string())
}

pub fn accuracy(ui: &mut egui::Ui, history: &History, height: f32) {
    epoch_plot("accuracy plot", "accuracy %", height)
        .include_y(0.0)
        .include_y(100.0)
        // The whole run from the start: before the first evaluation there is
        // no point to fit the axis to.
        .include_x(0.0)
        .include_x(history.epochs())
        .show(ui, |plot| {
            for (name, values, color) in [
                ("train", &history.train_acc, TRAIN),
                ("test", &history.test_acc, TEST),
            ] {
                plot.line(Line::new(name, points(values)).color(color).width(2.0));
                plot.points(Points::new(name, points(values)).color(color).radius(3.0));
            }
        });
}

/// A staircase as separate lines: each flat run, and each vertical edge on
/// its own. A thick line joined at a right angle is drawn with a wedge
/// there (the tessellator's miter), which showed a milestone as a spike.
fn without_sharp_corners(staircase: &[[f64; 2]]) -> Vec<&[[f64; 2]]> {
    let mut pieces = vec![];
    let mut start = 0;
    for i in 1..staircase.len() {
        if staircase[i][0] == staircase[i - 1][0] {
            pieces.push(&staircase[start..i]);
            pieces.push(&staircase[i - 1..=i]);
            start = i;
        }
    }
    pieces.push(&staircase[start..]);
    pieces.retain(|p| !p.is_empty());
    pieces
}

pub fn learning_rate(ui: &mut egui::Ui, history: &History, height: f32) {
    epoch_plot("lr plot", "learning rate", height)
        .include_y(0.0)
        .show(ui, |plot| {
            for piece in without_sharp_corners(&history.lr_schedule) {
                plot.line(Line::new("schedule", points(piece)).color(TRAIN).width(2.0));
            }
            let now = history.steps_done() as f64 / history.steps_per_epoch.max(1) as f64;
            plot.vline(VLine::new("now", now).color(SMOOTH));
        });
}
