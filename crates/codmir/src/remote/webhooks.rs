//! `codmir webhooks …`: register, inspect, change, test and measure webhooks.

use clap::Subcommand;
use serde_json::{Map, Value, json};

use super::{Api, Outcome, Paging, Remote, cell, fields, list_rows, table};

#[derive(Subcommand)]
pub(crate) enum WebhooksCommand {
    /// List the workspace's webhooks.
    #[command(after_help = "Example:\n  codmir webhooks list --json")]
    List {
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one webhook's settings (never its secret).
    #[command(after_help = "Example:\n  codmir webhooks show wh_01jd…")]
    Show { id: String },
    /// Register an endpoint. Prints its id and secret (shown this once).
    #[command(
        after_help = "Example:\n  codmir webhooks create https://example.com/hooks --events ticket.created,ticket.updated"
    )]
    Create {
        /// The endpoint's URL (https:// in production).
        endpoint: String,
        /// Event types, families (`ticket.*`) or `*`, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        events: Vec<String>,
        /// The signing secret; leave it out to have a strong one generated.
        #[arg(long)]
        secret: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Only events of these projects (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        projects: Vec<String>,
        /// `per_resource`: each ticket's (or project's) deliveries one at a time, in the order
        /// of their events; `none` (the default): each as soon as it is due.
        #[arg(long, value_parser = ["none", "per_resource"])]
        ordering: Option<String>,
    },
    /// Change any of a webhook's settings; what is left out stays as it is.
    #[command(
        after_help = "Examples:\n  codmir webhooks update wh_01jd… --events '*'\n  codmir webhooks update wh_01jd… --max-in-flight 4 --rate-limit none --header X-Tenant=acme"
    )]
    Update {
        id: String,
        /// A new URL for the endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Event types, families (`ticket.*`) or `*`, comma-separated.
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        /// A new description; `""` removes it.
        #[arg(long)]
        description: Option<String>,
        /// Only events of these projects (comma-separated ids); `all` for every project.
        #[arg(long, value_delimiter = ',')]
        projects: Option<Vec<String>>,
        /// Most attempts in flight to it at once; `none` for the server's bound.
        #[arg(long, value_parser = count_or_none)]
        max_in_flight: Option<Setting<u64>>,
        /// Most attempts started per second; `none` removes the limit.
        #[arg(long, value_parser = count_or_none)]
        rate_limit: Option<Setting<u64>>,
        /// A static header every request carries, `NAME=VALUE` (repeat it); replaces all of
        /// them. With `--no-headers`, none.
        #[arg(long = "header", value_parser = header_pair, conflicts_with = "no_headers")]
        headers: Vec<(String, String)>,
        /// Removes every custom header.
        #[arg(long)]
        no_headers: bool,
        /// When the server removes it by itself (RFC 3339, a date, or an age ahead such as
        /// `2h`); `none` keeps it for good.
        #[arg(long, value_parser = expiry_or_none)]
        expires: Option<Setting<String>>,
        /// `per_resource` or `none` (back to none, what waited in a chain goes at once).
        #[arg(long, value_parser = ["none", "per_resource"])]
        ordering: Option<String>,
    },
    /// Delete a webhook; its pending deliveries are cancelled.
    #[command(after_help = "Example:\n  codmir webhooks delete wh_01jd…")]
    Delete { id: String },
    /// Turn a webhook back on (for new events; `codmir replay --include-missed` for the rest).
    #[command(after_help = "Example:\n  codmir webhooks enable wh_01jd…")]
    Enable { id: String },
    /// Turn a webhook off; its pending deliveries are cancelled.
    #[command(after_help = "Example:\n  codmir webhooks disable wh_01jd…")]
    Disable { id: String },
    /// Send a test event now and show what the endpoint answered. Exits 1 if it did not
    /// answer with a 2xx.
    #[command(after_help = "Example:\n  codmir webhooks ping wh_01jd…")]
    Ping { id: String },
    /// Replace a webhook's secret; the old one keeps signing beside it for the grace period.
    #[command(after_help = "Example:\n  codmir webhooks rotate-secret wh_01jd… --grace-period 24h")]
    RotateSecret {
        id: String,
        /// The new secret; leave it out to have one generated.
        #[arg(long)]
        secret: Option<String>,
        /// How long the old secret still signs (e.g. `1h`, `24h`; `0s` ends it now).
        #[arg(long, value_parser = parse_duration)]
        grace_period: Option<std::time::Duration>,
    },
    /// Make every pending delivery of a webhook due now (a receiver back from an outage).
    #[command(after_help = "Example:\n  codmir webhooks retry-pending wh_01jd…")]
    RetryPending { id: String },
    /// Deliveries over the last hour, day or week: by outcome, success rate, latency, and a
    /// chart of the series.
    #[command(after_help = "Example:\n  codmir webhooks stats wh_01jd… --window 24h")]
    Stats {
        id: String,
        /// `1h`, `24h` or `7d`.
        #[arg(long, default_value = "1h")]
        window: String,
    },
}

fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    codmir_core::retry::parse_duration(raw).map_err(|e| e.message)
}

/// A setting given a value, or `none` (the API's `null`).
#[derive(Debug, Clone)]
pub(crate) enum Setting<T> {
    To(T),
    Unset,
}

impl<T: Into<Value>> Setting<T> {
    fn json(self) -> Value {
        match self {
            Setting::To(v) => v.into(),
            Setting::Unset => Value::Null,
        }
    }
}

/// A positive count, or `none`.
fn count_or_none(raw: &str) -> Result<Setting<u64>, String> {
    if raw == "none" {
        return Ok(Setting::Unset);
    }
    match raw.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Setting::To(n)),
        _ => Err(format!("`{raw}` is not a positive number or `none`")),
    }
}

/// `NAME=VALUE`.
fn header_pair(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("`{raw}` is not NAME=VALUE")),
    }
}

/// An expiry ahead (RFC 3339, a date, or an age such as `2h` from now), or `none`.
fn expiry_or_none(raw: &str) -> Result<Setting<String>, String> {
    if raw == "none" {
        return Ok(Setting::Unset);
    }
    if let Ok(ahead) = codmir_core::retry::parse_duration(raw) {
        let now = codmir_core::time::Timestamp::now();
        return Ok(Setting::To(now.plus(ahead).to_rfc3339_millis()));
    }
    super::time_arg(raw).map(Setting::To)
}

pub(crate) async fn run(remote: &Remote, command: WebhooksCommand) -> Outcome {
    let api = Api::new(remote)?;
    let path = |id: &str| format!("/v1/webhooks/{id}");
    match command {
        WebhooksCommand::List { paging } => {
            let list = api.get("/v1/webhooks", &paging.query()).await?;
            api.show(&list, |list| {
                table(
                    &["ID", "STATE", "EVENTS", "URL"],
                    list_rows(list, |w| {
                        vec![
                            cell(&w["id"]),
                            state(w),
                            cell(&w["events"]),
                            cell(&w["url"]),
                        ]
                    }),
                )
            });
        }
        WebhooksCommand::Show { id } => {
            let w = api.get(&path(&id), &[]).await?;
            api.show(&w, show_webhook);
        }
        WebhooksCommand::Create {
            endpoint,
            events,
            secret,
            description,
            projects,
            ordering,
        } => {
            let mut body = json!({"url": endpoint, "events": events});
            set(&mut body, "secret", secret.map(Value::from));
            set(&mut body, "ordering", ordering.map(Value::from));
            set(&mut body, "description", description.map(Value::from));
            if !projects.is_empty() {
                body["project_ids"] = json!(projects);
            }
            let w = api.post("/v1/webhooks", body).await?;
            api.show(&w, |w| {
                println!("Created webhook {}.", cell(&w["id"]));
                show_webhook(w);
                println!("\nIts secret is shown this once; keep it now:");
                fields(&[
                    ("secret", cell(&w["secret"])),
                    ("signing_secret", cell(&w["signing_secret"])),
                ]);
            });
        }
        WebhooksCommand::Update {
            id,
            endpoint,
            events,
            description,
            projects,
            max_in_flight,
            rate_limit,
            headers,
            no_headers,
            expires,
            ordering,
        } => {
            let mut body = json!({});
            set(&mut body, "ordering", ordering.map(Value::from));
            set(&mut body, "url", endpoint.map(Value::from));
            set(&mut body, "events", events.map(Value::from));
            if let Some(d) = description {
                body["description"] = if d.is_empty() { Value::Null } else { d.into() };
            }
            if let Some(p) = projects {
                body["project_ids"] = match p.as_slice() {
                    [all] if all == "all" => json!([]),
                    _ => json!(p),
                };
            }
            if let Some(n) = max_in_flight {
                body["max_in_flight"] = n.json();
            }
            if let Some(n) = rate_limit {
                body["rate_limit_per_second"] = n.json();
            }
            if no_headers || !headers.is_empty() {
                let map: Map<String, Value> = headers
                    .into_iter()
                    .map(|(name, value)| (name, Value::String(value)))
                    .collect();
                body["headers"] = Value::Object(map);
            }
            if let Some(at) = expires {
                body["expires_at"] = at.json();
            }
            if body.as_object().is_some_and(Map::is_empty) {
                return Err(super::Failure::usage(
                    "nothing to change: pass a setting to change (see --help)".into(),
                ));
            }
            let w = api.patch(&path(&id), body).await?;
            api.show(&w, show_webhook);
        }
        WebhooksCommand::Delete { id } => {
            api.delete(&path(&id)).await?;
            api.show(&json!({"id": id, "deleted": true}), |_| {
                println!("Deleted webhook {id}.")
            });
        }
        WebhooksCommand::Enable { id } => {
            let w = api.patch(&path(&id), json!({"enabled": true})).await?;
            api.show(&w, |w| {
                println!("Webhook {} is {}.", cell(&w["id"]), state(w))
            });
        }
        WebhooksCommand::Disable { id } => {
            let w = api.patch(&path(&id), json!({"enabled": false})).await?;
            api.show(&w, |w| {
                println!("Webhook {} is {}.", cell(&w["id"]), state(w))
            });
        }
        WebhooksCommand::Ping { id } => {
            let r = api.post(&format!("{}/ping", path(&id)), json!({})).await?;
            api.show(&r, |r| {
                let answer = match (r["status_code"].as_u64(), r["error"].as_str()) {
                    (Some(code), _) => format!("HTTP {code}"),
                    (None, Some(e)) => e.to_owned(),
                    (None, None) => "no answer".into(),
                };
                fields(&[
                    ("answer", answer),
                    ("duration", format!("{} ms", cell(&r["duration_ms"]))),
                    ("delivery", cell(&r["delivery_id"])),
                    ("response", cell(&r["response_body"])),
                ]);
            });
            if r["succeeded"] != true {
                return Err(super::Failure::api(format!(
                    "the endpoint did not accept the ping (see delivery {})",
                    cell(&r["delivery_id"])
                )));
            }
        }
        WebhooksCommand::RotateSecret {
            id,
            secret,
            grace_period,
        } => {
            let mut body = json!({});
            set(&mut body, "secret", secret.map(Value::from));
            set(
                &mut body,
                "grace_period_seconds",
                grace_period.map(|g| g.as_secs().into()),
            );
            let w = api
                .post(&format!("{}/rotate-secret", path(&id)), body)
                .await?;
            api.show(&w, |w| {
                println!("Rotated the secret of webhook {}.", cell(&w["id"]));
                let [webhook_signature, x_codmir_signature] = signing(w);
                fields(&[
                    ("secret", cell(&w["secret"])),
                    ("signing_secret", cell(&w["signing_secret"])),
                    webhook_signature,
                    x_codmir_signature,
                ]);
            });
        }
        WebhooksCommand::RetryPending { id } => {
            let r = api
                .post(&format!("{}/retry-pending", path(&id)), json!({}))
                .await?;
            api.show(&r, |r| {
                println!(
                    "{} pending deliveries of webhook {id} are due now.",
                    cell(&r["due_now"])
                )
            });
        }
        WebhooksCommand::Stats { id, window } => {
            let s = api
                .get(&format!("{}/stats", path(&id)), &[("window", Some(window))])
                .await?;
            api.show(&s, show_stats);
        }
    }
    Ok(())
}

fn set(body: &mut Value, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        body[key] = v;
    }
}

fn state(w: &Value) -> String {
    if w["enabled"] == true {
        "enabled".into()
    } else {
        match w["disabled_reason"].as_str() {
            Some(reason) => format!("disabled ({reason})"),
            None => "disabled".into(),
        }
    }
}

/// Which secret signs which header, and until when (the answer's `signing`).
fn signing(w: &Value) -> [(&'static str, String); 2] {
    let s = &w["signing"];
    let names = |v: &Value| {
        v.as_array()
            .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(" and "))
            .unwrap_or_default()
    };
    let carries = match w["previous_secret_expires_at"].as_str() {
        None => format!("the {} secret", names(&s["webhook_signature"])),
        Some(until) => format!(
            "the {} secrets (previous until {until})",
            names(&s["webhook_signature"])
        ),
    };
    let x_codmir = match s["x_codmir_signature_moves_at"].as_str() {
        Some(at) => format!("the previous secret until {at}, then the current one"),
        None => "the current secret".into(),
    };
    [
        ("webhook-signature", carries),
        ("X-Codmir-Signature", x_codmir),
    ]
}

/// A setting that may be unset: its value, or what unset means.
fn limit(v: &Value, unset: &str) -> String {
    match v {
        Value::Null => unset.into(),
        v => cell(v),
    }
}

fn show_webhook(w: &Value) {
    let [webhook_signature, x_codmir_signature] = signing(w);
    fields(&[
        ("id", cell(&w["id"])),
        ("url", cell(&w["url"])),
        ("events", cell(&w["events"])),
        ("state", state(w)),
        ("description", cell(&w["description"])),
        (
            "projects",
            match cell(&w["project_ids"]) {
                all if all.is_empty() => "all".into(),
                some => some,
            },
        ),
        (
            "max in flight",
            limit(&w["max_in_flight"], "the server's bound"),
        ),
        ("rate limit", limit(&w["rate_limit_per_second"], "none")),
        (
            "headers",
            match w["headers"].as_object() {
                Some(h) if !h.is_empty() => h
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", cell(v)))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "none".into(),
            },
        ),
        ("expires", limit(&w["expires_at"], "never")),
        ("ordering", cell(&w["ordering"])),
        webhook_signature,
        x_codmir_signature,
        ("created", cell(&w["created_at"])),
        ("updated", cell(&w["updated_at"])),
    ]);
}

fn show_stats(s: &Value) {
    let d = &s["deliveries"];
    let rate = s["success_rate"]
        .as_f64()
        .map_or("-".into(), |r| format!("{:.1} %", r * 100.0));
    let l = &s["latency_ms"];
    let latency = if l.is_null() {
        "-".into()
    } else {
        format!(
            "p50 {} ms · p90 {} ms · p99 {} ms",
            cell(&l["p50"]),
            cell(&l["p90"]),
            cell(&l["p99"])
        )
    };
    fields(&[
        (
            "window",
            format!("{} (since {})", cell(&s["window"]), cell(&s["since"])),
        ),
        (
            "deliveries",
            format!(
                "{} · {} succeeded · {} failed · {} pending · {} cancelled",
                cell(&d["total"]),
                cell(&d["succeeded"]),
                cell(&d["failed"]),
                cell(&d["pending"]),
                cell(&d["cancelled"])
            ),
        ),
        (
            "test pings",
            format!(
                "{} · {} accepted · {} not (apart: not in the figures above or below)",
                cell(&s["pings"]["total"]),
                cell(&s["pings"]["succeeded"]),
                cell(&s["pings"]["failed"]),
            ),
        ),
        ("success rate", rate),
        ("latency", latency),
        ("succeeded", sparkline(s, "succeeded")),
        ("failed", sparkline(s, "failed")),
    ]);
}

/// One character per bucket of the series, ▁ to █ by its share of the busiest bucket.
fn sparkline(s: &Value, outcome: &str) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let counts: Vec<u64> = s["series"]
        .as_array()
        .map(|b| b.iter().map(|b| b[outcome].as_u64().unwrap_or(0)).collect())
        .unwrap_or_default();
    // At most 72 characters: buckets are summed in groups to fit a terminal.
    let group = counts.len().div_ceil(72).max(1);
    let sums: Vec<u64> = counts.chunks(group).map(|c| c.iter().sum()).collect();
    let max = sums.iter().copied().max().unwrap_or(0);
    sums.iter()
        .map(|&n| match n {
            0 => ' ',
            n => BARS[((n * 7).div_ceil(max.max(1)) as usize).min(7)],
        })
        .collect::<String>()
        .trim_end()
        .to_owned()
        + if max == 0 { "(none)" } else { "" }
}
