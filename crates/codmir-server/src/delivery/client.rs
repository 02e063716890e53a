//! The outbound HTTP client: one signed POST per attempt, bounded in time and in what it reads.
//!
//! TLS certificates are always verified, environment proxies are ignored, redirects are not
//! followed, responses are never decompressed, and — unless private targets are allowed —
//! names that resolve to loopback, private or link-local addresses are refused (SSRF guard).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use codmir_core::retry::parse_retry_after;
use codmir_core::sign::{codmir_signature, standard_key, standard_signature};
use codmir_core::target::TargetPolicy;
use codmir_core::time::Timestamp;
use codmir_core::webhook::{Delivery, Webhook};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request};

use super::connect::{Connector, Target};
use crate::store::Leased;
use crate::tasks::Tasks;

/// Most of a response body read; the rest is discarded unread.
pub const MAX_RESPONSE_READ: usize = 64 * 1024;
/// Most of a response body kept in the delivery log.
pub const MAX_RESPONSE_LOGGED: usize = 4 * 1024;

pub const USER_AGENT_VALUE: &str = concat!("codmir-webhooks/", env!("CARGO_PKG_VERSION"));

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    /// A `Retry-After` on a 429 or 503.
    pub retry_after: Option<Duration>,
    /// Cut off by shutdown before the endpoint answered: the endpoint may have seen it, so it
    /// is recorded as an attempt, and the delivery is due again at once.
    pub interrupted: bool,
    /// What of the request cannot be rebuilt from the delivery, as sent (`sent_headers`).
    pub request_headers: Option<String>,
    /// The response's headers, bounded (`received_headers`).
    pub response_headers: Option<String>,
}

impl AttemptResult {
    pub fn succeeded(&self) -> bool {
        self.status_code.is_some_and(|s| (200..300).contains(&s))
    }

    fn failed(error: String) -> Self {
        Self {
            status_code: None,
            error: Some(error),
            response_body: None,
            retry_after: None,
            interrupted: false,
            request_headers: None,
            response_headers: None,
        }
    }

    pub(super) fn interrupted() -> Self {
        Self {
            interrupted: true,
            ..Self::failed("interrupted: the server shut down during the attempt".into())
        }
    }
}

#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

struct Inner {
    connector: Connector,
    request_timeout: Duration,
    /// Webhook URLs already taken apart (parsing, with IDNA, cost ~3 % of the server's CPU
    /// when done per attempt). Cleared when it grows past [`PARSED_URLS`].
    parsed: Mutex<HashMap<String, Arc<Target>>>,
}

/// Most parsed URLs kept by a [`Sender`].
const PARSED_URLS: usize = 4096;

impl Sender {
    pub fn new(
        connect_timeout: Duration,
        request_timeout: Duration,
        policy: TargetPolicy,
        tasks: Tasks,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            inner: Arc::new(Inner {
                connector: Connector::new(Arc::new(policy), connect_timeout, tasks)?,
                request_timeout,
                parsed: Mutex::default(),
            }),
        })
    }

    fn target(&self, raw: &str) -> Result<Arc<Target>, String> {
        let mut parsed = self.inner.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = parsed.get(raw) {
            return Ok(t.clone());
        }
        let target = Arc::new(Target::parse(raw)?);
        if parsed.len() >= PARSED_URLS {
            parsed.clear();
        }
        parsed.insert(raw.to_owned(), target.clone());
        Ok(target)
    }

    /// POSTs the event to the webhook as attempt number `attempt`, signed afresh at `now`:
    /// connecting, sending and reading the answer all within the request timeout.
    pub async fn send(&self, c: &Leased, attempt: u32, now: Timestamp) -> AttemptResult {
        let target = match self.target(c.webhook.url.as_str()) {
            Ok(t) => t,
            Err(e) => return AttemptResult::failed(e),
        };
        // The policy may have changed since the webhook was registered; IP literals bypass the
        // resolver, so they are checked here.
        let policy = self.inner.connector.policy();
        if policy.https_only && !target.is_https() {
            return AttemptResult::failed(
                "http:// refused: the server runs with --https-only".into(),
            );
        }
        if target.literal().is_some_and(|ip| !policy.allows(ip)) {
            return AttemptResult::failed(
                "address refused: not public (see --allow-cidr, --allow-private-targets)".into(),
            );
        }
        let request = request(&target, c, attempt, now);
        let sent = sent_headers(&request, &c.webhook);
        let bound = self.inner.request_timeout;
        let mut result = match tokio::time::timeout(bound, self.exchange(&target, request)).await {
            Ok(result) => result,
            Err(_) => AttemptResult::failed(format!("timed out: no full answer within {bound:?}")),
        };
        result.request_headers = Some(sent);
        result
    }

    /// Sends on a kept connection, or a new one; reads at most [`MAX_RESPONSE_READ`] of the
    /// answer, and keeps the connection only when the answer was read to its end.
    async fn exchange(&self, target: &Target, mut request: Request<Full<Bytes>>) -> AttemptResult {
        let connector = &self.inner.connector;
        let (conn, response) = loop {
            let (mut conn, kept) = match connector.checkout(&target.origin).await {
                Ok(found) => found,
                Err(e) => return AttemptResult::failed(e.0),
            };
            // A kept connection the endpoint closed meanwhile either says so here or hands
            // the request back unsent: the request then goes on the next one.
            if let Err(e) = conn.ready().await {
                if kept {
                    continue;
                }
                return AttemptResult::failed(format!("connection failed: {}", cause(&e)));
            }
            match conn.try_send_request(request).await {
                Ok(response) => break (conn, response),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if kept => request = unsent,
                    _ => {
                        return AttemptResult::failed(format!(
                            "request failed: {}",
                            cause(e.error())
                        ));
                    }
                },
            }
        };
        let status = response.status().as_u16();
        let response_headers = received_headers(response.headers());
        let retry_after = if status == 429 || status == 503 {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
        } else {
            None
        };
        let mut body = response.into_body();
        let mut kept = Vec::new();
        let mut read = 0usize;
        let mut error = None;
        let mut ended = false;
        while read < MAX_RESPONSE_READ {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(chunk) = frame.into_data() {
                        read += chunk.len();
                        let room = MAX_RESPONSE_LOGGED.saturating_sub(kept.len());
                        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                }
                None => {
                    ended = true;
                    break;
                }
                Some(Err(e)) => {
                    error = Some(format!("reading the response body: {}", cause(&e)));
                    break;
                }
            }
        }
        // An answer left unread closes its connection when the body is dropped.
        if ended || (error.is_none() && body.is_end_stream()) {
            connector.keep(&target.origin, conn);
        }
        let response_body = (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned());
        AttemptResult {
            status_code: Some(status),
            error,
            response_body,
            retry_after,
            interrupted: false,
            request_headers: None,
            response_headers: Some(response_headers),
        }
    }
}

/// The headers of `request` that cannot be rebuilt from its delivery, as a JSON object: the
/// signatures and their timestamp (made with the secrets of that moment, which a rotation may
/// since have dropped), and the webhook's own headers, masked as the webhook shows them.
/// Written by hand: through `serde_json`'s map it cost ~13k instructions per attempt.
fn sent_headers(request: &Request<Full<Bytes>>, webhook: &Webhook) -> String {
    let headers = request.headers();
    let mut out = JsonObject::with_capacity(256);
    for (name, value) in webhook.headers.masked() {
        out.field(&name.to_ascii_lowercase(), value.as_bytes());
    }
    for name in [
        &names::X_CODMIR_SIGNATURE,
        &names::WEBHOOK_TIMESTAMP,
        &names::WEBHOOK_SIGNATURE,
    ] {
        if let Some(v) = headers.get(name) {
            out.field(name.as_str(), v.as_bytes());
        }
    }
    out.close()
}

/// Most response headers kept in the delivery log, and most bytes of each value.
const RESPONSE_HEADERS_KEPT: usize = 32;
const RESPONSE_HEADER_BYTES: usize = 256;

/// A response's headers as a JSON object, bounded: the first [`RESPONSE_HEADERS_KEPT`]
/// names, each value cut at [`RESPONSE_HEADER_BYTES`], a repeated name's values joined by
/// `, ` (a `HeaderMap` yields them one after the other).
fn received_headers(headers: &hyper::HeaderMap) -> String {
    let mut out = JsonObject::with_capacity(64 + 48 * headers.len().min(RESPONSE_HEADERS_KEPT));
    let mut previous: Option<&HeaderName> = None;
    let mut names = 0;
    for (name, value) in headers {
        let cut = &value.as_bytes()[..value.len().min(RESPONSE_HEADER_BYTES)];
        if previous == Some(name) {
            out.append(b", ");
            out.append(cut);
            continue;
        }
        if names == RESPONSE_HEADERS_KEPT {
            break;
        }
        names += 1;
        previous = Some(name);
        out.field(name.as_str(), cut);
    }
    out.close()
}

/// A JSON object of string fields, written into one `String`; a field's value stays open
/// until the next field, so that it can be appended to.
struct JsonObject {
    text: String,
    open: bool,
}

impl JsonObject {
    fn with_capacity(n: usize) -> Self {
        let mut text = String::with_capacity(n);
        text.push('{');
        Self { text, open: false }
    }

    fn field(&mut self, name: &str, value: &[u8]) {
        if self.open {
            self.text.push_str("\",");
        }
        self.text.push('"');
        push_escaped(&mut self.text, name.as_bytes());
        self.text.push_str("\":\"");
        push_escaped(&mut self.text, value);
        self.open = true;
    }

    fn append(&mut self, value: &[u8]) {
        push_escaped(&mut self.text, value);
    }

    fn close(mut self) -> String {
        if self.open {
            self.text.push('"');
        }
        self.text.push('}');
        self.text
    }
}

/// `bytes` (lossy UTF-8) as the inside of a JSON string.
fn push_escaped(out: &mut String, bytes: &[u8]) {
    // Header values are nearly always printable ASCII with nothing to escape: copied whole.
    let plain = |b: &u8| (0x20..0x7f).contains(b) && *b != b'"' && *b != b'\\';
    if bytes.iter().all(plain)
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        out.push_str(text);
        return;
    }
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
}

/// The request of one attempt: the webhook's own headers, then ours.
fn request(target: &Target, c: &Leased, attempt: u32, now: Timestamp) -> Request<Full<Bytes>> {
    let body = Bytes::from_owner(Payload(c.payload.clone()));
    let own = c.webhook.headers.pairs();
    let mut request = Request::new(Full::new(body.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = target.path.clone();
    let headers = request.headers_mut();
    headers.reserve(11 + own.len());
    headers.insert(HOST, target.authority.clone());
    // None of the webhook's own headers can be one of ours (they are refused when
    // registered), and ours are inserted after them regardless.
    for (name, value) in own {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.insert(n, v);
        }
    }
    signed_headers(
        &c.webhook,
        &c.delivery,
        attempt,
        now,
        &body,
        |name, value| {
            if let Ok(v) = HeaderValue::try_from(value) {
                headers.insert(name.clone(), v);
            }
        },
    );
    request
}

/// The stored event bytes, shared with the request body instead of copied per attempt.
struct Payload(std::sync::Arc<str>);

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Our header names, made at compile time: a name given as a string is parsed and checked
/// again at every insert, eight times per attempt.
mod names {
    use hyper::header::HeaderName;

    pub(super) const X_CODMIR_SIGNATURE: HeaderName = HeaderName::from_static("x-codmir-signature");
    pub(super) const X_CODMIR_EVENT: HeaderName = HeaderName::from_static("x-codmir-event");
    pub(super) const X_CODMIR_DELIVERY: HeaderName = HeaderName::from_static("x-codmir-delivery");
    pub(super) const X_CODMIR_WEBHOOK_ID: HeaderName =
        HeaderName::from_static("x-codmir-webhook-id");
    pub(super) const X_CODMIR_ATTEMPT: HeaderName = HeaderName::from_static("x-codmir-attempt");
    pub(super) const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
    pub(super) const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    pub(super) const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
}

/// Our headers of attempt number `attempt` of `delivery` made at `now`, in the order they
/// are set: both signatures, ids, attempt number, `Content-Type` and `User-Agent`. Besides
/// them a request carries the webhook's own headers, set first.
pub fn signed_headers(
    webhook: &Webhook,
    delivery: &Delivery,
    attempt: u32,
    now: Timestamp,
    body: &[u8],
    put: impl FnMut(&HeaderName, String),
) {
    let secret = webhook.secret.as_str();
    let now_secs = now.as_secs();
    // During a rotation's grace period the contract's header, which holds one value, stays
    // on the previous secret; `webhook-signature` carries both (new first).
    let previous = webhook.previous_secret_at(now).map(|s| s.as_str());
    let codmir = codmir_signature(previous.unwrap_or(secret), body);
    let mut standard =
        standard_signature(&standard_key(secret), &delivery.event_id, now_secs, body);
    if let Some(old) = previous {
        standard.push(' ');
        standard.push_str(&standard_signature(
            &standard_key(old),
            &delivery.event_id,
            now_secs,
            body,
        ));
    }
    ordered_headers(
        delivery,
        attempt,
        [codmir, now_secs.to_string(), standard],
        put,
    );
}

/// Our headers in the order sent, given the values of `X-Codmir-Signature`,
/// `webhook-timestamp` and `webhook-signature`: what a request gets ([`signed_headers`]) and
/// what the delivery log shows of one, from the three values the attempt kept.
pub fn ordered_headers<V: From<String>>(
    delivery: &Delivery,
    attempt: u32,
    [codmir, timestamp, standard]: [V; 3],
    mut put: impl FnMut(&HeaderName, V),
) {
    put(&names::X_CODMIR_SIGNATURE, codmir);
    put(
        &names::X_CODMIR_EVENT,
        delivery.event_type.as_str().to_owned().into(),
    );
    put(&names::X_CODMIR_DELIVERY, delivery.id.clone().into());
    put(
        &names::X_CODMIR_WEBHOOK_ID,
        delivery.webhook_id.clone().into(),
    );
    put(&names::X_CODMIR_ATTEMPT, attempt.to_string().into());
    put(&names::WEBHOOK_ID, delivery.event_id.clone().into());
    put(&names::WEBHOOK_TIMESTAMP, timestamp);
    put(&names::WEBHOOK_SIGNATURE, standard);
    put(&CONTENT_TYPE, "application/json".to_owned().into());
    put(&USER_AGENT, USER_AGENT_VALUE.to_owned().into());
}

/// A one-line cause for the delivery log: the error and, when it has one, its root cause.
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut root = e;
    while let Some(s) = root.source() {
        root = s;
    }
    if std::ptr::addr_eq(root, e) {
        e.to_string()
    } else {
        format!("{e}: {root}")
    }
}

#[cfg(test)]
mod tests {
    use codmir_core::event::EventType;
    use codmir_core::sign::signing_secret;
    use codmir_core::target::TargetPolicy;
    use codmir_core::time::Timestamp;
    use codmir_core::webhook::{Delivery, EndpointUrl, EventFilter, Webhook, WebhookSecret};
    use hyper::header::{HeaderName, HeaderValue};
    use serde_json::Value;

    /// The signer against the vectors the receiving crate verifies with (made independently,
    /// with Python's hmac module): the two ends cannot drift apart.
    #[test]
    fn signed_headers_match_the_shared_vectors() {
        let file: Value =
            serde_json::from_str(include_str!("../../../codmir-webhook/tests/vectors.json"))
                .unwrap();
        for v in file["vectors"].as_array().unwrap() {
            let text = |k: &str| v[k].as_str().unwrap().to_owned();
            let secret = WebhookSecret::parse(&text("secret")).unwrap();
            let at = Timestamp::from_millis(v["timestamp"].as_i64().unwrap() * 1000);
            let url = EndpointUrl::parse("https://x.example.com/", &TargetPolicy::default());
            let events = EventFilter::parse(&["*"]).unwrap();
            let mut webhook = Webhook::new(
                "wh_1".into(),
                "ws_1".into(),
                url.unwrap(),
                events,
                secret,
                at,
            );
            if let Some(previous) = v["previous_secret"].as_str() {
                let until = Timestamp::from_millis(at.as_millis() + 60_000);
                webhook.previous_secret = Some((WebhookSecret::parse(previous).unwrap(), until));
            }
            let event_id = text("webhook_id");
            let delivery = Delivery::new("ws_1", "wh_1", &event_id, EventType::TicketCreated, at);
            let mut sent = std::collections::BTreeMap::new();
            let body = text("body");
            super::signed_headers(&webhook, &delivery, 1, at, body.as_bytes(), |k, val| {
                sent.insert(k.as_str().to_owned(), val);
            });
            let name = text("name");
            for (header, expected) in v["headers"].as_object().unwrap() {
                assert_eq!(
                    sent.get(header.as_str()).map(String::as_str),
                    expected.as_str(),
                    "{name}: {header}"
                );
            }
            assert_eq!(
                signing_secret(&text("secret")),
                text("signing_secret"),
                "{name}"
            );
        }
    }

    #[test]
    fn kept_headers_are_json_objects_whatever_their_values() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("5"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=\"2\""));
        headers.insert(
            "x-odd",
            HeaderValue::from_bytes(b"back\\slash \xff").unwrap(),
        );
        headers.insert("x-long", HeaderValue::from_str(&"v".repeat(300)).unwrap());
        let kept: Value = serde_json::from_str(&super::received_headers(&headers)).unwrap();
        assert_eq!(kept["retry-after"], "5");
        assert_eq!(kept["set-cookie"], "a=1, b=\"2\"");
        assert_eq!(kept["x-odd"], "back\\slash \u{fffd}");
        assert_eq!(kept["x-long"].as_str().unwrap().len(), 256);
        let many: hyper::HeaderMap = (0..40)
            .map(|i| {
                (
                    HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                    HeaderValue::from_static("1"),
                )
            })
            .collect();
        let kept: Value = serde_json::from_str(&super::received_headers(&many)).unwrap();
        assert_eq!(kept.as_object().unwrap().len(), 32);
        let none: Value =
            serde_json::from_str(&super::received_headers(&hyper::HeaderMap::new())).unwrap();
        assert_eq!(none, serde_json::json!({}));
    }
}
