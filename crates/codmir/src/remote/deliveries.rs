//! `codmir deliveries …` and `codmir replay`: the delivery log, and sending again.

use clap::Subcommand;
use serde_json::{Value, json};

use super::{Api, Outcome, Paging, Remote, cell, fields, list_rows, table};

#[derive(Subcommand)]
pub(crate) enum DeliveriesCommand {
    /// List deliveries across the workspace's webhooks, newest first, with why each failed.
    #[command(
        after_help = "Examples:\n  codmir deliveries list --status retrying    # failing now, with the next attempt\n  codmir deliveries list --status failed --since 2026-12-01T00:00:00Z"
    )]
    List {
        /// Only deliveries to this webhook.
        #[arg(long)]
        webhook: Option<String>,
        /// `pending` (not settled yet), `retrying` (attempted, failing, another attempt
        /// planned), `succeeded`, `failed` (no retries left) or `cancelled`.
        #[arg(long)]
        status: Option<String>,
        /// An event type or pattern (`ticket.*`).
        #[arg(long)]
        event_type: Option<String>,
        /// Created at or after this time: RFC 3339, a date (`2026-12-07`) or an age (`2h`).
        #[arg(long, value_parser = super::time_arg)]
        since: Option<String>,
        /// Created before this time: RFC 3339, a date or an age.
        #[arg(long, value_parser = super::time_arg)]
        until: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one delivery with every attempt: time, duration, status or error, response.
    #[command(after_help = "Example:\n  codmir deliveries show dlv_01jd…")]
    Show { id: String },
    /// Send a delivery again now (a new delivery of the same event, linked to this one).
    #[command(after_help = "Example:\n  codmir deliveries redeliver dlv_01jd…")]
    Redeliver { id: String },
    /// End a pending delivery as cancelled, so that the next one of its ticket goes (a webhook
    /// ordered per resource, stuck behind a delivery the endpoint will not take).
    #[command(after_help = "Example:\n  codmir deliveries skip dlv_01jd…")]
    Skip { id: String },
}

/// `codmir replay`: send a webhook the events of a time window again.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  codmir replay --webhook wh_01jd… --since 2h\n  codmir replay --webhook wh_01jd… --since 2026-12-01T09:00:00Z --status failed"
)]
pub(crate) struct ReplayArgs {
    /// The webhook to send to.
    #[arg(long)]
    webhook: String,
    /// Events created at or after this time: RFC 3339, a date (`2026-12-07`) or an age
    /// (`2h`: two hours ago).
    #[arg(long, value_parser = super::time_arg)]
    since: String,
    /// Events created before this time (default: now), in the same forms.
    #[arg(long, value_parser = super::time_arg)]
    until: Option<String>,
    /// Which events: `failed` (default: their delivery failed and none succeeded),
    /// `cancelled`, or `any` (every event the webhook got).
    #[arg(long)]
    status: Option<String>,
    /// Also events the webhook never got (created while it was disabled).
    #[arg(long)]
    include_missed: bool,
}

fn delivery_row(d: &Value) -> Vec<String> {
    let last = match (d["last_status_code"].as_u64(), d["last_error"].as_str()) {
        (Some(code), _) => code.to_string(),
        (None, Some(e)) => e.to_owned(),
        (None, None) => "-".into(),
    };
    vec![
        cell(&d["id"]),
        cell(&d["status"]),
        cell(&d["attempt_count"]),
        last,
        cell(&d["next_attempt_at"]),
        cell(&d["event_type"]),
        cell(&d["webhook_id"]),
        cell(&d["created_at"]),
    ]
}

const DELIVERY_HEADERS: [&str; 8] = [
    "ID", "STATUS", "ATTEMPTS", "LAST", "NEXT", "EVENT", "WEBHOOK", "CREATED",
];

pub(crate) async fn run(remote: &Remote, command: DeliveriesCommand) -> Outcome {
    let api = Api::new(remote)?;
    match command {
        DeliveriesCommand::List {
            webhook,
            status,
            event_type,
            since,
            until,
            paging,
        } => {
            let mut query = vec![
                ("webhook_id", webhook),
                ("status", status),
                ("event_type", event_type),
                ("since", since),
                ("until", until),
            ];
            query.extend(paging.query());
            let list = api.get("/v1/deliveries", &query).await?;
            api.show(&list, |list| {
                table(&DELIVERY_HEADERS, list_rows(list, delivery_row))
            });
        }
        DeliveriesCommand::Show { id } => {
            let d = api.get(&format!("/v1/deliveries/{id}"), &[]).await?;
            api.show(&d, |d| {
                fields(&[
                    ("id", cell(&d["id"])),
                    ("status", cell(&d["status"])),
                    ("webhook", cell(&d["webhook_id"])),
                    (
                        "event",
                        format!("{} ({})", cell(&d["event_id"]), cell(&d["event_type"])),
                    ),
                    ("next attempt", cell(&d["next_attempt_at"])),
                    ("waiting behind", waiting_behind(d)),
                    ("redelivery of", cell(&d["redelivery_of"])),
                    ("cancelled because", cell(&d["cancel_reason"])),
                    ("created", cell(&d["created_at"])),
                ]);
                println!();
                let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
                table(
                    &["ATTEMPT", "AT", "DURATION", "STATUS", "ERROR", "RESPONSE"],
                    attempts
                        .iter()
                        .map(|a| {
                            vec![
                                cell(&a["attempt"]),
                                cell(&a["attempted_at"]),
                                format!("{} ms", cell(&a["duration_ms"])),
                                cell(&a["status_code"]),
                                cell(&a["error"]),
                                one_line(&cell(&a["response_body"]), 60),
                            ]
                        })
                        .collect(),
                );
            });
        }
        DeliveriesCommand::Skip { id } => {
            let d = api
                .post(&format!("/v1/deliveries/{id}/skip"), json!({}))
                .await?;
            api.show(&d, |d| {
                println!(
                    "Skipped delivery {id} ({}); the next of its resource goes now.",
                    cell(&d["cancel_reason"])
                )
            });
        }
        DeliveriesCommand::Redeliver { id } => {
            let d = api
                .post(&format!("/v1/deliveries/{id}/redeliver"), json!({}))
                .await?;
            api.show(&d, |d| {
                println!(
                    "Queued delivery {} (a redelivery of {id}); see it with: codmir deliveries show {}",
                    cell(&d["id"]),
                    cell(&d["id"])
                )
            });
        }
    }
    Ok(())
}

/// "dlv_… for tkt_…, attempt 3, next at …" for a delivery waiting in its chain; empty else.
fn waiting_behind(d: &Value) -> String {
    let b = &d["waiting_behind"];
    if b.is_null() {
        return String::new();
    }
    format!(
        "{} for {} (attempts {}, next at {}); skip it with: codmir deliveries skip {}",
        cell(&b["id"]),
        cell(&d["chain"]["resource_id"]),
        cell(&b["attempt_count"]),
        cell(&b["next_attempt_at"]),
        cell(&b["id"])
    )
}

pub(crate) async fn replay(remote: &Remote, args: ReplayArgs) -> Outcome {
    let api = Api::new(remote)?;
    let mut body = json!({"since": args.since});
    if let Some(until) = args.until {
        body["until"] = until.into();
    }
    if let Some(status) = args.status {
        body["status"] = status.into();
    }
    if args.include_missed {
        body["include_missed"] = true.into();
    }
    let r = api
        .post(&format!("/v1/webhooks/{}/replay", args.webhook), body)
        .await?;
    api.show(&r, |r| {
        println!(
            "Queued {} deliveries ({} skipped: already pending).",
            cell(&r["queued"]),
            cell(&r["skipped_pending"])
        );
        if let Some(next) = r["next_since"].as_str() {
            println!("The window holds more; continue with --since {next}");
        }
    });
    Ok(())
}

/// The first `max` characters of `text` on one line.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        flat.chars().take(max).collect::<String>() + "…"
    } else {
        flat
    }
}
