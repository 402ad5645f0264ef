//! The SVG plots: blackout by preserved state for each layout, and each
//! phase of the blackout for state preserved as 4 KiB pages.

use super::parse::PHASES;
use super::{Layout, Scenario, output_dir};
use anyhow::Result;
use std::path::Path;

fn plot_lines(path: &Path, caption: &str, y_label: &str, lines: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    use plotters::prelude::*;
    let points = lines.iter().flat_map(|(_, points)| points.iter());
    let x_max = points.clone().map(|&(x, _)| x).fold(1.0, f64::max) * 2.0;
    let y_max = points.clone().map(|&(_, y)| y).fold(1.0, f64::max) * 2.0;
    let y_min = points.map(|&(_, y)| y).fold(f64::MAX, f64::min).clamp(0.001, 1.0) / 2.0;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| anyhow::anyhow!("{error:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((0.5f64..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    chart
        .configure_mesh()
        .x_desc("preserved state (MiB)")
        .y_desc(y_label)
        .draw()
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    let colours = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK, RGBColor(230, 140, 0), RGBColor(120, 60, 180)];
    for (index, (name, points)) in lines.iter().enumerate() {
        let colour = colours[index % colours.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))
            .map_err(|error| anyhow::anyhow!("{error:?}"))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&point| Circle::new(point, 3, colour.filled())))
            .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    root.present().map_err(|error| anyhow::anyhow!("{error:?}"))?;
    Ok(())
}

pub fn plots(scenarios: &[Scenario]) -> Result<()> {
    let series = |layout: Layout, key: &str| -> Vec<(f64, f64)> {
        scenarios
            .iter()
            .filter(|scenario| scenario.layout == layout)
            .map(|scenario| (scenario.size_mib as f64, scenario.steady_median(key) as f64 / 1000.0))
            .collect()
    };
    let blackout: Vec<(String, Vec<(f64, f64)>)> =
        Layout::ALL.iter().map(|&layout| (layout.name().to_string(), series(layout, "blackout_us"))).collect();
    plot_lines(&output_dir().join("blackout.svg"), "Update blackout by preserved state", "blackout (ms)", &blackout)?;
    let phases: Vec<(String, Vec<(f64, f64)>)> =
        PHASES.iter().map(|&(key, name)| (name.to_string(), series(Layout::Pages, key))).collect();
    plot_lines(
        &output_dir().join("phases.svg"),
        "Blackout phases, state preserved in place as 4 KiB pages",
        "phase (ms)",
        &phases,
    )
}
