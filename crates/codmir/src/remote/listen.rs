//! `codmir listen --forward-to URL`: local development without a tunnel. Registers a
//! temporary webhook pointing at a listener of its own, prints each event as it arrives with
//! its verification, forwards it unchanged (same bytes, same headers) to the app, prints the
//! app's answer, hands that answer back to codmir (so retries behave as they will in
//! production), and removes the webhook when it stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use codmir_webhook::{Data, Event, Verifier};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Api, Failure, Outcome, Remote};

#[derive(clap::Args)]
pub(crate) struct ListenArgs {
    /// Where to forward each event: your app's webhook route.
    #[arg(long)]
    forward_to: String,
    /// Event types or patterns to receive (comma-separated): `ticket.*`, `ticket.created`, `*`.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    events: Vec<String>,
    /// The address the listener binds; a free loopback port by default.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The URL codmir should deliver to, when it cannot reach the listener directly (a
    /// tunnel to it, a container's host name); by default the listener's own address.
    #[arg(long)]
    public_url: Option<String>,
    /// How long the temporary webhook outlives this command if it is killed without a
    /// chance to remove it (`kill -9`, a crash): the server removes it then. Renewed while
    /// the command runs.
    #[arg(long, default_value = "10m", value_parser = expire_after)]
    expire_after: Duration,
}

/// `10m`, `90s`: a duration as the flag takes it.
fn humantime(d: Duration) -> String {
    match d.as_secs() {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn expire_after(raw: &str) -> Result<Duration, String> {
    let d = codmir_core::retry::parse_duration(raw).map_err(|e| e.message)?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

/// The expiry `after` from now, as the API takes it.
fn expiry_in(after: Duration) -> String {
    let now = codmir_core::time::Timestamp::now();
    now.plus(after).to_rfc3339_millis()
}

/// How long the app may take to answer a forwarded event.
const APP_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that belong to one connection, not to the request: not forwarded.
const HOP_BY_HOP: [&str; 6] = [
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
];

struct Forwarder {
    to: String,
    http: reqwest::Client,
    verifier: Verifier,
    json: bool,
}

pub(crate) async fn listen(remote: &Remote, args: ListenArgs) -> Outcome {
    let api = Api::new(remote)?;
    let forward_to = reqwest::Url::parse(&args.forward_to)
        .map_err(|e| Failure::usage(format!("--forward-to `{}`: {e}", args.forward_to)))?
        .to_string();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::api(format!("the listener has no address: {e}")))?;
    let url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}/"));
    let secret = stable_secret(api.key(), &forward_to);
    let marker = marker(&forward_to);
    remove_leftovers(&api, &marker).await?;
    let body = json!({"url": url, "events": args.events, "secret": secret, "description": marker,
                      "expires_at": expiry_in(args.expire_after)});
    let webhook = api
        .post("/v1/webhooks", body)
        .await
        .map_err(|f| explain(f, &url))?;
    let webhook_id = webhook["id"].as_str().unwrap_or_default().to_owned();
    let forwarder = Arc::new(Forwarder {
        to: forward_to.clone(),
        http: reqwest::Client::builder()
            .timeout(APP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Failure::api(format!("cannot build the HTTP client: {e}")))?,
        verifier: Verifier::new(&secret)
            .map_err(|e| Failure::api(format!("the signing secret: {e}")))?,
        json: api.json,
    });
    if api.json {
        println!(
            "{}",
            json!({"ready": true, "webhook_id": webhook_id, "url": url,
                   "forward_to": forward_to, "signing_secret": secret})
        );
    } else {
        println!(
            "Forwarding codmir events ({}) to {forward_to}",
            args.events.join(", ")
        );
        println!(
            "Temporary webhook {webhook_id} → {url} (removed when you stop: Ctrl-C; if this \
             command is killed, the server removes it {} after its last renewal)",
            humantime(args.expire_after)
        );
        println!(
            "Signing secret: {secret}\n  the same every time for this forward target and API key: \
             keep it in your app's .env (CODMIR_SIGNING_SECRET)"
        );
        println!("Ready.");
    }
    let app = axum::Router::new().fallback(receive).with_state(forwarder);
    let served = axum::serve(listener, app).with_graceful_shutdown(stop_signal());
    // The webhook's expiry moves on while this runs: a third of the way to it, every time.
    let renew = async {
        let path = format!("/v1/webhooks/{webhook_id}");
        loop {
            tokio::time::sleep(args.expire_after / 3).await;
            let body = json!({"expires_at": expiry_in(args.expire_after)});
            if let Err(e) = api.patch(&path, body).await {
                eprintln!(
                    "could not renew webhook {webhook_id}'s expiry: {}",
                    e.message
                );
            }
        }
    };
    let outcome = tokio::select! {
        served = served => served.map_err(|e| Failure::api(format!("the listener failed: {e}"))),
        // Renewal never ends by itself.
        () = renew => Ok(()),
    };
    // Removed whatever ended the listener, so a stopped `listen` leaves nothing behind.
    let removed = api.delete(&format!("/v1/webhooks/{webhook_id}")).await;
    match (&removed, api.json) {
        (Ok(_), false) => println!("Removed temporary webhook {webhook_id}."),
        (Ok(_), true) => println!("{}", json!({"removed": webhook_id})),
        (Err(e), _) => eprintln!("could not remove webhook {webhook_id}: {}", e.message),
    }
    outcome.and(removed.map(|_| ()))
}

/// Ctrl-C, SIGTERM, or SIGHUP (the terminal closed).
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
            _ = hangup.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The secret for `forward_to`: an HMAC of the target under the API key, so it is the same at
/// every start (the app keeps it) and cannot be guessed without the key.
fn stable_secret(api_key: &str, forward_to: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(api_key.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"codmir listen\n");
    mac.update(forward_to.as_bytes());
    format!("whsec_{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The description that marks this command's webhook for `forward_to`.
fn marker(forward_to: &str) -> String {
    let mut target: String = forward_to.chars().take(400).collect();
    target.retain(|c| !c.is_control());
    format!("codmir listen → {target}")
}

/// Deletes webhooks an earlier `listen` to the same target left behind (killed before it
/// could remove its own).
async fn remove_leftovers(api: &Api, marker: &str) -> Result<(), Failure> {
    let mut cursor: Option<String> = None;
    let mut stale = Vec::new();
    loop {
        let page = api
            .get(
                "/v1/webhooks",
                &[("limit", Some("100".into())), ("cursor", cursor.clone())],
            )
            .await?;
        for w in page["data"].as_array().into_iter().flatten() {
            if w["description"] == marker
                && let Some(id) = w["id"].as_str()
            {
                stale.push(id.to_owned());
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    for id in stale {
        api.delete(&format!("/v1/webhooks/{id}")).await?;
        eprintln!("removed webhook {id}, left behind by an earlier `codmir listen`");
    }
    Ok(())
}

/// A refused registration, with what to do when the server guards against private targets.
fn explain(f: Failure, url: &str) -> Failure {
    if f.message.contains("not a public address") {
        Failure::api(format!(
            "{}\nthe server refuses to deliver to {url}: run it with --allow-private-targets \
             for local development, or give --public-url with an address it can reach",
            f.message
        ))
    } else {
        f
    }
}

async fn receive(State(f): State<Arc<Forwarder>>, headers: HeaderMap, body: Bytes) -> Response {
    let received = Instant::now();
    let verified = f.verifier.verify(&body, &headers);
    let (event_type, event_id, summary) = match &verified {
        Ok(event) => (
            event.event_type().to_owned(),
            event.id.clone(),
            summary(event),
        ),
        Err(_) => {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let text = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
            (text("type"), text("id"), String::new())
        }
    };
    let clock = codmir_core::time::Timestamp::now().to_rfc3339_millis();
    // Whoever found the listener's port may send it anything: only what codmir signed with
    // this webhook's secret reaches the app.
    if let Err(e) = &verified {
        if f.json {
            let line = json!({
                "received_at": clock, "type": event_type, "id": event_id,
                "verified": false, "verify_error": e.to_string(), "refused": true,
            });
            println!("{line}");
        } else {
            println!(
                "{} {event_type:<22} {event_id}  REFUSED, not forwarded: the signature does not verify ({e})",
                &clock[11..23]
            );
        }
        let text = format!("codmir listen: refused, the signature does not verify: {e}");
        return (StatusCode::UNAUTHORIZED, text).into_response();
    }
    let check = "signature ok";
    let mut request = f.http.post(&f.to).body(body);
    for (name, value) in &headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(r) => Ok((
            r.status().as_u16(),
            r.headers().clone(),
            r.bytes().await.unwrap_or_default(),
        )),
        Err(e) => Err(e),
    };
    let took = received.elapsed().as_millis();
    // One line per event, once the app has answered, so that the lines of concurrent
    // deliveries do not interleave.
    if f.json {
        let line = json!({
            "received_at": clock, "type": event_type, "id": event_id, "summary": summary,
            "verified": verified.is_ok(),
            "verify_error": verified.as_ref().err().map(ToString::to_string),
            "app_status": answer.as_ref().ok().map(|a| a.0),
            "app_error": answer.as_ref().err().map(ToString::to_string),
            "duration_ms": took,
        });
        println!("{line}");
    } else {
        let outcome = match &answer {
            Ok((status, _, _)) => format!("→ {status} from the app in {took} ms"),
            Err(e) => format!("→ the app did not answer: {e} ({took} ms)"),
        };
        println!(
            "{} {event_type:<22} {event_id}  {summary}  [{check}] {outcome}",
            &clock[11..23]
        );
    }
    match answer {
        Ok((status, app_headers, app_body)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = Response::new(Body::from(app_body));
            *response.status_mut() = status;
            if let Some(ct) = app_headers.get(HeaderName::from_static("content-type")) {
                response.headers_mut().insert("content-type", ct.clone());
            }
            response
        }
        Err(e) => {
            // codmir records the failure and retries: start the app and the event comes.
            let text = format!("codmir listen: the app at {} did not answer: {e}", f.to);
            (StatusCode::BAD_GATEWAY, text).into_response()
        }
    }
}

/// One line about the event, for people.
fn summary(e: &Event) -> String {
    match &e.data {
        Data::TicketCreated(d) | Data::TicketDeleted(d) => {
            format!("{} \"{}\"", d.ticket.id, d.ticket.title)
        }
        Data::TicketUpdated(d) => {
            let fields: Vec<&str> = d
                .changes
                .iter()
                .flatten()
                .map(|(k, _)| k.as_str())
                .collect();
            format!("{} changed: {}", d.ticket.id, fields.join(", "))
        }
        Data::TicketStatusChanged(d) => match d.changes.as_ref().and_then(|c| c.get("status")) {
            Some(c) => format!("{} {} → {}", d.ticket.id, c.from, c.to),
            None => d.ticket.id.clone(),
        },
        Data::TicketAssigned(d) => match &d.assignee {
            Some(a) => format!("{} to {}", d.ticket.id, a.name),
            None => d.ticket.id.clone(),
        },
        Data::CommentCreated(d) => {
            let body: String = d.comment.body.chars().take(60).collect();
            format!("on {}: {body}", d.ticket.id)
        }
        Data::ProjectCreated(d) => format!("{} \"{}\"", d.project.id, d.project.name),
        Data::MemberAdded(d) => format!(
            "{} to \"{}\" as {}",
            d.member.name, d.project.name, d.member.role
        ),
        Data::WebhookPing(d) => format!("ping of {}", d.webhook.id),
        Data::WebhookDisabled(d) => format!("{} disabled", d.webhook.id),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_secret_is_stable_per_target_and_key() {
        let a = super::stable_secret("cmk_a", "http://localhost:3000/h");
        assert_eq!(a, super::stable_secret("cmk_a", "http://localhost:3000/h"));
        assert_ne!(a, super::stable_secret("cmk_a", "http://localhost:3001/h"));
        assert_ne!(a, super::stable_secret("cmk_b", "http://localhost:3000/h"));
        assert!(codmir_core::webhook::WebhookSecret::parse(&a).is_ok());
        assert_eq!(
            codmir_core::sign::signing_secret(&a),
            a,
            "one string for both schemes"
        );
    }
}
