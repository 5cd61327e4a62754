//! The soak's picture: one SVG, three panels sharing the time axis, faults as shaded bands in
//! each: the log head and every agent's position, receipt latency, and RSS per process.

use super::{Fault, Position, SoakReport, Usage};
use plotters::prelude::*;
use std::path::Path;
use std::time::Duration;

fn band_color(f: &Fault) -> RGBColor {
    match f {
        Fault::FreezeAgent(_) => RGBColor(70, 130, 180),
        Fault::KillAgent(_) => RGBColor(220, 20, 60),
        Fault::FreezeReplica(_) => RGBColor(255, 165, 0),
        Fault::KillReplica(_) => RGBColor(139, 0, 139),
        Fault::FreezePostgres => RGBColor(46, 139, 87),
        Fault::FreezeAllReplicas => RGBColor(105, 105, 105),
        Fault::CutAgent(_) => RGBColor(0, 191, 191),
        Fault::CutReplicaFromStore(_) => RGBColor(160, 82, 45),
        Fault::SlowAgent(_) => RGBColor(218, 165, 32),
        Fault::FillAgentDisk(_) => RGBColor(255, 105, 180),
    }
}

type Err = Box<dyn std::error::Error + Send + Sync>;

/// Most points drawn per line (an hour's samples would make a picture of megabytes).
const MAX_POINTS: usize = 720;

/// Every `k`-th point, so that at most [`MAX_POINTS`] remain (the last always kept).
fn thin<T: Clone>(points: &[T]) -> Vec<T> {
    let k = points.len().div_ceil(MAX_POINTS).max(1);
    let mut out: Vec<T> = points.iter().step_by(k).cloned().collect();
    if let Some(last) = points.last() {
        if !(points.len() - 1).is_multiple_of(k) {
            out.push(last.clone());
        }
    }
    out
}

/// Draws the picture into `path`.
pub fn draw(
    path: &Path,
    report: &SoakReport,
    positions: &[Position],
    receipts: &[(f64, Duration)],
    usage: &[Usage],
) -> anyhow::Result<()> {
    draw_inner(path, report, positions, receipts, usage)
        .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
}

fn draw_inner(
    path: &Path,
    report: &SoakReport,
    positions: &[Position],
    receipts: &[(f64, Duration)],
    usage: &[Usage],
) -> Result<(), Err> {
    let end = positions.last().map_or(report.seconds as f64, |p| p.0).max(1.0);
    let root = SVGBackend::new(path, (1400, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, rest) = root.split_vertically(40);
    let (legend, rest) = rest.split_vertically(28);
    // The bands' key: one swatch and name per kind of fault.
    let kinds = [
        (Fault::FreezeAgent(0), "freeze agent"),
        (Fault::KillAgent(0), "kill -9 agent"),
        (Fault::CutAgent(0), "black-hole agent"),
        (Fault::SlowAgent(0), "slow agent link"),
        (Fault::FillAgentDisk(0), "full agent disk"),
        (Fault::FreezeReplica(0), "freeze replica"),
        (Fault::KillReplica(0), "kill -9 replica"),
        (Fault::FreezeAllReplicas, "freeze all replicas"),
        (Fault::CutReplicaFromStore(0), "replica cut from postgres"),
        (Fault::FreezePostgres, "freeze postgres"),
    ];
    let mut x = 10i32;
    for (f, name) in kinds {
        legend.draw(&Rectangle::new([(x, 6), (x + 16, 22)], band_color(&f).mix(0.5).filled()))?;
        legend.draw(&Text::new(name, (x + 20, 7), ("sans-serif", 13)))?;
        x += 28 + 6 * name.len() as i32;
    }
    let verdict = if report.passed() { "every invariant held" } else { "VIOLATIONS" };
    title.titled(
        &format!(
            "revmesh soak, seed {}: {} s of faults, {} agents, {} replicas; {} accepted, {} probes; {verdict}",
            report.seed, report.seconds, report.agents, report.replicas, report.accepted, report.probes
        ),
        ("sans-serif", 20),
    )?;
    let panels = rest.split_evenly((3, 1));
    let bands = |chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
                 top: f64|
     -> Result<(), Err> {
        for s in &report.faults {
            let to = if s.to_s.is_finite() { s.to_s } else { end };
            let c = band_color(&s.fault);
            chart.draw_series(std::iter::once(Rectangle::new(
                [(s.from_s, 0.0), (to, top)],
                c.mix(0.12).filled(),
            )))?;
        }
        Ok(())
    };

    // 1. Head and each agent's position.
    let top = positions.iter().filter_map(|p| p.1).max().unwrap_or(1).max(1) as f64 * 1.05;
    let mut chart = ChartBuilder::on(&panels[0])
        .caption(
            "log head (black) and each agent's applied seq; bands: faults (key above)",
            ("sans-serif", 14),
        )
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..top)?;
    chart.configure_mesh().x_desc("seconds").y_desc("seq").draw()?;
    bands(&mut chart, top)?;
    let positions = &thin(positions);
    let agents = positions.first().map_or(0, |p| p.2.len());
    for i in 0..agents {
        let color = Palette99::pick(i).mix(0.6);
        // Gaps (no answer: frozen, restarting) break the line.
        let mut run: Vec<(f64, f64)> = Vec::new();
        for (t, _, seqs) in positions {
            match seqs.get(i).copied().flatten() {
                Some(s) => run.push((*t, s as f64)),
                None if !run.is_empty() => {
                    chart.draw_series(LineSeries::new(std::mem::take(&mut run), color.stroke_width(1)))?;
                }
                None => {}
            }
        }
        if !run.is_empty() {
            chart.draw_series(LineSeries::new(run, color.stroke_width(1)))?;
        }
    }
    chart.draw_series(LineSeries::new(
        positions.iter().filter_map(|p| Some((p.0, p.1? as f64))),
        BLACK.stroke_width(2),
    ))?;

    // 2. Receipt latency.
    let top = receipts.iter().map(|r| r.1.as_secs_f64() * 1e3).fold(1.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption(
            "receipt latency of accepted revocations (?wait=all; the slowest of each slice of time), ms",
            ("sans-serif", 14),
        )
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..top)?;
    chart.configure_mesh().x_desc("seconds").y_desc("ms").draw()?;
    bands(&mut chart, top)?;
    chart.draw_series(
        receipts.iter().map(|(t, d)| Circle::new((*t, d.as_secs_f64() * 1e3), 2, BLACK.filled())),
    )?;

    // 3. RSS per process.
    let top = usage.iter().map(|u| u.3).max().unwrap_or(1) as f64 / (1 << 20) as f64 * 1.05;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption("RSS per process, MiB (replicas thick, postgres green, agents thin)", ("sans-serif", 14))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..top.max(1.0))?;
    chart.configure_mesh().x_desc("seconds").y_desc("MiB").draw()?;
    bands(&mut chart, top.max(1.0))?;
    let mut names: Vec<&String> = usage.iter().map(|u| &u.1).collect();
    names.sort();
    names.dedup();
    for (k, name) in names.iter().enumerate() {
        let (color, width) = if name.starts_with("replica") {
            (Palette99::pick(k).to_rgba(), 3)
        } else if name.as_str() == "postgres" {
            (RGBColor(46, 139, 87).to_rgba(), 2)
        } else {
            (Palette99::pick(k).mix(0.5), 1)
        };
        let points =
            usage.iter().filter(|u| &u.1 == *name && u.3 > 0).map(|u| (u.0, u.3 as f64 / (1 << 20) as f64));
        chart.draw_series(LineSeries::new(points, color.stroke_width(width)))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_ends_and_the_bound() {
        let v: Vec<u32> = (0..10_000).collect();
        let t = thin(&v);
        assert!(t.len() <= MAX_POINTS + 1, "{}", t.len());
        assert_eq!((t.first(), t.last()), (Some(&0), Some(&9_999)));
        let short: Vec<u32> = (0..5).collect();
        assert_eq!(thin(&short), short);
    }
}
