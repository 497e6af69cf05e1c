//! The live plots: loss per step, accuracy per epoch, the learning-rate
//! schedule. All zoom and pan (drag, scroll, double-click to reset).

use eframe::egui::{self, Color32};
use egui_plot::{Legend, Line, Plot, PlotPoints, Points, VLine};

use super::history::History;

const RAW: Color32 = Color32::from_rgb(120, 160, 220);
const SMOOTH: Color32 = Color32::from_rgb(240, 150, 40);
const TRAIN: Color32 = Color32::from_rgb(90, 150, 240);
const TEST: Color32 = Color32::from_rgb(240, 110, 60);

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

pub fn accuracy(ui: &mut egui::Ui, history: &History, height: f32) {
    Plot::new("accuracy plot")
        .height(height)
        .legend(Legend::default())
        .x_axis_label("epoch")
        .y_axis_label("accuracy %")
        .include_y(0.0)
        .include_y(100.0)
        .include_x(0.0)
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

pub fn learning_rate(ui: &mut egui::Ui, history: &History, height: f32) {
    Plot::new("lr plot")
        .height(height)
        .legend(Legend::default())
        .x_axis_label("epoch")
        .y_axis_label("learning rate")
        .include_y(0.0)
        .show(ui, |plot| {
            plot.line(
                Line::new("schedule", points(&history.lr_schedule))
                    .color(TRAIN)
                    .width(2.0),
            );
            let now = history.steps_done() as f64 / history.steps_per_epoch.max(1) as f64;
            plot.vline(VLine::new("now", now).color(SMOOTH));
        });
}
