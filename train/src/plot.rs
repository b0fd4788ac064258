//! `nuri plot RUN_DIR`: the loss (and validation loss) and learning-rate curves of a run's
//! `metrics.jsonl` as a PNG, drawn with the `image` crate and a built-in 5×7 pixel font.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use crate::TrainError;

const WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 300;
const MARGIN_LEFT: u32 = 80;
const MARGIN_RIGHT: u32 = 20;
const MARGIN_TOP: u32 = 30;
const MARGIN_BOTTOM: u32 = 40;
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
const GREEN: Rgb<u8> = Rgb([44, 160, 44]);

/// 5×7 glyphs, one byte per row, low 5 bits used (bit 4 = leftmost column).
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        'e' => [0, 0, 14, 17, 31, 16, 14],
        'l' => [12, 4, 4, 4, 4, 4, 14],
        'o' => [0, 0, 14, 17, 17, 17, 14],
        's' => [0, 0, 15, 16, 14, 1, 30],
        'r' => [0, 0, 22, 25, 16, 16, 16],
        't' => [8, 8, 28, 8, 8, 9, 6],
        'p' => [0, 0, 30, 17, 30, 16, 16],
        'v' => [0, 0, 17, 17, 17, 10, 4],
        'a' => [0, 0, 14, 1, 15, 17, 15],
        'i' => [4, 0, 12, 4, 4, 4, 14],
        'n' => [0, 0, 22, 25, 17, 17, 17],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        _ => [0; 7],
    }
}

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str, color: Rgb<u8>) {
    for (i, c) in s.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bits & (1 << (4 - col)) != 0 {
                    let (px, py) = (x + i as u32 * 6 + col, y + row as u32);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, color);
                    }
                }
            }
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: Rgb<u8>) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (dx, dy) in [(0, 0), (0, 1), (1, 0)] {
            let (px, py) = (x.round() as i64 + dx, y.round() as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, color);
            }
        }
    }
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

/// One panel: axes, grid, tick labels, and the series (step, value) in their colors.
/// A named, coloured series of (step, value) points.
type Series<'a> = (&'a str, &'a [(f64, f64)], Rgb<u8>);

fn panel(img: &mut RgbImage, top: u32, series: &[Series<'_>]) {
    let points: Vec<&(f64, f64)> = series.iter().flat_map(|s| s.1.iter()).collect();
    if points.is_empty() {
        return;
    }
    let (x_min, x_max) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (mut y_min, mut y_max) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    if y_max - y_min < 1e-12 {
        y_min -= 0.5;
        y_max += 0.5;
    }
    let x_max = if x_max > x_min { x_max } else { x_min + 1.0 };
    let (left, right) = (MARGIN_LEFT as f64, (WIDTH - MARGIN_RIGHT) as f64);
    let (y_top, y_bottom) = (
        (top + MARGIN_TOP) as f64,
        (top + PANEL_HEIGHT - MARGIN_BOTTOM) as f64,
    );
    let sx = |x: f64| left + (x - x_min) / (x_max - x_min) * (right - left);
    let sy = |y: f64| y_bottom - (y - y_min) / (y_max - y_min) * (y_bottom - y_top);
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let (gx, gy) = (left + f * (right - left), y_bottom - f * (y_bottom - y_top));
        line(img, (left, gy), (right, gy), GRID);
        line(img, (gx, y_top), (gx, y_bottom), GRID);
        text(
            img,
            4,
            gy as u32 - 3,
            &label(y_min + f * (y_max - y_min)),
            BLACK,
        );
        let step = format!("{}", (x_min + f * (x_max - x_min)).round() as i64);
        text(
            img,
            (gx as u32).saturating_sub(3 * step.len() as u32),
            y_bottom as u32 + 8,
            &step,
            BLACK,
        );
    }
    line(img, (left, y_bottom), (right, y_bottom), BLACK);
    line(img, (left, y_top), (left, y_bottom), BLACK);
    let mut x = MARGIN_LEFT;
    for (name, data, color) in series {
        if !data.is_empty() {
            text(img, x, top + 10, name, *color);
            x += 6 * name.len() as u32 + 18;
        }
    }
    text(
        img,
        (right as u32).saturating_sub(24),
        y_bottom as u32 + 20,
        "step",
        BLACK,
    );
    for (_, data, color) in series {
        for w in data.windows(2) {
            line(
                img,
                (sx(w[0].0), sy(w[0].1)),
                (sx(w[1].0), sy(w[1].1)),
                *color,
            );
        }
        if data.len() == 1 {
            line(
                img,
                (sx(data[0].0), sy(data[0].1)),
                (sx(data[0].0) + 1.0, sy(data[0].1)),
                *color,
            );
        }
    }
}

/// Writes `RUN_DIR/curves.png` from `RUN_DIR/metrics.jsonl`; returns its path.
pub fn plot_run(run: &Path) -> Result<PathBuf, TrainError> {
    let path = run.join("metrics.jsonl");
    let text_in = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    let (mut loss, mut val, mut lr) = (Vec::new(), Vec::new(), Vec::new());
    for (i, l) in text_in.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(l).map_err(|e| TrainError::Config {
            path: path.clone(),
            message: format!("line {}: {e}", i + 1),
        })?;
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        if let Some(x) = v["loss"].as_f64() {
            loss.push((step, x));
        }
        if let Some(x) = v["val_loss"].as_f64() {
            val.push((step, x));
        }
        if let Some(x) = v["lr"].as_f64() {
            lr.push((step, x));
        }
    }
    if loss.is_empty() {
        return Err(TrainError::Config {
            path,
            message: "no metrics to plot".into(),
        });
    }
    let mut img = RgbImage::from_pixel(WIDTH, 2 * PANEL_HEIGHT, WHITE);
    panel(
        &mut img,
        0,
        &[("loss", &loss, BLUE), ("val loss", &val, ORANGE)],
    );
    panel(&mut img, PANEL_HEIGHT, &[("lr", &lr, GREEN)]);
    let out = run.join("curves.png");
    img.save(&out).map_err(|e| TrainError::Config {
        path: out.clone(),
        message: format!("cannot write the plot: {e}"),
    })?;
    Ok(out)
}
