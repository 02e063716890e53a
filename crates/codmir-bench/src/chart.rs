//! The benchmark's chart as a self-contained SVG: throughput beside the ceiling, and latency
//! percentiles, per scenario.

use std::fmt::Write;

pub(crate) struct Bar {
    pub label: String,
    pub codmir: f64,
    pub ceiling: f64,
    pub p50: f64,
    pub p99: f64,
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v.max(0.0) } else { 0.0 }
}

/// Two panels of horizontal bars: deliveries/s (codmir and ceiling), and p50/p99 in ms.
pub(crate) fn svg(bars: &[Bar]) -> String {
    let row_h = 34.0;
    let label_w = 260.0;
    let panel_w = 330.0;
    let top = 50.0;
    let height = top + row_h * bars.len() as f64 + 30.0;
    let width = label_w + 2.0 * panel_w + 60.0;
    let max_rate = bars
        .iter()
        .map(|b| finite(b.codmir).max(finite(b.ceiling)))
        .fold(1.0, f64::max);
    let max_ms = bars.iter().map(|b| finite(b.p99)).fold(1.0, f64::max);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{label_w}" y="18" font-size="13" font-weight="bold">deliveries/s (dark) and ceiling (light)</text>
<text x="{x2}" y="18" font-size="13" font-weight="bold">end-to-end latency p50 (dark) and p99 (light), ms</text>
<text x="{label_w}" y="36" fill="#555">max {max_rate:.0}/s</text>
<text x="{x2}" y="36" fill="#555">max {max_ms:.1} ms</text>
"##,
        x2 = label_w + panel_w + 30.0
    );
    for (i, b) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let w = |v: f64, max: f64| panel_w * finite(v) / max;
        let x2 = label_w + panel_w + 30.0;
        let _ = write!(
            s,
            r##"<text x="{lx}" y="{ty}" text-anchor="end">{label}</text>
<rect x="{label_w}" y="{y}" width="{cw}" height="12" fill="#bcd"/>
<rect x="{label_w}" y="{y2}" width="{dw}" height="12" fill="#247"/>
<text x="{tx}" y="{ty}" fill="#222">{rate:.0}</text>
<rect x="{x2}" y="{y}" width="{p99w}" height="12" fill="#f4c7a1"/>
<rect x="{x2}" y="{y2}" width="{p50w}" height="12" fill="#c55a11"/>
<text x="{tx2}" y="{ty}" fill="#222">{p50:.2} / {p99:.2}</text>
"##,
            lx = label_w - 8.0,
            ty = y + 16.0,
            label = b.label.replace('&', "&amp;").replace('<', "&lt;"),
            cw = w(b.ceiling, max_rate),
            y2 = y + 12.0,
            dw = w(b.codmir, max_rate),
            tx = label_w + w(b.codmir.max(b.ceiling), max_rate) + 4.0,
            rate = finite(b.codmir),
            p99w = w(b.p99, max_ms),
            p50w = w(b.p50, max_ms),
            tx2 = x2 + w(b.p99.max(b.p50), max_ms) + 4.0,
            p50 = finite(b.p50),
            p99 = finite(b.p99),
        );
    }
    s.push_str("</svg>\n");
    s
}

/// What one panel of the soak's chart plots.
type Measure = fn(&crate::scenarios::Sample) -> f64;

/// The soak's samples as four small line charts over time (minutes): resident memory,
/// open file descriptors, database size, p99 latency of each interval.
pub(crate) fn soak_svg(samples: &[crate::scenarios::Sample]) -> String {
    let (w, h, pad) = (460.0, 160.0, 40.0);
    let panels: [(&str, Measure); 4] = [
        ("resident memory, MiB", |s| s.rss_mib),
        ("open file descriptors", |s| s.fds as f64),
        ("database on disk, MiB", |s| s.db_mib),
        ("delivery p99 per interval, ms", |s| s.p99_ms),
    ];
    let end = samples.last().map_or(1.0, |s| s.minute.max(1.0));
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
"##,
        2.0 * (w + pad),
        2.0 * (h + 2.0 * pad)
    );
    for (i, (title, value)) in panels.iter().enumerate() {
        let x0 = (i % 2) as f64 * (w + pad) + pad;
        let y0 = (i / 2) as f64 * (h + 2.0 * pad) + pad;
        let max = samples
            .iter()
            .map(|s| finite(value(s)))
            .fold(0.0, f64::max)
            .max(1e-9);
        let points: Vec<String> = samples
            .iter()
            .map(|s| {
                let x = x0 + s.minute / end * w;
                let y = y0 + h - finite(value(s)) / max * h;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            out,
            r##"<text x="{x0}" y="{}" font-size="12" font-weight="bold">{title}</text>
<text x="{x0}" y="{}" fill="#555">max {max:.1}; 0 to {end:.0} min</text>
<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#ccc"/>
<polyline fill="none" stroke="#1f6feb" stroke-width="1.5" points="{}"/>
"##,
            y0 - 18.0,
            y0 - 5.0,
            points.join(" ")
        );
    }
    out.push_str("</svg>\n");
    out
}
