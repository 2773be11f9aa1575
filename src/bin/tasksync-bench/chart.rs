//! The latency chart: every phase's distribution as a percentile curve, both axes logarithmic,
//! so the median, the tail and the maximum all stay readable on one SVG.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use plotters::prelude::*;
use serde_json::{Value, json};

pub struct Series {
    pub name: String,
    /// `(1 / (1 - q), milliseconds)`, from [`crate::stats::percentile_curve`].
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn json(&self) -> Value {
        let points: Vec<[f64; 2]> = self
            .points
            .iter()
            .map(|&(x, ms)| [crate::stats::round(x), crate::stats::round(ms)])
            .collect();
        json!({ "name": self.name, "points": points })
    }

    fn from_json(value: &Value) -> Option<Self> {
        let points = value["points"]
            .as_array()?
            .iter()
            .map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            name: value["name"].as_str()?.to_owned(),
            points,
        })
    }
}

/// Draws the chart again from a results file (its `chart_series` and `chart_title`).
pub fn render_from_results(results: &Path, path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(results).with_context(|| format!("read {}", results.display()))?;
    let json: Value = serde_json::from_str(&text)?;
    let series = json["chart_series"]
        .as_array()
        .context("the results hold no chart_series")?
        .iter()
        .map(Series::from_json)
        .collect::<Option<Vec<_>>>()
        .context("malformed chart_series")?;
    let title = json["chart_title"].as_str().unwrap_or("tasksync latency");
    render(path, title, &series)
}

/// `x = 1 / (1 - q)` back to a percentile label: 1 is the minimum, 10 is p90, 100 is p99.
fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "min".to_owned();
    }
    let p = 100.0 * (1.0 - 1.0 / x);
    let text = format!("{p:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("p{text}")
}

fn ms_label(y: f64) -> String {
    if y >= 1000.0 {
        format!("{} s", round_sig(y / 1000.0))
    } else {
        format!("{}", round_sig(y))
    }
}

/// Drops the float noise of the tick arithmetic (0.30000000000000004 -> 0.3).
fn round_sig(v: f64) -> f64 {
    let scale = 10f64.powi(6 - v.abs().log10().ceil() as i32);
    (v * scale).round() / scale
}

/// The minimum, the median, then p90, p99, p99.9 ... as far as the data goes.
fn x_ticks(x_hi: f64) -> Vec<f64> {
    let mut ticks = vec![1.0, 2.0];
    let mut x = 10.0;
    while x <= x_hi * 1.0001 {
        ticks.push(x);
        x *= 10.0;
    }
    ticks
}

/// 1, 2 and 5 in every decade of the latency axis.
fn y_ticks(y_lo: f64, y_hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = y_lo;
    while decade <= y_hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let y = decade * m;
            if y <= y_hi * 1.0001 {
                ticks.push(y);
            }
        }
        decade *= 10.0;
    }
    ticks
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

pub fn render(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    let series: Vec<&Series> = series.iter().filter(|s| !s.points.is_empty()).collect();
    if series.is_empty() {
        return Err(anyhow!("no latency samples to chart"));
    }
    let points = || series.iter().flat_map(|s| s.points.iter());
    let x_max = points().map(|p| p.0).fold(10.0, f64::max);
    let y_max = points().map(|p| p.1).fold(f64::MIN, f64::max);
    let y_min = points()
        .map(|p| p.1)
        .filter(|y| *y > 0.0)
        .fold(f64::MAX, f64::min);
    // Whole decades around the data, so the grid lines fall on 0.1, 1, 10, 100 ms ...
    let y_lo = 10f64.powf(y_min.max(1e-3).log10().floor());
    let y_hi = 10f64.powf(y_max.max(y_lo * 10.0).log10().ceil());
    let x_hi = 10f64.powf(x_max.log10().ceil());

    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(20)
            .margin_right(50)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (1f64..x_hi).log_scale().with_key_points(x_ticks(x_hi)),
                (y_lo..y_hi)
                    .log_scale()
                    .with_key_points(y_ticks(y_lo, y_hi)),
            )?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale of 1 / (1 - q): min, p90, p99, p99.9, ...)")
            .y_desc("latency, ms (log scale)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| ms_label(*y))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|&(x, y)| (x, y.max(y_lo))),
                    color.stroke_width(2),
                ))?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            // The fast end of the slowest percentiles: the corner the curves leave empty.
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("chart {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::percentile_label;

    #[test]
    fn labels_percentiles() {
        assert_eq!(percentile_label(1.0), "min");
        assert_eq!(percentile_label(2.0), "p50");
        assert_eq!(percentile_label(10.0), "p90");
        assert_eq!(percentile_label(1000.0), "p99.9");
    }
}
