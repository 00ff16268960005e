//! The comparison as an SVG chart: one panel per figure, one bar per transport.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::scenario::{BackendRun, Envelope, Measurement, Outcome};
use super::Meta;

/// 1234 → "1.2k", 2_500_000 → "2.5M", 0.25 → "0.25".
fn short(x: f64) -> String {
    let a = x.abs();
    if a >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 1.0 {
        format!("{x:.1}")
    } else if a >= 0.01 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn colour(name: &str) -> RGBColor {
    match name {
        "sqlite" => RGBColor(0x1f, 0x77, 0xb4),
        "nats" => RGBColor(0x2c, 0xa0, 0x2c),
        "redis" => RGBColor(0xd6, 0x27, 0x28),
        "kafka" => RGBColor(0x94, 0x67, 0xbd),
        "chroma" => RGBColor(0xff, 0x7f, 0x0e),
        _ => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

type Figure = fn(&Measurement) -> Option<f64>;

const PANELS: [(&str, Figure); 6] = [
    ("deposit, one at a time (packets/s)", |m| {
        Some(m.single.per_sec())
    }),
    ("deposit, in batches (packets/s)", |m| {
        Some(m.batch.per_sec())
    }),
    ("durable fetch + ack (packets/s)", |m| {
        m.fetch_ack.map(|r| r.per_sec())
    }),
    ("deposit → live, p50 (ms)", |m| m.live.map(|l| l.p50_ms)),
    ("deposit → live, p99 (ms)", |m| m.live.map(|l| l.p99_ms)),
    ("bytes per packet (wire up, or disk)", |m| {
        match m.envelope {
            Envelope::Wire { up, .. } => Some(up),
            Envelope::Disk { bytes, .. } => Some(bytes),
            Envelope::NotMeasured(_) => None,
        }
    }),
];

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One panel's bars: a value per transport, or the reason there is none
/// (drawn as a label where the bar would be).
pub type Bars = Vec<Result<f64, String>>;

/// What one figure of `qis compare` is for each run.
fn compare_bars(runs: &[BackendRun], figure: Figure) -> Bars {
    runs.iter()
        .map(|r| match &r.outcome {
            Outcome::Measured(m) => figure(m)
                .filter(|v| v.is_finite())
                .ok_or_else(|| "n/a".to_string()),
            Outcome::NotBuilt(_) => Err("not built".into()),
            Outcome::Unreachable(_) => Err("unreachable".into()),
            Outcome::Failed { .. } => Err("failed".into()),
        })
        .collect()
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    names: &[&str],
    values: &[Result<f64, String>],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    // A log scale: the transports differ by orders of magnitude.
    let positive = || values.iter().flatten().copied().filter(|v| *v > 0.0);
    let max = positive().fold(f64::NAN, f64::max);
    let min = positive().fold(f64::NAN, f64::min);
    let (low, top) = if max.is_finite() {
        (10f64.powf((min.log10() - 0.3).floor()), max * 6.0)
    } else {
        (1.0, 10.0)
    };

    // An integer range holds its end: 0..n-1 is n segments. A range of one
    // value cannot be mapped, so one transport gets a blank segment beside it.
    let last = names.len().saturating_sub(1).max(1) as u32;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d((0..last).into_segmented(), (low..top).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(last as usize + 1)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names
                .get(*i as usize)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .y_labels(8)
        .y_label_formatter(&|y| short(*y))
        .draw()
        .map_err(err)?;
    let label = |text: String, y: f64, i: u32| {
        Text::new(
            text,
            (SegmentValue::CenterOf(i), y),
            TextStyle::from(("sans-serif", 13).into_font())
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )
    };
    for (i, (name, v)) in (0u32..).zip(names.iter().zip(values)) {
        match v {
            Ok(v) => {
                chart
                    .draw_series(
                        Histogram::vertical(&chart)
                            .style(colour(name).filled())
                            .margin(14)
                            .baseline(low)
                            .data([(i, *v)]),
                    )
                    .map_err(err)?;
                chart
                    .draw_series(std::iter::once(label(short(*v), v * 1.12, i)))
                    .map_err(err)?;
            }
            Err(why) => {
                chart
                    .draw_series(std::iter::once(label(why.clone(), low * 1.3, i)))
                    .map_err(err)?;
            }
        }
    }
    Ok(())
}

/// Write the chart to `path`.
pub fn write(path: &Path, runs: &[BackendRun], meta: &Meta) -> Result<(), String> {
    let names: Vec<&str> = runs.iter().map(|r| r.name).collect();
    let panels: Vec<(&str, Bars)> = PANELS
        .iter()
        .map(|(title, figure)| (*title, compare_bars(runs, *figure)))
        .collect();
    let title = format!(
        "qis compare: {} packets per transport, {}, {} cores (log scales)",
        meta.packets, meta.date, meta.cores
    );
    write_panels(path, &title, &names, &panels, (2, 3))
}

/// Write a chart of `panels` (a title and one bar per name each, log
/// scales) on a grid of `(rows, columns)` to `path`, as an SVG.
pub fn write_panels(
    path: &Path,
    title: &str,
    names: &[&str],
    panels: &[(&str, Bars)],
    grid: (usize, usize),
) -> Result<(), String> {
    let size = (420 * grid.1 as u32, 380 * grid.0 as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    for (area, (title, values)) in root.split_evenly(grid).iter().zip(panels) {
        panel(area, title, names, values)?;
    }
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_numbers() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.257), "0.26");
        assert_eq!(short(0.0012), "0.001");
        assert_eq!(short(3.21), "3.2");
        assert_eq!(short(512.0), "512");
        assert_eq!(short(1234.0), "1.2k");
        assert_eq!(short(45_678.0), "46k");
        assert_eq!(short(2_500_000.0), "2.5M");
    }
}
