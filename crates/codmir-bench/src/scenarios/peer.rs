//! `svix`: svix-server side by side with codmir in one run. codmir's `steady` first, then the
//! same number of events at the same concurrency through a running svix-server's public API
//! (`POST /api/v1/app/{app}/msg/`) to one endpoint on the same receiver, beside both
//! ceilings measured again just before it. The bench neither builds nor starts svix-server:
//! `--svix-url` and `--svix-token` name one already running (docs/benchmarks.md has the
//! configuration it was measured with).

use anyhow::{Context, Result};
use serde_json::json;

use super::steady;
use crate::harness::Bench;
use crate::load::{self, Api};
use crate::report::{Row, round, round3};

pub(crate) async fn svix(b: &Bench) -> Result<Vec<Row>> {
    let (Some(base), Some(token)) = (&b.args.svix_url, &b.args.svix_token) else {
        anyhow::bail!("--scenario svix needs --svix-url and --svix-token of a running svix-server");
    };
    let ours = steady(b).await?;
    let n = b.args.events;
    let ceilings = b.ceilings(n.min(50_000)).await?;
    b.stats.reset();
    let api = Api {
        client: b.client.clone(),
        base: base.trim_end_matches('/').to_owned(),
        key: token.clone(),
    };
    let app = api
        .post("/api/v1/app/", json!({"name": "codmir-bench"}))
        .await
        .context("svix-server: create an application")?;
    let app = app["id"]
        .as_str()
        .context("svix application id")?
        .to_owned();
    api.post(
        &format!("/api/v1/app/{app}/endpoint/"),
        json!({"url": format!("{}/h/0", b.receiver), "version": 1}),
    )
    .await
    .context("svix-server: create an endpoint")?;
    let start_ns = b.stats.now_ns();
    let sent = load::svix_messages(&api, &app, 0..n, b.args.concurrency, &b.stats).await;
    let (mut theirs, (api_p50, api_p99)) = b
        .delivered_row("svix-server steady".into(), start_ns, &sent, &ceilings)
        .await;
    let lead = ours.deliveries_per_s / theirs.deliveries_per_s.max(1e-9);
    theirs.note = format!(
        "{n} messages to {base}, concurrency {}, API errors {}, API round trip p50 {api_p50:.2} ms p99 {api_p99:.2} ms; codmir's steady in this run {:.0}/s = {lead:.2}× svix-server",
        b.args.concurrency, sent.errors, ours.deliveries_per_s
    );
    theirs.extra["codmir_deliveries_per_s"] = json!(round(ours.deliveries_per_s));
    theirs.extra["codmir_to_svix"] = json!(round3(lead));
    Ok(vec![ours, theirs])
}
