//! SVG plots of one or more result files (plotters, SVG backend only: no
//! system fonts or freetype; text is SVG `<text>` laid out by plotters'
//! built-in size estimate).
//!
//! Three panels, every run overlaid in its own colour:
//! 1. latency by percentile (x: 0 %, 90 %, 99 %, ... on a "nines" scale;
//!    y: µs, log scale): publish solid, end-to-end dashed;
//! 2. throughput over time (MB/s per second): produced solid, consumed dashed;
//! 3. p99 latency per second over time (µs, log scale).
//!
//! Warm-up seconds are drawn too (the x axis is seconds since start).
//!
//! Invariant: a result without a figure (e.g. no e2e) simply has no line;
//! bad input files are errors, never panics.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::BenchError;
use crate::report::{read_json, BenchResult};
use crate::stats::Percentiles;

const WIDTH_PX: u32 = 1200;
const HEIGHT_PX: u32 = 1350;
const FONT: &str = "sans-serif";

/// Reads the result files and draws them into `out`.
pub fn plot_files(out: &Path, title: Option<&str>, files: &[PathBuf]) -> Result<(), BenchError> {
    let mut runs = Vec::new();
    for f in files {
        let r: BenchResult = read_json(f)?;
        runs.push((r.name(f), r));
    }
    plot_runs(out, title, &runs)
}

/// One run's two lines in its colour, each with a legend entry: `solid`
/// (publish, produced) and `dashed` (end-to-end, consumed). An empty line
/// is not drawn.
fn draw_pair<CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, CT>,
    c: RGBColor,
    solid: (String, Vec<(f64, f64)>),
    dashed: (String, Vec<(f64, f64)>),
) -> Result<(), BenchError> {
    if !solid.1.is_empty() {
        chart
            .draw_series(LineSeries::new(solid.1, c.stroke_width(2)))
            .map_err(err)?
            .label(solid.0)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    if !dashed.1.is_empty() {
        chart
            .draw_series(DashedLineSeries::new(dashed.1, 6, 4, c.stroke_width(2)))
            .map_err(err)?
            .label(dashed.0)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1)));
    }
    Ok(())
}

/// The legend box of a panel, at `at`.
fn draw_legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    at: SeriesLabelPosition,
) -> Result<(), BenchError> {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()
        .map_err(err)
}

fn err<E: std::fmt::Debug>(e: E) -> BenchError {
    BenchError::Plot(format!("{e:?}"))
}

/// x position of a percentile on the "nines" axis: 90 % -> 1, 99 % -> 2.
fn nines(p: f64) -> f64 {
    (100.0 / (100.0 - p.min(99.99999))).log10()
}

fn nines_label(x: f64) -> String {
    let n = x.round() as i32;
    if (x - f64::from(n)).abs() > 1e-6 || n < 0 {
        return String::new();
    }
    match n {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)).replace("99.%", "99%"),
    }
}

pub fn plot_runs(
    out: &Path,
    title: Option<&str>,
    runs: &[(String, BenchResult)],
) -> Result<(), BenchError> {
    if runs.is_empty() {
        return Err(BenchError::Plot("no result to plot".into()));
    }
    let root = SVGBackend::new(out, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let default_title = format!(
        "corelog-bench: {}",
        runs.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" vs ")
    );
    let root = root
        .titled(title.unwrap_or(&default_title), (FONT, 22))
        .map_err(err)?;
    let panels = root.split_evenly((3, 1));
    latency_panel(&panels[0], runs)?;
    throughput_panel(&panels[1], runs)?;
    p99_panel(&panels[2], runs)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The power of ten at or below half the smallest value (>= 1): the bottom
/// of a log axis.
fn log_floor(values: impl Iterator<Item = f64>) -> f64 {
    let min = values.fold(f64::INFINITY, f64::min);
    if !min.is_finite() || min <= 2.0 {
        return 1.0;
    }
    10f64.powf((min / 2.0).log10().floor()).max(1.0)
}

fn color(i: usize) -> RGBColor {
    let c = Palette99::pick(i).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

fn spectrum_points(p: &Percentiles) -> Vec<(f64, f64)> {
    if p.count == 0 {
        return Vec::new();
    }
    p.spectrum
        .iter()
        .map(|[q, v]| (nines(*q), v.max(1.0)))
        .collect()
}

fn latency_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    runs: &[(String, BenchResult)],
) -> Result<(), BenchError> {
    let ymax = runs
        .iter()
        .flat_map(|(_, r)| [r.publish_latency_us.max, r.e2e_latency_us.max])
        .max()
        .unwrap_or(1)
        .max(10) as f64
        * 1.5;
    let ymin = log_floor(
        runs.iter()
            .flat_map(|(_, r)| [&r.publish_latency_us, &r.e2e_latency_us])
            .filter(|p| p.count > 0)
            .map(|p| p.min as f64),
    );
    let xmax = 6.3;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "latency by percentile (publish solid, end-to-end dashed)",
            (FONT, 17),
        )
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_labels(7)
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for (i, (name, r)) in runs.iter().enumerate() {
        draw_pair(
            &mut chart,
            color(i),
            (
                format!("{name} publish"),
                spectrum_points(&r.publish_latency_us),
            ),
            (format!("{name} e2e"), spectrum_points(&r.e2e_latency_us)),
        )?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn throughput_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    runs: &[(String, BenchResult)],
) -> Result<(), BenchError> {
    let tmax = runs
        .iter()
        .flat_map(|(_, r)| r.series.iter().map(|p| p.t_s + 1))
        .max()
        .unwrap_or(1) as f64;
    let ymax = runs
        .iter()
        .flat_map(|(_, r)| r.series.iter().map(|p| p.produced_mb.max(p.consumed_mb)))
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "throughput per second (produced solid, consumed dashed)",
            (FONT, 17),
        )
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..tmax, 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start (warm-up included)")
        .y_desc("MB/s")
        .draw()
        .map_err(err)?;
    for (i, (name, r)) in runs.iter().enumerate() {
        // A second's value is plotted at its end; a run that never produced
        // (or consumed) has no line for it.
        let line = |any: bool, mb: fn(&crate::stats::SecondPoint) -> f64| -> Vec<(f64, f64)> {
            if !any {
                return vec![];
            }
            r.series
                .iter()
                .map(|p| ((p.t_s + 1) as f64, mb(p)))
                .collect()
        };
        draw_pair(
            &mut chart,
            color(i),
            (
                format!("{name} produced"),
                line(r.series.iter().any(|p| p.produced_msgs > 0), |p| {
                    p.produced_mb
                }),
            ),
            (
                format!("{name} consumed"),
                line(r.series.iter().any(|p| p.consumed_msgs > 0), |p| {
                    p.consumed_mb
                }),
            ),
        )?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn p99_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    runs: &[(String, BenchResult)],
) -> Result<(), BenchError> {
    let tmax = runs
        .iter()
        .flat_map(|(_, r)| r.series.iter().map(|p| p.t_s + 1))
        .max()
        .unwrap_or(1) as f64;
    let ymax = runs
        .iter()
        .flat_map(|(_, r)| r.series.iter().map(|p| p.publish_p99_us.max(p.e2e_p99_us)))
        .max()
        .unwrap_or(1)
        .max(10) as f64
        * 1.5;
    let ymin = log_floor(runs.iter().flat_map(|(_, r)| {
        r.series
            .iter()
            .flat_map(|p| [p.publish_p99_us, p.e2e_p99_us])
            .filter(|v| *v > 0)
            .map(|v| v as f64)
    }));
    let mut chart = ChartBuilder::on(area)
        .caption(
            "p99 latency per second (publish solid, end-to-end dashed)",
            (FONT, 17),
        )
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..tmax, (ymin..ymax).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start (warm-up included)")
        .y_desc("p99 (µs)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for (i, (name, r)) in runs.iter().enumerate() {
        let publish: Vec<(f64, f64)> = r
            .series
            .iter()
            .filter(|p| p.publish_p99_us > 0)
            .map(|p| ((p.t_s + 1) as f64, p.publish_p99_us as f64))
            .collect();
        let e2e: Vec<(f64, f64)> = r
            .series
            .iter()
            .filter(|p| p.e2e_p99_us > 0)
            .map(|p| ((p.t_s + 1) as f64, p.e2e_p99_us as f64))
            .collect();
        draw_pair(
            &mut chart,
            color(i),
            (format!("{name} publish p99"), publish),
            (format!("{name} e2e p99"), e2e),
        )?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis() {
        assert!(nines(0.0).abs() < 1e-9);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-6);
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(4.0), "99.99%");
        assert_eq!(nines_label(1.5), "");
        assert_eq!(log_floor([1500.0, 900.0].into_iter()), 100.0);
        assert_eq!(log_floor(std::iter::empty()), 1.0);
    }
}
