//! `scripts/bench plot`: draws the round-trip benchmark from its CSV
//! (target/bench/results.csv): records/s per (source shard, output) against
//! the number of partition keys, one line per mode (per_key, none,
//! aggregate), the latest run of each case. Zipf-skewed cases are drawn at
//! their key count with hollow marks.
//!
//!   bench-plot RESULTS.csv OUT.svg

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use std::collections::BTreeMap;

/// (mode, zipf) → keys → rec/s, from the rows of `mode == "rtt"`.
type Series = BTreeMap<(String, bool), BTreeMap<u64, f64>>;

fn read(path: &str) -> Result<Series> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty CSV")?.split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("{path}: no column {name}"))
    };
    let (mode, case, keys, rate) = (
        col("mode")?,
        col("case")?,
        col("keys")?,
        col("rec_per_s_per_shard_output")?,
    );
    let mut series = Series::new();
    for line in lines {
        let row: Vec<&str> = line.split(',').collect();
        if row.get(mode) != Some(&"rtt") {
            continue;
        }
        let (Some(case), Some(keys), Some(rate)) = (row.get(case), row.get(keys), row.get(rate))
        else {
            continue;
        };
        let label = case.split('-').next().unwrap_or(case).to_string();
        let zipf = keys.starts_with("zipf:");
        let n: u64 = keys
            .rsplit(':')
            .next()
            .unwrap_or(keys)
            .parse()
            .context("keys")?;
        let rate: f64 = rate.parse().context("rate")?;
        // Later rows (newer runs) replace earlier ones.
        series.entry((label, zipf)).or_default().insert(n, rate);
    }
    if series.is_empty() {
        bail!("{path}: no round-trip rows (run scripts/bench rtt first)");
    }
    Ok(series)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        bail!("usage: bench-plot RESULTS.csv OUT.svg");
    };
    let series = read(input)?;
    let max_rate = series
        .values()
        .flat_map(|s| s.values())
        .fold(1.0f64, |a, &b| a.max(b));
    let root = SVGBackend::new(output, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "records/s per output at 20 ms round trip, by partition keys",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1u64..2000u64).log_scale(),
            (10f64..max_rate * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("partition keys (random; hollow: Zipf-skewed)")
        .y_desc("records/s per (source shard, output)")
        .draw()?;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN];
    let modes: Vec<&String> = {
        let mut m: Vec<&String> = series.keys().map(|(m, _)| m).collect();
        m.dedup();
        m
    };
    for ((label, zipf), points) in &series {
        let i = modes.iter().position(|m| *m == label).unwrap_or(0);
        let color = colors[i % colors.len()];
        let points: Vec<(u64, f64)> = points.iter().map(|(&k, &r)| (k, r)).collect();
        if *zipf {
            chart.draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 6, color.stroke_width(2))),
            )?;
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    println!("wrote {output}");
    Ok(())
}
