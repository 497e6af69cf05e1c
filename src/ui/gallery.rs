//! Pictures of the evaluation: a grid of test images with predicted and true
//! labels, and the confusion matrix as a heat map.

use eframe::egui::{self, Color32, ColorImage, Sense, TextureHandle, TextureOptions, vec2};

use crate::data::Dataset;

const RIGHT: Color32 = Color32::from_rgb(60, 180, 90);
const WRONG: Color32 = Color32::from_rgb(220, 70, 60);

/// The first test images as textures, with their true labels.
pub struct Gallery {
    textures: Vec<TextureHandle>,
    labels: Vec<u32>,
    class_names: Vec<String>,
}

/// One test image as RGBA pixels (grey for one channel; NCHW u8 in).
pub fn color_image(data: &Dataset, index: usize) -> ColorImage {
    let s = data.shape;
    let plane = s.height * s.width;
    let image = data.image(index);
    let channel = |c: usize, p: usize| image[c.min(s.channels - 1) * plane + p];
    let pixels = (0..plane)
        .map(|p| Color32::from_rgb(channel(0, p), channel(1, p), channel(2, p)))
        .collect();
    ColorImage::new([s.width, s.height], pixels)
}

impl Gallery {
    pub fn new(ctx: &egui::Context, data: &Dataset, count: usize) -> Self {
        let count = count.min(data.len());
        let textures = (0..count)
            .map(|i| {
                ctx.load_texture(
                    format!("test image {i}"),
                    color_image(data, i),
                    TextureOptions::NEAREST,
                )
            })
            .collect();
        Gallery {
            textures,
            labels: data.labels[..count].to_vec(),
            class_names: data.class_names.clone(),
        }
    }

    fn name(&self, class: u32) -> &str {
        self.class_names
            .get(class as usize)
            .map_or("?", String::as_str)
    }

    /// The grid; each picture framed green (right) or red (wrong) once
    /// predictions exist, with "predicted / true" under it.
    pub fn show(&self, ui: &mut egui::Ui, predictions: Option<&[u32]>, side: f32) {
        let columns = ((ui.available_width() + 4.0) / (side + 8.0))
            .floor()
            .max(1.0) as usize;
        egui::Grid::new("test images")
            .spacing(vec2(4.0, 4.0))
            .show(ui, |ui| {
                for (i, texture) in self.textures.iter().enumerate() {
                    let truth = self.labels[i];
                    let predicted = predictions.and_then(|p| p.get(i)).copied();
                    ui.vertical(|ui| self.cell(ui, texture, truth, predicted, side));
                    if (i + 1) % columns == 0 {
                        ui.end_row();
                    }
                }
            });
    }

    fn cell(
        &self,
        ui: &mut egui::Ui,
        texture: &TextureHandle,
        truth: u32,
        predicted: Option<u32>,
        side: f32,
    ) {
        let (rect, response) = ui.allocate_exact_size(vec2(side, side), Sense::hover());
        ui.painter().image(
            texture.id(),
            rect,
            egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
            Color32::WHITE,
        );
        let (color, caption) = match predicted {
            Some(p) => (
                if p == truth { RIGHT } else { WRONG },
                self.name(p).to_string(),
            ),
            None => (ui.visuals().weak_text_color(), "?".to_string()),
        };
        ui.painter().rect_stroke(
            rect,
            2.0,
            egui::Stroke::new(2.0, color),
            egui::StrokeKind::Outside,
        );
        response.on_hover_text(format!(
            "true: {}\npredicted: {}",
            self.name(truth),
            predicted.map_or("not evaluated yet", |p| self.name(p))
        ));
        ui.add_sized(
            vec2(side, 14.0),
            egui::Label::new(egui::RichText::new(caption).small().color(color)).truncate(),
        );
    }
}

/// counts[true][predicted] over the samples that have a prediction.
pub fn confusion_counts(labels: &[u32], predicted: &[u32], classes: usize) -> Vec<Vec<u32>> {
    let mut counts = vec![vec![0u32; classes]; classes];
    for (&truth, &p) in labels.iter().zip(predicted) {
        if let Some(cell) = counts
            .get_mut(truth as usize)
            .and_then(|row| row.get_mut(p as usize))
        {
            *cell += 1;
        }
    }
    counts
}

/// The confusion matrix: rows are true classes, columns predictions; each
/// cell shaded by the share of its row, hover for the count.
pub fn show_confusion(ui: &mut egui::Ui, counts: &[Vec<u32>], class_names: &[String]) {
    let classes = counts.len();
    let labelled = classes <= 20;
    let label_width = if labelled { 64.0 } else { 0.0 };
    let cell = ((ui.available_width() - label_width) / classes as f32).clamp(3.0, 28.0);
    let size = vec2(label_width + cell * classes as f32, cell * classes as f32);
    let (rect, response) = ui.allocate_exact_size(size, Sense::hover());
    let painter = ui.painter_at(rect);
    let text = ui.visuals().text_color();
    let origin = rect.min + vec2(label_width, 0.0);
    let mut hovered = None;
    for (t, row) in counts.iter().enumerate() {
        let total = row.iter().sum::<u32>().max(1) as f32;
        if labelled {
            painter.text(
                egui::pos2(
                    rect.min.x + label_width - 4.0,
                    origin.y + (t as f32 + 0.5) * cell,
                ),
                egui::Align2::RIGHT_CENTER,
                &class_names[t],
                egui::FontId::proportional(10.0),
                text,
            );
        }
        for (p, &count) in row.iter().enumerate() {
            let r = egui::Rect::from_min_size(
                origin + vec2(p as f32 * cell, t as f32 * cell),
                vec2(cell, cell),
            );
            painter.rect_filled(r.shrink(0.5), 0.0, heat(count as f32 / total, t == p));
            if response.hovered() && response.hover_pos().is_some_and(|pos| r.contains(pos)) {
                hovered = Some((t, p, count, total));
            }
        }
    }
    if let Some((t, p, count, total)) = hovered {
        response.on_hover_text(format!(
            "true {}, predicted {}: {count} ({:.0}% of the row)",
            class_names[t],
            class_names[p],
            100.0 * count as f32 / total
        ));
    }
}

/// From the panel background (0) to full colour (1): green on the diagonal,
/// orange off it, so mistakes stand out.
fn heat(share: f32, diagonal: bool) -> Color32 {
    let (r, g, b) = if diagonal {
        (60, 180, 90)
    } else {
        (235, 120, 40)
    };
    let a = (share.sqrt() * 255.0) as u8;
    Color32::from_rgba_unmultiplied(r, g, b, a.max(12))
}
