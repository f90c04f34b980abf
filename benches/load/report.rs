//! Output: a readable table, JSON lines, and an SVG plot against N.

use std::io::Write;
use std::path::Path;

use plotters::prelude::*;

use crate::live::LiveResult;

/// `v` with `digits` decimals, or `-`.
pub(crate) fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// Three percentiles as `a/b/c`.
pub(crate) fn three(v: &[Option<f64>; 3], digits: usize) -> String {
    format!(
        "{}/{}/{}",
        f(v[0], digits),
        f(v[1], digits),
        f(v[2], digits)
    )
}

/// The failures column: players that failed (by reason), fell below the stream
/// rate or were late at p99; `-` when none.
pub(crate) fn problems(
    failures: &std::collections::BTreeMap<String, usize>,
    behind: usize,
    late: usize,
) -> String {
    let mut problems: Vec<String> = failures.iter().map(|(k, v)| format!("{v}× {k}")).collect();
    if behind > 0 {
        problems.push(format!("{behind}× below the stream rate"));
    }
    if late > 0 {
        problems.push(format!("{late}× p99 latency over the keep-up bound"));
    }
    if problems.is_empty() {
        "-".to_owned()
    } else {
        problems.join("; ")
    }
}

/// Syscalls shown per delivered tag after a `--strace` run (the rest count in `all`).
const SYSCALLS: [&str; 7] = [
    "writev",
    "write",
    "sendmsg",
    "sendto",
    "epoll_wait",
    "epoll_pwait",
    "futex",
];

/// Prints the live table, writes and syscalls per delivered tag, and the ratios of
/// wsrelay (or `--url`) to the ceiling at the same window and to nms.
pub fn live_table(results: &[LiveResult]) {
    println!();
    println!(
        "{:<16} {:>5} {:>6} {:>8} {:>7} {:>9} {:>7} {:>7} {:>17} {:>17} {:>17} {:>6} {:>6} {:>5}  failures",
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
        "wr/tag",
        "wk/tag",
        "harn%"
    );
    for r in results {
        let failures = problems(&r.failures, r.behind, r.late);
        println!(
            "{:<16} {:>5} {:>6} {:>8.1} {:>7} {:>9} {:>7} {:>7} {:>17} {:>17} {:>17} {:>6} {:>6} {:>5}  {}",
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
            f(r.writes_per_tag, 3),
            f(r.wakeups_per_tag, 3),
            f(r.harness_cpu_pct, 0),
            failures
        );
    }
    syscall_table(results);
    ratios(results);
}

/// Calls per delivered tag of the `--strace` runs.
fn syscall_table(results: &[LiveResult]) {
    let traced: Vec<&LiveResult> = results.iter().filter(|r| r.syscalls.is_some()).collect();
    if traced.is_empty() {
        return;
    }
    println!();
    println!(
        "syscalls per delivered tag in the window (strace -c -f; delivered tags = tags sent × players):"
    );
    print!("{:<11} {:>5} {:>10}", "target", "N", "tags");
    for name in SYSCALLS {
        print!(" {name:>11}");
    }
    println!(" {:>9}", "all");
    for r in traced {
        let calls = r.syscalls.as_ref().expect("filtered on Some");
        let tags = r.delivered_tags.unwrap_or(0);
        let per = |n: u64| {
            if tags == 0 {
                "-".to_owned()
            } else {
                format!("{:.4}", n as f64 / tags as f64)
            }
        };
        print!("{:<11} {:>5} {:>10}", r.target, r.players, tags);
        for name in SYSCALLS {
            print!(" {:>11}", per(calls.get(name).copied().unwrap_or(0)));
        }
        println!(" {:>9}", per(calls.values().sum()));
    }
}

/// The runs each main-server run (wsrelay or `--url`) is compared with: the
/// ceiling at the same window and nms, at the same N, player protocol and round.
fn peer_pairs(results: &[LiveResult]) -> Vec<(&LiveResult, &LiveResult)> {
    let mut pairs = Vec::new();
    for r in results
        .iter()
        .filter(|r| matches!(r.server, "wsrelay" | "url"))
    {
        pairs.extend(
            results
                .iter()
                .filter(|o| {
                    o.players == r.players
                        && o.round == r.round
                        && o.play == r.play
                        && (o.server == "nms"
                            || (o.server == "ceiling"
                                && (r.window_ms.is_none() || o.window_ms == r.window_ms)))
                })
                .map(|o| (r, o)),
        );
    }
    pairs
}

/// Each HTTP-FLV run with the WebSocket-FLV run of the same server, window, N and
/// round.
fn play_pairs(results: &[LiveResult]) -> Vec<(&LiveResult, &LiveResult)> {
    let mut pairs = Vec::new();
    for r in results.iter().filter(|r| r.play == "http") {
        pairs.extend(
            results
                .iter()
                .filter(|o| {
                    o.play == "ws"
                        && o.server == r.server
                        && o.window_ms == r.window_ms
                        && o.players == r.players
                        && o.round == r.round
                })
                .map(|o| (r, o)),
        );
    }
    pairs
}

fn ratio_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn times(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}x"))
}

/// The ratios a pair of runs is reported by: CPU per Gbit, latency p50 and p99,
/// TTFK p95, RSS per player.
fn pair_ratios(r: &LiveResult, o: &LiveResult) -> [Option<f64>; 5] {
    [
        ratio_of(r.cpu_s_per_gbit, o.cpu_s_per_gbit),
        ratio_of(r.latency_ms[0], o.latency_ms[0]),
        ratio_of(r.latency_ms[1], o.latency_ms[1]),
        ratio_of(r.ttfk_ms[1], o.ttfk_ms[1]),
        ratio_of(r.rss_per_player_kib, o.rss_per_player_kib),
    ]
}

/// Ratios of the main server (wsrelay or `--url`) to the ceiling at the same window
/// and to nms, and of HTTP-FLV to WebSocket-FLV runs, per N (and per round).
fn ratios(results: &[LiveResult]) {
    ratio_section(
        "ratios (same invocation; the ceiling at the same window)",
        &peer_pairs(results),
    );
    ratio_section(
        "HTTP-FLV / WebSocket-FLV (same server, window, N and round)",
        &play_pairs(results),
    );
}

/// One line per pair of runs; with several rounds, then the median of the rounds'
/// ratios with their range.
fn ratio_section(title: &str, pairs: &[(&LiveResult, &LiveResult)]) {
    if pairs.is_empty() {
        return;
    }
    let rounds = pairs.iter().map(|(r, _)| r.round).max().unwrap_or(1);
    println!();
    println!("{title}:");
    println!(
        "{:<16} {:<16} {:>5} {:>5} {:>9} {:>8} {:>8} {:>9} {:>7} {:>6} {:>6}",
        "this",
        "/ that",
        "N",
        "round",
        "CPU/Gbit",
        "lat p50",
        "lat p99",
        "TTFK p95",
        "KiB/pl",
        "keptup",
        "that"
    );
    for &(r, o) in pairs {
        let [cpu, p50, p99, ttfk, kib] = pair_ratios(r, o).map(times);
        println!(
            "{:<16} {:<16} {:>5} {:>5} {:>9} {:>8} {:>8} {:>9} {:>7} {:>6} {:>6}",
            r.target, o.target, r.players, r.round, cpu, p50, p99, ttfk, kib, r.kept_up, o.kept_up,
        );
    }
    if rounds < 2 {
        return;
    }
    println!();
    println!("median over {rounds} interleaved rounds of each round's ratio (lowest-highest):");
    println!(
        "{:<16} {:<16} {:>5} {:>18} {:>18} {:>18}",
        "this", "/ that", "N", "CPU/Gbit", "lat p99", "TTFK p95"
    );
    let mut keys: Vec<(&str, &str, usize)> = Vec::new();
    for (r, o) in pairs {
        let key = (r.target.as_str(), o.target.as_str(), r.players);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for (this, that, n) in keys {
        let of = |i: usize| {
            let mut v: Vec<f64> = pairs
                .iter()
                .filter(|(r, o)| r.target == this && o.target == that && r.players == n)
                .filter_map(|(r, o)| pair_ratios(r, o)[i])
                .collect();
            v.sort_by(f64::total_cmp);
            median_range(&v)
        };
        println!(
            "{:<16} {:<16} {:>5} {:>18} {:>18} {:>18}",
            this,
            that,
            n,
            of(0),
            of(2),
            of(3)
        );
    }
}

/// `median (lowest-highest)` of sorted ratios.
fn median_range(sorted: &[f64]) -> String {
    let (Some(lo), Some(hi)) = (sorted.first(), sorted.last()) else {
        return "-".to_owned();
    };
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    };
    format!("{median:.2}x ({lo:.2}-{hi:.2})")
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

/// A color per server, a shade per window (by its rank among the windows run).
fn color(r: &LiveResult, windows: &[u64]) -> RGBColor {
    const WSRELAY: [RGBColor; 4] = [
        RGBColor(200, 30, 30),
        RGBColor(230, 120, 20),
        RGBColor(150, 0, 110),
        RGBColor(240, 150, 150),
    ];
    const CEILING: [RGBColor; 4] = [
        RGBColor(30, 60, 200),
        RGBColor(0, 160, 200),
        RGBColor(110, 60, 220),
        RGBColor(140, 170, 250),
    ];
    let rank = r
        .window_ms
        .and_then(|w| windows.iter().position(|x| *x == w))
        .unwrap_or(0)
        % 4;
    match r.server {
        "wsrelay" => WSRELAY[rank],
        "ceiling" => CEILING[rank],
        "nms" => RGBColor(20, 140, 40),
        _ => RGBColor(90, 90, 90),
    }
}

/// Draws, against N, one line per server × window: CPU seconds per delivered Gbit,
/// server CPU %, and latency p50 (thin) / p99 (thick).
pub fn plot(path: &Path, results: &[LiveResult]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let mut labels: Vec<&str> = Vec::new();
    for r in results {
        if !labels.contains(&r.target.as_str()) {
            labels.push(&r.target);
        }
    }
    let mut windows: Vec<u64> = results.iter().filter_map(|r| r.window_ms).collect();
    windows.sort_unstable();
    windows.dedup();
    let max_n = results.iter().map(|r| r.players).max().unwrap_or(1) as f64 * 1.05;
    let top = |v: &dyn Fn(&LiveResult) -> Option<f64>, floor: f64| {
        results.iter().filter_map(v).fold(floor, f64::max) * 1.1
    };
    let max_gbit = top(&|r| r.cpu_s_per_gbit, 0.1);
    let max_cpu = top(&|r| r.server_cpu_pct, 10.0);
    let max_lat = top(&|r| r.latency_ms[1], 1.0);
    let root = SVGBackend::new(path, (1500, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let areas = root.split_evenly((1, 3));
    let series = |r: &LiveResult, which: usize| -> Option<f64> {
        match which {
            0 => r.cpu_s_per_gbit,
            1 => r.server_cpu_pct,
            2 => r.latency_ms[1],
            _ => r.latency_ms[0],
        }
    };
    for (area, title, ymax, kinds) in [
        (
            &areas[0],
            "server CPU s per delivered Gbit vs players",
            max_gbit,
            &[0usize][..],
        ),
        (
            &areas[1],
            "server CPU % (1 core = 100) vs players",
            max_cpu,
            &[1][..],
        ),
        (
            &areas[2],
            "latency ms (p99 thick, p50 thin) vs players",
            max_lat,
            &[2, 3][..],
        ),
    ] {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 15))
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
        for label in &labels {
            let rows: Vec<&LiveResult> = results.iter().filter(|r| r.target == *label).collect();
            let c = color(rows[0], &windows);
            for &k in kinds {
                let mut pts: Vec<(f64, f64)> = rows
                    .iter()
                    .filter_map(|r| series(r, k).map(|v| (r.players as f64, v)))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
                // A dot per run, the line through each N's median (several rounds).
                let mut line_pts: Vec<(f64, f64)> = Vec::new();
                for same_n in pts.chunk_by(|a, b| a.0 == b.0) {
                    line_pts.push(same_n[same_n.len() / 2]);
                }
                let style = ShapeStyle::from(&c).stroke_width(if k == 3 { 1 } else { 2 });
                let line = chart
                    .draw_series(LineSeries::new(line_pts, style))
                    .map_err(|e| err(&e))?;
                if k != 3 {
                    line.label(*label).legend(move |(x, y)| {
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
