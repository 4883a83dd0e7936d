//! `--plot`: per-node load over time for each mode, side by side, as SVG (plotters).

use plotters::prelude::*;

use crate::report::Report;
use crate::run::SAMPLE_EVERY;

/// Width of one mode's panel, in pixels.
const PANEL_WIDTH: u32 = 420;
/// Height of the figure, in pixels.
const HEIGHT: u32 = 320;

/// The figure as SVG text: one panel per mode, one line per node (requests per second, from
/// the 100 ms samples).
pub fn svg(report: &Report) -> Result<String, String> {
    let mut svg = String::new();
    {
        let panels = report.modes.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (PANEL_WIDTH * panels, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|error| error.to_string())?;
        let areas = root.split_evenly((1, report.modes.len().max(1)));
        let interval = SAMPLE_EVERY.as_secs_f64();
        // Requests per second per node per interval, for every mode.
        let rates: Vec<Vec<Vec<f64>>> = report
            .modes
            .iter()
            .map(|mode| {
                let nodes = mode.samples.first().map_or(0, Vec::len);
                (0..nodes)
                    .map(|node| {
                        mode.samples
                            .windows(2)
                            .map(|pair| (pair[1][node] - pair[0][node]) as f64 / interval)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let peak = rates.iter().flatten().flatten().copied().fold(1.0f64, f64::max) * 1.1;
        let seconds = report.modes.iter().map(|mode| mode.samples.len()).max().unwrap_or(1) as f64 * interval;
        for ((mode, area), nodes) in report.modes.iter().zip(&areas).zip(&rates) {
            let mut chart = ChartBuilder::on(area)
                .caption(&mode.mode, ("sans-serif", 16))
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..seconds, 0.0..peak)
                .map_err(|error| error.to_string())?;
            chart
                .configure_mesh()
                .x_desc("simulated seconds")
                .y_desc("requests per second")
                .disable_x_mesh()
                .light_line_style(TRANSPARENT)
                .y_label_formatter(&|rate| format!("{rate:.0}"))
                .x_label_formatter(&|second| format!("{second:.0}"))
                .draw()
                .map_err(|error| error.to_string())?;
            for (index, series) in nodes.iter().enumerate() {
                let color = Palette99::pick(index).to_rgba();
                chart
                    .draw_series(LineSeries::new(
                        series
                            .iter()
                            .enumerate()
                            .map(|(step, &rate)| ((step as f64 + 1.0) * interval, rate)),
                        color.stroke_width(2),
                    ))
                    .map_err(|error| error.to_string())?
                    .label(format!("node-{}", index + 1))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|error| error.to_string())?;
        }
        root.present().map_err(|error| error.to_string())?;
    }
    Ok(svg)
}
