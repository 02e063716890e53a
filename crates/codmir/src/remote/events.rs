//! `codmir events …` and `codmir event-types`: the event log and the catalog.

use clap::Subcommand;

use super::{Api, Outcome, Paging, Remote, cell, list_rows, print_json, table};

#[derive(Subcommand)]
pub(crate) enum EventsCommand {
    /// List events, newest first (`--order asc` reads the log forward).
    #[command(after_help = "Example:\n  codmir events list --type 'ticket.*' --limit 10")]
    List {
        /// An event type or pattern: `ticket.created`, `ticket.*`.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only events of this project.
        #[arg(long)]
        project: Option<String>,
        /// Created at or after this time: RFC 3339, a date (`2026-12-07`) or an age (`2h`).
        #[arg(long, value_parser = super::time_arg)]
        since: Option<String>,
        /// Created before this time: RFC 3339, a date or an age.
        #[arg(long, value_parser = super::time_arg)]
        until: Option<String>,
        /// `desc` (default) or `asc`.
        #[arg(long)]
        order: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// Show one event: the exact JSON its deliveries carry.
    #[command(after_help = "Example:\n  codmir events show evt_01jd…")]
    Show { id: String },
}

pub(crate) async fn run(remote: &Remote, command: EventsCommand) -> Outcome {
    let api = Api::new(remote)?;
    match command {
        EventsCommand::List {
            event_type,
            project,
            since,
            until,
            order,
            paging,
        } => {
            let mut query = vec![
                ("type", event_type),
                ("project_id", project),
                ("since", since),
                ("until", until),
                ("order", order),
            ];
            query.extend(paging.query());
            let list = api.get("/v1/events", &query).await?;
            api.show(&list, |list| {
                table(
                    &["ID", "TYPE", "TIMESTAMP"],
                    list_rows(list, |e| {
                        vec![cell(&e["id"]), cell(&e["type"]), cell(&e["timestamp"])]
                    }),
                )
            });
        }
        // An event is JSON either way: what a receiver gets.
        EventsCommand::Show { id } => print_json(&api.get(&format!("/v1/events/{id}"), &[]).await?),
    }
    Ok(())
}

pub(crate) async fn event_types(remote: &Remote) -> Outcome {
    let api = Api::new(remote)?;
    let list = api.get("/v1/event-types", &[]).await?;
    api.show(&list, |list| {
        table(
            &["TYPE", "DESCRIPTION"],
            list_rows(list, |t| vec![cell(&t["name"]), cell(&t["description"])]),
        )
    });
    Ok(())
}
