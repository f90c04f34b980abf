//! Output: a readable table, JSON lines, and an SVG plot against N.

use std::io::Write;
use std::path::Path;

use plotters::prelude::*;

use crate::live::LiveResult;

fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn three(v: &[Option<f64>; 3], digits: usize) -> String {
    format!(
        "{}/{}/{}",
        f(v[0], digits),
        f(v[1], digits),
        f(v[2], digits)
    )
}

/// Prints the live table and the wsrelay/ceiling ratios.
pub fn live_table(results: &[LiveResult]) {
    println!();
    println!(
        "{:<8} {:>5} {:>6} {:>8} {:>7} {:>9} {:>7} {:>7} {:>17} {:>17} {:>17} {:>6}  failures",
        "target",
        "N",
        "keptup",
        "Mbit/s",
        "srvCPU%",
        "CPUs/Gbit",
        "RSS MiB",
        "KiB/pl",
        "TTFB p50/95/99 ms",
        "TTFK p50/95/99 ms",
        "lat p50/99/max ms",
        "harn%"
    );
    for r in results {
        let mut problems: Vec<String> = r
            .failures
            .iter()
            .map(|(k, v)| format!("{v}× {k}"))
            .collect();
        if r.behind > 0 {
            problems.push(format!("{}× below the stream rate", r.behind));
        }
        if r.late > 0 {
            problems.push(format!("{}× p99 latency over the keep-up bound", r.late));
        }
        let failures = if problems.is_empty() {
            "-".to_owned()
        } else {
            problems.join("; ")
        };
        println!(
            "{:<8} {:>5} {:>6} {:>8.1} {:>7} {:>9} {:>7} {:>7} {:>17} {:>17} {:>17} {:>6}  {}",
            r.target,
            r.players,
            r.kept_up,
            r.mbit_s,
            f(r.server_cpu_pct, 1),
            f(r.cpu_s_per_gbit, 3),
            f(r.rss_mib, 1),
            f(r.rss_per_player_kib, 1),
            three(&r.ttfb_ms, 1),
            three(&r.ttfk_ms, 1),
            three(&r.latency_ms, 2),
            f(r.harness_cpu_pct, 0),
            failures
        );
    }
    let mut printed = false;
    for r in results.iter().filter(|r| r.target != "ceiling") {
        let Some(c) = results
            .iter()
            .find(|c| c.target == "ceiling" && c.players == r.players)
        else {
            continue;
        };
        if !printed {
            println!();
            println!("{} / ceiling (same invocation):", r.target);
            printed = true;
        }
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".to_owned(),
        };
        println!(
            "  N={:<5} CPU per Gbit {}   latency p50 {}   p99 {}   TTFK p95 {}",
            r.players,
            ratio(r.cpu_s_per_gbit, c.cpu_s_per_gbit),
            ratio(r.latency_ms[0], c.latency_ms[0]),
            ratio(r.latency_ms[1], c.latency_ms[1]),
            ratio(r.ttfk_ms[1], c.ttfk_ms[1]),
        );
    }
}

/// Appends one JSON line per result.
pub fn json_lines<T: serde::Serialize>(path: &Path, results: &[T]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    for r in results {
        let line = serde_json::to_string(r).map_err(|e| e.to_string())?;
        writeln!(file, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn color(target: &str) -> RGBColor {
    match target {
        "wsrelay" => RGBColor(200, 30, 30),
        "ceiling" => RGBColor(30, 60, 200),
        _ => RGBColor(20, 140, 40),
    }
}

/// Draws server CPU % and latency p50/p99 against N, one line per target.
pub fn plot(path: &Path, results: &[LiveResult]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let mut targets: Vec<&str> = results.iter().map(|r| r.target.as_str()).collect();
    targets.dedup();
    targets.sort_unstable();
    targets.dedup();
    let max_n = results.iter().map(|r| r.players).max().unwrap_or(1) as f64 * 1.05;
    let max_cpu = results
        .iter()
        .filter_map(|r| r.server_cpu_pct)
        .fold(10.0, f64::max)
        * 1.1;
    let max_lat = results
        .iter()
        .filter_map(|r| r.latency_ms[1])
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(550);
    let series = |r: &LiveResult, which: usize| -> Option<f64> {
        match which {
            0 => r.server_cpu_pct,
            1 => r.latency_ms[1],
            _ => r.latency_ms[0],
        }
    };
    for (area, title, ymax, kinds) in [
        (
            &left,
            "server CPU % (1 core = 100) vs players",
            max_cpu,
            &[0usize][..],
        ),
        (
            &right,
            "latency ms (p99 thick, p50 thin) vs players",
            max_lat,
            &[1, 2][..],
        ),
    ] {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..max_n, 0f64..ymax)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("players")
            .draw()
            .map_err(|e| err(&e))?;
        for t in &targets {
            let c = color(t);
            for &k in kinds {
                let pts: Vec<(f64, f64)> = results
                    .iter()
                    .filter(|r| r.target == *t)
                    .filter_map(|r| series(r, k).map(|v| (r.players as f64, v)))
                    .collect();
                let style = ShapeStyle::from(&c).stroke_width(if k == 2 { 1 } else { 2 });
                let line = chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(|e| err(&e))?;
                if k != 2 {
                    line.label(*t).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
                }
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                    .map_err(|e| err(&e))?;
            }
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
