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
