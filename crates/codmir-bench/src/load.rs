//! Load through the public API (the real path: request → transaction → event → fan-out →
//! delivery), and the same client posting straight to the receiver (the reqwest ceiling).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::receiver::Stats;

/// An API caller with a key.
#[derive(Clone)]
pub(crate) struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub key: String,
}

impl Api {
    pub(crate) async fn post(&self, path: &str, body: Value) -> Result<Value> {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    pub(crate) async fn project(&self) -> Result<String> {
        let p = self.post("/v1/projects", json!({"name": "bench"})).await?;
        p["id"].as_str().map(str::to_owned).context("project id")
    }

    /// Registers webhook number `index` of the receiver for `ticket.created`.
    pub(crate) async fn webhook(&self, receiver: &str, index: usize) -> Result<String> {
        let w = self
            .post(
                "/v1/webhooks",
                json!({"url": format!("{receiver}/h/{index}"), "events": ["ticket.created"]}),
            )
            .await?;
        w["id"].as_str().map(str::to_owned).context("webhook id")
    }
}

/// What a load run measured on the sending side.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sent {
    pub accepted: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Client round trips in µs (API request → 201, or direct POST → 200).
    pub round_trips: Vec<u32>,
}

impl Sent {
    pub(crate) fn rate(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Creates tickets `seqs` through the API: as fast as `concurrency` allows, or at `rate`/s.
pub(crate) async fn tickets(
    api: &Api,
    project: &str,
    seqs: std::ops::Range<u64>,
    concurrency: usize,
    rate: Option<f64>,
    stats: &Arc<Stats>,
) -> Sent {
    let url = format!("{}/v1/projects/{project}/tickets", api.base);
    let load = Load { concurrency, rate };
    posts(api, url, 201, seqs, load, stats, |seq| {
        json!({"title": format!("b{seq}")}).to_string()
    })
    .await
}

/// Sends messages `seqs` to a svix-server application, each a `ticket.created` payload of
/// the size codmir sends, titled `b{seq}` so that the receiver counts it like our own.
pub(crate) async fn svix_messages(
    api: &Api,
    app: &str,
    seqs: std::ops::Range<u64>,
    concurrency: usize,
    stats: &Arc<Stats>,
) -> Sent {
    const TITLE: &str = "\"title\":\"";
    // The example payload with its title cut out: the body is `head`, `b{seq}`, `tail`.
    let payload = sample_payload();
    let at = payload.find(TITLE).expect("the example has a title") + TITLE.len();
    let end = at + payload[at..].find('"').expect("the title ends");
    let head = format!(
        "{{\"eventType\":\"ticket.created\",\"payload\":{}",
        &payload[..at]
    );
    let tail = format!("{}}}", &payload[end..]);
    let url = format!("{}/api/v1/app/{app}/msg/", api.base);
    let load = Load {
        concurrency,
        rate: None,
    };
    posts(api, url, 202, seqs, load, stats, move |seq| {
        format!("{head}b{seq}{tail}")
    })
    .await
}

/// How hard a load run pushes: `concurrency` requests in flight, or at most `rate` per second.
struct Load {
    concurrency: usize,
    rate: Option<f64>,
}

/// POSTs the JSON `body` of each of `seqs` to `url` with the API's key, marking it sent first;
/// a request counts as accepted when it is answered `status`.
async fn posts<B>(
    api: &Api,
    url: String,
    status: u16,
    seqs: std::ops::Range<u64>,
    load: Load,
    stats: &Arc<Stats>,
    body: B,
) -> Sent
where
    B: Fn(u64) -> String + Send + Sync + 'static,
{
    let (url, key, body) = (Arc::new(url), Arc::new(api.key.clone()), Arc::new(body));
    run(
        api.client.clone(),
        seqs,
        load.concurrency,
        load.rate,
        stats.clone(),
        move |client, seq, stats| {
            let (url, key, body) = (url.clone(), key.clone(), body.clone());
            async move {
                stats.mark_sent(seq);
                let r = client
                    .post(url.as_str())
                    .bearer_auth(key.as_str())
                    .header("content-type", "application/json")
                    .body(body(seq))
                    .send()
                    .await;
                ok_body(r, status).await
            }
        },
    )
    .await
}

/// PATCHes ticket `tickets[seq % len]`'s title to `b{seq}` for each of `seqs`: one
/// `ticket.updated` per request, which the receiver counts by that title.
pub(crate) async fn retitles(
    api: &Api,
    tickets: Arc<Vec<String>>,
    seqs: std::ops::Range<u64>,
    concurrency: usize,
    stats: &Arc<Stats>,
) -> Sent {
    let (base, key) = (Arc::new(api.base.clone()), Arc::new(api.key.clone()));
    run(
        api.client.clone(),
        seqs,
        concurrency,
        None,
        stats.clone(),
        move |client, seq, stats| {
            let (base, key, tickets) = (base.clone(), key.clone(), tickets.clone());
            async move {
                stats.mark_sent(seq);
                let ticket = &tickets[(seq % tickets.len() as u64) as usize];
                let r = client
                    .patch(format!("{base}/v1/tickets/{ticket}"))
                    .bearer_auth(key.as_str())
                    .header("content-type", "application/json")
                    .body(json!({"title": format!("b{seq}")}).to_string())
                    .send()
                    .await;
                ok_body(r, 200).await
            }
        },
    )
    .await
}

/// The ceiling: the same client posts an event-sized body straight to the receiver.
pub(crate) async fn direct(
    client: &reqwest::Client,
    receiver: &str,
    n: u64,
    concurrency: usize,
    rate: Option<f64>,
    stats: &Arc<Stats>,
) -> Sent {
    let url = Arc::new(format!("{receiver}/direct"));
    let body: Arc<[u8]> = Arc::from(sample_payload().into_bytes());
    run(
        client.clone(),
        0..n,
        concurrency,
        rate,
        stats.clone(),
        move |client, _seq, _stats| {
            let (url, body) = (url.clone(), body.clone());
            async move {
                let r = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body.to_vec())
                    .send()
                    .await;
                ok_body(r, 200).await
            }
        },
    )
    .await
}

/// True when the response has `status` and its body was read whole.
async fn ok_body(r: reqwest::Result<reqwest::Response>, status: u16) -> bool {
    match r {
        Ok(r) if r.status().as_u16() == status => r.bytes().await.is_ok(),
        _ => false,
    }
}

/// A body the size and shape of a `ticket.created` delivery.
pub(crate) fn sample_payload() -> String {
    codmir_core::event::example(
        codmir_core::event::EventType::TicketCreated,
        codmir_core::time::Timestamp::now(),
    )
    .to_string()
}

async fn run<F, Fut>(
    client: reqwest::Client,
    seqs: std::ops::Range<u64>,
    concurrency: usize,
    rate: Option<f64>,
    stats: Arc<Stats>,
    call: F,
) -> Sent
where
    F: Fn(reqwest::Client, u64, Arc<Stats>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(seqs.start));
    let (accepted, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let trips = Arc::new(std::sync::Mutex::new(Vec::new()));
    let began = Instant::now();
    let end = seqs.end;
    match rate {
        None => {
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, next, call, stats) =
                    (client.clone(), next.clone(), call.clone(), stats.clone());
                let (accepted, errors, trips) = (accepted.clone(), errors.clone(), trips.clone());
                tasks.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        if seq >= end {
                            break;
                        }
                        let t = Instant::now();
                        if call(client.clone(), seq, stats.clone()).await {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            mine.push(t.elapsed().as_micros() as u32);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    trips.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
        Some(rate) => {
            let permits = Arc::new(Semaphore::new(concurrency));
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = tokio::task::JoinSet::new();
            for seq in seqs {
                ticker.tick().await;
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (client, call, stats) = (client.clone(), call.clone(), stats.clone());
                let (accepted, errors, trips) = (accepted.clone(), errors.clone(), trips.clone());
                tasks.spawn(async move {
                    let t = Instant::now();
                    if call(client, seq, stats).await {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        trips
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(t.elapsed().as_micros() as u32);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let round_trips = std::mem::take(&mut *trips.lock().unwrap_or_else(|e| e.into_inner()));
    Sent {
        accepted: accepted.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: began.elapsed(),
        round_trips,
    }
}

/// Percentile `p` (0–100) of `values` in µs, as ms.
pub(crate) fn percentile_ms(values: &mut [u32], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_unstable();
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    f64::from(values[rank.min(values.len() - 1)]) / 1000.0
}
