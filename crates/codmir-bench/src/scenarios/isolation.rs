//! `isolation`: ten webhooks, once all healthy and once with one that never answers; then a
//! victim workspace beside none, two and five attacker workspaces whose endpoints hang, never
//! accept or refuse, on the victim's own host; then a host of which a sixth of the requests
//! hang, beside the same host all answered.

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::harness::Bench;
use crate::load::{self, Api};
use crate::receiver::Mode;
use crate::report::{Row, usage_into};
use crate::server::{Server, Usage, new_key};

pub(crate) async fn isolation(b: &Bench) -> Result<Vec<Row>> {
    let mut rows = endpoints(b).await?;
    rows.extend(tenants(b).await?);
    rows.extend(partly_hanging_host(b).await?);
    Ok(rows)
}

/// Events per second, and for how long, to the host of which a sixth of requests hang.
const HOST_RATE: f64 = 6.0;
const HOST_SECONDS: u64 = 30;

/// Ten webhooks of one workspace on one host (the receiver), 6 events/s for 30 s: once all
/// answered, once with every sixth request of each webhook hanging until the request timeout
/// (15 s). Reported: the deliveries that arrived while the events were sent, per second, and
/// their latency, beside the all-healthy run of the same invocation. The bound per host is set
/// back to its default (128), which the bench otherwise lifts.
pub(crate) async fn partly_hanging_host(b: &Bench) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut healthy_rate = 0.0;
    for hanging in [false, true] {
        b.stats.reset();
        let db = b.database().await?;
        let (servers, api) = b.servers(&db, &["--max-in-flight-per-host", "128"]).await?;
        let project = api.project().await?;
        for i in 0..10 {
            api.webhook(&b.receiver, i).await?;
            if hanging {
                b.stats.set_mode(i, Mode::SixthHangs);
            }
        }
        let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
        let began = Instant::now();
        let n = (HOST_RATE as u64) * HOST_SECONDS;
        let sent = load::tickets(&api, &project, 0..n, 8, Some(HOST_RATE), &b.stats).await;
        let during = b.stats.unique() as u64;
        let rate = during as f64 / sent.elapsed.as_secs_f64().max(1e-9);
        if !hanging {
            healthy_rate = rate;
        }
        let mut row = Row {
            scenario: if hanging {
                "isolation (a sixth of a host's requests hang)".into()
            } else {
                "isolation (the host all answered)".into()
            },
            events_per_s: sent.rate(),
            deliveries_per_s: rate,
            ceiling_per_s: healthy_rate,
            expected: 10 * sent.accepted,
            delivered: during,
            duplicates: b.stats.duplicates.load(Ordering::Relaxed),
            note: format!(
                "{n} events at {HOST_RATE}/s to 10 webhooks on one host (bound 128): deliveries arrived while sending, per second; ceiling = the all-answered run"
            ),
            ..Row::default()
        };
        b.latency_into(&mut row);
        usage_into(&mut row, &servers, &before, began.elapsed());
        rows.push(row);
        for s in servers {
            s.stop().await;
        }
        b.drop_database(db).await;
    }
    Ok(rows)
}

/// Victim events per second, and for how long.
const VICTIM_RATE: f64 = 200.0;
const VICTIM_SECONDS: u64 = 20;
/// Each attacker's webhooks, by kind, and the events each one fires first.
const HANGING: usize = 3;
const NEVER_ACCEPTING: usize = 3;
const REFUSING: usize = 4;
const ATTACK_EVENTS: u64 = 300;
/// Attackers' sequence numbers start here, past what the receiver times (nothing of theirs
/// arrives anyway: their endpoints hang, never accept or refuse).
const ATTACK_SEQ: u64 = 1 << 40;

/// One victim workspace with one healthy webhook, fed at a steady pace, beside `attackers`
/// workspaces that fill their shares with attempts that hang (the request timeout, 15 s),
/// connections never accepted, and refused ones, all on 127.0.0.1 like the victim's receiver.
/// The victim's end-to-end p99 is reported beside the run without attackers.
async fn tenants(b: &Bench) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut healthy_p99 = 0.0;
    // Listeners that never accept (the kernel completes the handshake until the backlog is
    // full; nothing ever answers) and ports that refuse, shared by every attacker.
    let silent: Vec<std::net::TcpListener> = (0..NEVER_ACCEPTING)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let refusing: Vec<u16> = (0..REFUSING)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()))
        .map(|a| a.map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    for attackers in [0usize, 2, 5] {
        b.stats.reset();
        let db = b.database().await?;
        let victim_key = new_key(&b.binary, &db.url, "victim").await?;
        let mut attacker_keys = Vec::new();
        for a in 0..attackers {
            attacker_keys.push(new_key(&b.binary, &db.url, &format!("attacker{a}")).await?);
        }
        // The bench lifts the per-workspace and per-host bounds; here they are set back to the
        // defaults of the builds before fair shares (half the 512 slots, 128 per host), which
        // are above the shares now, so that an earlier build (`--codmir`) runs as shipped.
        let bounds = [
            "--max-in-flight-per-workspace",
            "256",
            "--max-in-flight-per-host",
            "128",
        ];
        let (servers, victim) = b.servers_with(&db, &bounds, Some(&victim_key)).await?;
        for (a, key) in attacker_keys.iter().enumerate() {
            let api = Api {
                key: key.clone(),
                ..victim.clone()
            };
            let project = api.project().await?;
            for h in 0..HANGING {
                let index = 100 + a * HANGING + h;
                b.stats.set_mode(index, Mode::Hang);
                api.webhook(&b.receiver, index).await?;
            }
            for l in &silent {
                attack_hook(&api, &format!("http://{}/never", l.local_addr()?)).await?;
            }
            for port in &refusing {
                attack_hook(&api, &format!("http://127.0.0.1:{port}/refused")).await?;
            }
            let seqs =
                ATTACK_SEQ + a as u64 * ATTACK_EVENTS..ATTACK_SEQ + (a as u64 + 1) * ATTACK_EVENTS;
            load::tickets(&api, &project, seqs, 16, None, &b.stats).await;
        }
        // Let the attackers' attempts fill their shares.
        if attackers > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        let project = victim.project().await?;
        victim.webhook(&b.receiver, 0).await?;
        let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
        let start_ns = b.stats.now_ns();
        let began = Instant::now();
        let n = (VICTIM_RATE as u64) * VICTIM_SECONDS;
        let sent = load::tickets(&victim, &project, 0..n, 8, Some(VICTIM_RATE), &b.stats).await;
        let delivered = b.wait_delivered(sent.accepted).await;
        let span = b.span_since(start_ns);
        let mut row = Row {
            scenario: match attackers {
                0 => "isolation (victim alone)".into(),
                n => format!("isolation (victim beside {n} attackers)"),
            },
            events_per_s: sent.rate(),
            deliveries_per_s: delivered as f64 / span.as_secs_f64(),
            expected: sent.accepted,
            delivered,
            duplicates: b.stats.duplicates.load(Ordering::Relaxed),
            ..Row::default()
        };
        b.latency_into(&mut row);
        if attackers == 0 {
            healthy_p99 = row.p99;
            row.note = format!(
                "{n} victim events at {VICTIM_RATE}/s to one webhook; the baseline of the rows below"
            );
        } else {
            row.note = format!(
                "{attackers} attacker workspaces × ({HANGING} hanging, {NEVER_ACCEPTING} never accepting, {REFUSING} refusing webhooks, {ATTACK_EVENTS} events) on the victim's host; victim p99 {:.1} ms = {:.2} × alone ({healthy_p99:.1} ms)",
                row.p99,
                row.p99 / healthy_p99.max(1e-9)
            );
        }
        usage_into(&mut row, &servers, &before, began.elapsed());
        rows.push(row);
        for s in servers {
            s.stop().await;
        }
        b.drop_database(db).await;
    }
    Ok(rows)
}

/// Registers an attacker's webhook to `url` for the tickets it makes.
async fn attack_hook(api: &Api, url: &str) -> Result<()> {
    let w = api
        .post(
            "/v1/webhooks",
            json!({"url": url, "events": ["ticket.created"]}),
        )
        .await?;
    w["id"].as_str().map(|_| ()).context("webhook id")
}

/// Ten webhooks of one workspace, once all healthy and once with one that never answers.
async fn endpoints(b: &Bench) -> Result<Vec<Row>> {
    let n = (b.args.events / 5).max(1000);
    let mut rows = Vec::new();
    let mut healthy_rate = 0.0;
    for hanging in [false, true] {
        b.stats.reset();
        let db = b.database().await?;
        let (servers, api) = b
            .servers(&db, &["--request-timeout", "5s", "--delivery-lease", "30s"])
            .await?;
        let project = api.project().await?;
        for i in 0..10 {
            api.webhook(&b.receiver, i).await?;
        }
        if hanging {
            b.stats.set_mode(0, Mode::Hang);
        }
        let before: Vec<Usage> = servers.iter().map(Server::usage).collect();
        let start_ns = b.stats.now_ns();
        let began = Instant::now();
        let sent = load::tickets(&api, &project, 0..n, b.args.concurrency, None, &b.stats).await;
        // Only the nine other webhooks are expected to complete.
        let expected = 9 * sent.accepted + if hanging { 0 } else { sent.accepted };
        let delivered = b.wait_delivered(expected).await;
        let span = b.span_since(start_ns);
        let nine: u64 = (1..10)
            .map(|i| b.stats.per_hook[i].load(Ordering::Relaxed))
            .sum();
        let rate = nine as f64 / span.as_secs_f64();
        if !hanging {
            healthy_rate = rate;
        }
        let mut row = Row {
            scenario: if hanging {
                "isolation (1 of 10 hangs)".into()
            } else {
                "isolation (10 healthy)".into()
            },
            events_per_s: sent.rate(),
            deliveries_per_s: rate,
            ceiling_per_s: healthy_rate,
            expected,
            delivered,
            duplicates: b.stats.duplicates.load(Ordering::Relaxed),
            note: format!(
                "{n} events to 10 webhooks; deliveries/s of the nine others; ceiling = the all-healthy run"
            ),
            ..Row::default()
        };
        b.latency_into(&mut row);
        usage_into(&mut row, &servers, &before, began.elapsed());
        rows.push(row);
        for s in servers {
            s.stop().await;
        }
        b.stats.set_mode(0, Mode::Ok);
        b.drop_database(db).await;
    }
    Ok(rows)
}
