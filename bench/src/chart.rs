//! A small SVG chart beside a benchmark's JSON: one panel per measure
//! (units differ), a bar per configuration, the reference rows and Shoal's
//! side by side so the comparison is seen at a glance. Drawn with plotters'
//! SVG backend (text is laid out by estimate, so no font files are needed).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One measure: its title (with its unit) and a value per configuration.
pub struct Panel {
    pub title: String,
    pub bars: Vec<(String, f64)>,
}

pub struct Chart {
    pub title: String,
    pub panels: Vec<Panel>,
}

const WIDTH: u32 = 860;
const LABEL_W: i32 = 330;
const ROW_H: i32 = 24;
const HEAD_H: i32 = 30;

/// The palette: first bar (usually the reference) grey, Shoal's blue, a
/// third configuration orange.
const COLORS: [RGBColor; 4] = [
    RGBColor(140, 140, 140),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

impl Chart {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            panels: vec![],
        }
    }

    /// Adds a panel; `bars` are (configuration, value).
    pub fn panel(mut self, title: impl Into<String>, bars: Vec<(String, f64)>) -> Self {
        self.panels.push(Panel {
            title: title.into(),
            bars,
        });
        self
    }

    fn height(&self) -> u32 {
        let rows: i32 = self
            .panels
            .iter()
            .map(|p| HEAD_H + ROW_H * p.bars.len() as i32 + 10)
            .sum();
        (40 + rows) as u32
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let root = SVGBackend::new(path, (WIDTH, self.height())).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| anyhow!("chart {}: {e:?}", path.display());
        root.fill(&WHITE).map_err(e)?;
        let title = ("sans-serif", 18).into_font().color(&BLACK);
        root.draw(&Text::new(self.title.clone(), (10, 10), title))
            .map_err(e)?;
        let head = ("sans-serif", 15).into_font().color(&BLACK);
        let text = ("sans-serif", 13).into_font().color(&BLACK);
        let bar_w = WIDTH as i32 - LABEL_W - 110;
        let mut y = 40;
        for p in &self.panels {
            root.draw(&Text::new(p.title.clone(), (10, y + 6), head.clone()))
                .map_err(e)?;
            y += HEAD_H;
            let max = p.bars.iter().map(|b| b.1).fold(0.0, f64::max);
            for (i, (label, v)) in p.bars.iter().enumerate() {
                let len = if max > 0.0 {
                    (v / max * bar_w as f64).round() as i32
                } else {
                    0
                };
                let color = COLORS[i % COLORS.len()];
                root.draw(&Text::new(label.clone(), (20, y + 4), text.clone()))
                    .map_err(e)?;
                root.draw(&Rectangle::new(
                    [(LABEL_W, y + 2), (LABEL_W + len.max(1), y + ROW_H - 4)],
                    color.filled(),
                ))
                .map_err(e)?;
                root.draw(&Text::new(
                    fmt(*v),
                    (LABEL_W + len + 6, y + 4),
                    text.clone(),
                ))
                .map_err(e)?;
                y += ROW_H;
            }
            y += 10;
        }
        root.present().map_err(e)?;
        Ok(())
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Where the chart of a report written to `json` goes: beside it.
pub fn path_for(json: &Path) -> PathBuf {
    json.with_extension("svg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_names_every_bar_and_value() {
        let dir = tempfile::Builder::new()
            .prefix("shoal-chart-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("r.svg");
        Chart::new("t")
            .panel(
                "Gbit/s",
                vec![("(a) wire".into(), 15.27), ("(b) Shoal".into(), 12.62)],
            )
            .panel("conn/s", vec![("(a) wire".into(), 10435.0)])
            .write(&path)
            .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for s in ["(a) wire", "(b) Shoal", "15.3", "12.6", "10435", "Gbit/s"] {
            assert!(svg.contains(s), "{s} in {svg}");
        }
        assert_eq!(svg.matches("<rect").count(), 1 + 3, "background and 3 bars");
    }
}
