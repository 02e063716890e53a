//! `codmir trigger <event-type>`: causes a real event of that type through the API — the
//! project, ticket, member, comment, change or deletion it takes — and prints its id, so a
//! receiver can be exercised on demand.

use serde_json::{Value, json};

use super::{Api, Failure, Outcome, Remote, cell, fields};

/// The project trigger uses when none is given: found by name, made once.
const PROJECT: &str = "codmir trigger";

#[derive(clap::Args)]
pub(crate) struct TriggerArgs {
    /// The event type to cause: ticket.created, ticket.updated, ticket.deleted,
    /// ticket.status_changed, ticket.assigned, comment.created, project.created or member.added.
    event_type: String,
    /// The project to act in (a ticket is made there); by default a project named
    /// "codmir trigger", made the first time.
    #[arg(long)]
    project: Option<String>,
}

pub(crate) async fn trigger(remote: &Remote, args: TriggerArgs) -> Outcome {
    let api = Api::new(remote)?;
    let t = args.event_type.as_str();
    // Every type but codmir's own about webhooks: the contract's eight.
    let known: Vec<&str> = codmir_core::event::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .filter(|name| !name.starts_with("webhook."))
        .collect();
    match t {
        _ if known.contains(&t) => {}
        "webhook.ping" => {
            return Err(Failure::usage(
                "a ping goes to one webhook: codmir webhooks ping <webhook id>".into(),
            ));
        }
        "webhook.disabled" => {
            return Err(Failure::usage(
                "webhook.disabled is sent when a webhook keeps failing; it cannot be caused on \
                 demand"
                    .into(),
            ));
        }
        _ => {
            return Err(Failure::usage(format!(
                "`{t}` is not an event type trigger can cause; one of: {}",
                known.join(", ")
            )));
        }
    }
    let (subject, key) = if t == "project.created" {
        let name = format!("{PROJECT} {}", now_label());
        let project = api.post("/v1/projects", json!({"name": name})).await?;
        (project, "project")
    } else {
        let project = match args.project {
            Some(id) => id,
            None => own_project(&api).await?,
        };
        cause(&api, t, &project).await?
    };
    let id = subject["id"].as_str().unwrap_or_default();
    let event = find_event(&api, t, key, id).await?;
    let out = json!({"event_id": event["id"], "type": t, key: id});
    api.show(&out, |_| {
        fields(&[
            ("event", cell(&event["id"])),
            ("type", t.to_owned()),
            (key, id.to_owned()),
        ])
    });
    Ok(())
}

/// What to do in `project` to cause `t`: the resource the event is about, and the key of
/// its part of the event's `data`.
async fn cause(api: &Api, t: &str, project: &str) -> Result<(Value, &'static str), Failure> {
    if t == "member.added" {
        let mut suffix = [0u8; 4];
        codmir_core::id::random_bytes(&mut suffix);
        let tag = u32::from_le_bytes(suffix);
        let member =
            json!({"name": "Triggered Member", "email": format!("trigger+{tag:08x}@example.com")});
        let member = api
            .post(&format!("/v1/projects/{project}/members"), member)
            .await?;
        return Ok((member, "member"));
    }
    let title = format!("Triggered: {t}");
    let ticket = api
        .post(
            &format!("/v1/projects/{project}/tickets"),
            json!({"title": title}),
        )
        .await?;
    let ticket_id = ticket["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/tickets/{ticket_id}");
    match t {
        "ticket.updated" => {
            api.patch(&path, json!({"priority": "high"})).await?;
        }
        "ticket.status_changed" => {
            api.patch(&path, json!({"status": "in_progress"})).await?;
        }
        "ticket.assigned" => {
            let me = api.get("/v1/me", &[]).await?;
            api.patch(&path, json!({"assignee_id": me["user"]["id"]}))
                .await?;
        }
        "ticket.deleted" => {
            api.delete(&path).await?;
        }
        "comment.created" => {
            let body = json!({"body": "A comment made by codmir trigger."});
            let comment = api.post(&format!("{path}/comments"), body).await?;
            return Ok((comment, "comment"));
        }
        _ => {}
    }
    Ok((ticket, "ticket"))
}

/// The project named [`PROJECT`], made when there is none.
async fn own_project(api: &Api) -> Result<String, Failure> {
    let mut cursor: Option<String> = None;
    loop {
        let page = api
            .get(
                "/v1/projects",
                &[("limit", Some("100".into())), ("cursor", cursor.clone())],
            )
            .await?;
        let found = page["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == PROJECT);
        if let Some(p) = found {
            return Ok(cell(&p["id"]));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let project = api.post("/v1/projects", json!({"name": PROJECT})).await?;
    Ok(cell(&project["id"]))
}

/// The newest event of type `t` whose `data.<key>.id` is `id`: the one just caused.
async fn find_event(api: &Api, t: &str, key: &str, id: &str) -> Result<Value, Failure> {
    let page = api
        .get(
            "/v1/events",
            &[("type", Some(t.to_owned())), ("limit", Some("100".into()))],
        )
        .await?;
    page["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["data"][key]["id"] == id)
        .cloned()
        .ok_or_else(|| {
            Failure::api(format!(
                "the {t} event of {key} {id} is not in the event log"
            ))
        })
}

fn now_label() -> String {
    codmir_core::time::Timestamp::now().to_rfc3339_millis()
}
