//! PNG plots with plotters' bitmap backend.
//!
//! Text is drawn by `ab_glyph` (pure Rust) from a TrueType file read at run
//! time: DejaVu Sans from Debian's `fonts-dejavu-core` where present, or the
//! file `WSCLUSTER_BENCH_FONT` names. Nothing links to fontconfig or
//! freetype. Without a font the plots are still drawn, without text.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Line colours, one per target.
pub const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Registers a font once; true when text can be drawn.
fn font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let env = std::env::var("WSCLUSTER_BENCH_FONT").ok();
        let paths = env.iter().map(String::as_str).chain(FONT_PATHS.iter().copied());
        for p in paths {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        eprintln!("no TrueType font found: plots are drawn without text");
        false
    })
}

/// One line of a chart.
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Colour index into [`COLORS`].
    pub color: usize,
    /// Points (x, y); non-positive values are skipped on log axes.
    pub points: Vec<(f64, f64)>,
}

/// A panel: a log-log line chart.
pub struct Panel {
    /// Title.
    pub title: String,
    /// X axis description.
    pub x: String,
    /// Y axis description.
    pub y: String,
    /// Lines.
    pub series: Vec<Series>,
    /// A horizontal reference line (for example the p99 limit).
    pub reference: Option<(f64, String)>,
    /// Put the legend in the lower right corner instead of the upper left.
    pub legend_low: bool,
}

/// Draws panels side by side into one PNG.
pub fn panels(path: &Path, title: &str, panels: &[Panel]) -> Result<()> {
    let text = font();
    let width = 700 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = if text { root.titled(title, ("sans-serif", 22)).map_err(err)? } else { root };
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel, text)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (1.0, 10.0);
    }
    (lo / 1.5, hi * 1.5)
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    p: &Panel,
    text: bool,
) -> Result<()> {
    let pts = || p.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = bounds(pts().map(|(x, _)| *x));
    let refs = p.reference.iter().map(|(y, _)| *y);
    let (y0, y1) = bounds(pts().map(|(_, y)| *y).chain(refs));

    let mut builder = ChartBuilder::on(area);
    builder.margin(12);
    if text {
        builder.caption(&p.title, ("sans-serif", 17)).x_label_area_size(40).y_label_area_size(70);
    }
    let mut chart =
        builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale()).map_err(err)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(p.x.as_str()).y_desc(p.y.as_str()).label_style(("sans-serif", 13));
        mesh.x_label_formatter(&|v| short(*v)).y_label_formatter(&|v| short(*v));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;

    if let Some((y, label)) = &p.reference {
        let line = LineSeries::new(vec![(x0, *y), (x1, *y)], BLACK.mix(0.5).stroke_width(1));
        let drawn = chart.draw_series(line).map_err(err)?;
        if text {
            drawn
                .label(label.clone())
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
        }
    }
    for s in &p.series {
        let c = COLORS[s.color % COLORS.len()];
        let points: Vec<(f64, f64)> =
            s.points.iter().copied().filter(|(x, y)| *x > 0.0 && *y > 0.0).collect();
        let drawn =
            chart.draw_series(LineSeries::new(points.clone(), c.stroke_width(2))).map_err(err)?;
        if text && !s.label.is_empty() {
            drawn.label(s.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
            });
        }
        chart
            .draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 3, c.filled())))
            .map_err(err)?;
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 13))
            .position(if p.legend_low {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperLeft
            })
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// A latency distribution: latency (log) against percentile, the
/// percentile axis stretched towards the tail (50, 90, 99, 99.9, 99.99).
pub fn percentiles(
    path: &Path,
    title: &str,
    series: &[Series],
    reference: Option<(f64, String)>,
) -> Result<()> {
    // x = -log10(1 - q): 0.3 is p50, 1 p90, 2 p99, 3 p99.9, 4 p99.99.
    let nines = |pct: f64| -(1.0 - (pct / 100.0).min(0.99999)).log10();
    let lines: Vec<Series> = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            color: s.color,
            points: s.points.iter().map(|&(p, ms)| (nines(p), ms)).collect(),
        })
        .collect();
    let text = font();
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (y0, y1) = bounds(
        lines
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(reference.iter().map(|r| r.0)),
    );
    let mut builder = ChartBuilder::on(&root);
    builder.margin(14);
    if text {
        builder.caption(title, ("sans-serif", 20)).x_label_area_size(40).y_label_area_size(70);
    }
    let mut chart = builder.build_cartesian_2d(0.0..4.3f64, (y0..y1).log_scale()).map_err(err)?;
    let mut mesh = chart.configure_mesh();
    // Label only whole nines (p0, p90, p99, p99.9, p99.99) and p50.
    let xfmt = |v: &f64| {
        let near = |t: f64| (v - t).abs() < 0.02;
        if !(near(v.round()) || near(0.3)) {
            return String::new();
        }
        let x = if near(0.3) { std::f64::consts::LOG10_2 } else { v.round() };
        format!("p{}", short_pct(100.0 * (1.0 - 10f64.powf(-x))))
    };
    if text {
        mesh.x_desc("percentile").y_desc("latency (ms)").label_style(("sans-serif", 13));
        mesh.x_labels(44).x_label_formatter(&xfmt).y_label_formatter(&|v| short(*v));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;
    if let Some((y, label)) = &reference {
        let drawn = chart
            .draw_series(LineSeries::new(vec![(0.0, *y), (4.3, *y)], BLACK.mix(0.5)))
            .map_err(err)?;
        if text {
            drawn
                .label(label.clone())
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
        }
    }
    for s in &lines {
        let c = COLORS[s.color % COLORS.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.1 > 0.0).collect();
        let drawn = chart.draw_series(LineSeries::new(pts, c.stroke_width(2))).map_err(err)?;
        if text {
            drawn.label(s.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// A bar chart (for example KiB per idle connection), with an optional
/// horizontal target line.
pub fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    items: &[(String, f64, usize)],
    target: Option<(f64, String)>,
) -> Result<()> {
    let text = font();
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top = items.iter().map(|i| i.1).chain(target.iter().map(|t| t.0)).fold(1.0, f64::max) * 1.2;
    let n = items.len().max(1);
    let mut builder = ChartBuilder::on(&root);
    builder.margin(14);
    if text {
        builder.caption(title, ("sans-serif", 20)).x_label_area_size(60).y_label_area_size(70);
    }
    let mut chart = builder.build_cartesian_2d(0.0..n as f64, 0.0..top).map_err(err)?;
    let labels: Vec<String> = items.iter().map(|i| i.0.clone()).collect();
    let xfmt = |v: &f64| {
        let i = v.floor() as usize;
        if (v - v.floor() - 0.5).abs() < 0.01 {
            labels.get(i).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh();
    if text {
        mesh.y_desc(y_desc)
            .label_style(("sans-serif", 12))
            .x_labels(2 * n + 1)
            .x_label_formatter(&xfmt);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(err)?;
    chart
        .draw_series(items.iter().enumerate().map(|(i, (_, v, c))| {
            let c = COLORS[c % COLORS.len()];
            Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)], c.filled())
        }))
        .map_err(err)?;
    if text {
        chart
            .draw_series(items.iter().enumerate().map(|(i, (_, v, _))| {
                Text::new(format!("{v:.1}"), (i as f64 + 0.35, *v + top * 0.02), ("sans-serif", 13))
            }))
            .map_err(err)?;
    }
    if let Some((y, label)) = target {
        chart
            .draw_series(LineSeries::new(vec![(0.0, y), (n as f64, y)], RED.stroke_width(2)))
            .map_err(err)?;
        if text {
            chart
                .draw_series(std::iter::once(Text::new(
                    label,
                    (0.05, y + top * 0.02),
                    ("sans-serif", 13),
                )))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

fn short(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{}M", trim(v / 1e6)),
        v if v >= 1e3 => format!("{}k", trim(v / 1e3)),
        v => trim(v),
    }
}

fn short_pct(p: f64) -> String {
    let s = format!("{:.3}", (p * 1000.0).round() / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn trim(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}
