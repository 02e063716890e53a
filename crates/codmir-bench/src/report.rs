//! The report: one row per measured scenario, printed as a table for people and as JSON
//! lines for scripts; CPU and memory from /proc.

use std::time::Duration;

use serde_json::json;

use crate::server::{Server, Usage};

/// One line of the report.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) events_per_s: f64,
    pub(crate) deliveries_per_s: f64,
    /// The higher of the two ceilings measured in the same run (see `harness::Ceilings`).
    pub(crate) ceiling_per_s: f64,
    /// The ceiling of the reqwest client that codmir itself sends with (0 when not measured).
    pub(crate) reqwest_ceiling_per_s: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    pub(crate) duplicates: u64,
    pub(crate) rss_mib: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) cpu_pct: f64,
    pub(crate) note: String,
    pub(crate) extra: serde_json::Value,
}

impl Row {
    pub(crate) fn ratio(&self) -> f64 {
        self.ratio_to(self.ceiling_per_s)
    }

    fn ratio_to(&self, ceiling: f64) -> f64 {
        if ceiling > 0.0 {
            self.deliveries_per_s / ceiling
        } else {
            f64::NAN
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        json!({
            "scenario": self.scenario,
            "events_per_s": round(self.events_per_s),
            "deliveries_per_s": round(self.deliveries_per_s),
            "ceiling_per_s": round(self.ceiling_per_s),
            "ratio_to_ceiling": round3(self.ratio()),
            "reqwest_ceiling_per_s": round(self.reqwest_ceiling_per_s),
            "ratio_to_reqwest_ceiling": round3(self.ratio_to(self.reqwest_ceiling_per_s)),
            "latency_ms": {"p50": round3(self.p50), "p90": round3(self.p90), "p99": round3(self.p99), "max": round3(self.max)},
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.expected.saturating_sub(self.delivered),
            "duplicates": self.duplicates,
            "rss_mib": round(self.rss_mib),
            "peak_rss_mib": round(self.peak_rss_mib),
            "cpu_pct": round(self.cpu_pct),
            "note": self.note,
            "extra": self.extra,
        })
    }
}

pub(crate) fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub(crate) fn round3(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1000.0).round() / 1000.0
    } else {
        -1.0
    }
}

/// Fills in the servers' memory and their CPU over `wall`, from /proc.
pub(crate) fn usage_into(row: &mut Row, servers: &[Server], before: &[Usage], wall: Duration) {
    let after: Vec<Usage> = servers.iter().map(Server::usage).collect();
    row.rss_mib = after.iter().map(|u| u.rss_kib as f64 / 1024.0).sum();
    row.peak_rss_mib = after.iter().map(|u| u.peak_rss_kib as f64 / 1024.0).sum();
    let cpu: f64 = after
        .iter()
        .zip(before)
        .map(|(a, b)| a.cpu_secs - b.cpu_secs)
        .sum();
    row.cpu_pct = 100.0 * cpu / wall.as_secs_f64().max(1e-9);
}

/// The table for people: one line per row, then the notes.
pub(crate) fn print_table(rows: &[Row]) {
    println!(
        "\n{:<28} {:>10} {:>12} {:>10} {:>7} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>5} {:>7} {:>7} {:>5}",
        "scenario",
        "events/s",
        "deliveries/s",
        "ceiling/s",
        "ratio",
        "reqwest/s",
        "ratio",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "delivered",
        "dup",
        "RSS MiB",
        "peak",
        "CPU%"
    );
    // The cost rows count instructions, not rates: their notes say it all.
    for r in rows.iter().filter(|r| !r.scenario.starts_with("cost")) {
        println!(
            "{:<28} {:>10.0} {:>12.0} {:>10.0} {:>7.3} {:>10.0} {:>7.3} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>5} {:>7.1} {:>7.1} {:>5.0}",
            r.scenario,
            r.events_per_s,
            r.deliveries_per_s,
            r.ceiling_per_s,
            r.ratio(),
            r.reqwest_ceiling_per_s,
            r.ratio_to(r.reqwest_ceiling_per_s),
            r.p50,
            r.p90,
            r.p99,
            r.max,
            r.delivered,
            r.duplicates,
            r.rss_mib,
            r.peak_rss_mib,
            r.cpu_pct
        );
    }
    for r in rows {
        if !r.note.is_empty() {
            println!("  {}: {}", r.scenario, r.note);
        }
    }
}
