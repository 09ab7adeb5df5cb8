//! An SVG bar chart of bulk goodput per CPU-second: quicsand and quinn-proto per cipher suite (median, with
//! a whisker from min to max), beside the AEAD limit.

use std::path::Path;

use plotters::prelude::*;

use crate::run::{Args, BulkPlot};
use crate::setup::suite_name;

pub fn bulk(path: &Path, data: &[BulkPlot], a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let top = data
        .iter()
        .map(|d| d.aead.max.max(d.quicsand.max).max(d.quinn.max))
        .fold(1.0, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (860, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "Bulk goodput per CPU-second, in memory, one thread ({} B datagrams, batches of {})",
        a.size,
        a.bulk_batch()
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..data.len() as f64, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("Gbit/s per CPU-second")
        .draw()?;
    let series = [
        ("quicsand", RGBColor(0xd9, 0x6c, 0x1e)),
        ("quinn-proto", RGBColor(0x3a, 0x6e, 0xa5)),
        ("AEAD limit (ring)", RGBColor(0x99, 0x99, 0x99)),
    ];
    let width = 0.26;
    for (k, (name, color)) in series.iter().enumerate() {
        let bars: Vec<(f64, f64, f64, f64)> = data
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let s = [d.quicsand, d.quinn, d.aead][k];
                (i as f64 + 0.11 + k as f64 * width, s.median, s.min, s.max)
            })
            .collect();
        let c = *color;
        chart
            .draw_series(
                bars.iter()
                    .map(|&(x, med, _, _)| Rectangle::new([(x, 0.0), (x + width * 0.9, med)], c.filled())),
            )?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        chart.draw_series(bars.iter().map(|&(x, _, min, max)| {
            let mid = x + width * 0.45;
            PathElement::new(vec![(mid, min), (mid, max)], BLACK.stroke_width(1))
        }))?;
        chart.draw_series(bars.iter().map(|&(x, med, _, _)| {
            Text::new(format!("{med:.1}"), (x, med + top * 0.01), ("sans-serif", 12))
        }))?;
    }
    for (i, d) in data.iter().enumerate() {
        chart.draw_series(std::iter::once(Text::new(
            suite_name(d.suite).to_string(),
            (i as f64 + 0.3, -top * 0.04),
            ("sans-serif", 14),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
