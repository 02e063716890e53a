//! The raw ceiling: `concurrency` keep-alive HTTP/1.1 connections driven by hyper's
//! connection API, with no pool, no middleware and no per-request allocation beyond the
//! request itself. It is what this machine's loopback and the receiver can take; the reqwest
//! ceiling (`load::direct`) is the floor our client library sets under it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::load::{Sent, sample_payload};

/// POSTs `n` event-sized bodies to the receiver's `/direct` over `concurrency` connections.
pub(crate) async fn direct(receiver: &str, n: u64, concurrency: usize) -> Result<Sent> {
    let authority = receiver
        .strip_prefix("http://")
        .context("the receiver is on http://")?
        .trim_end_matches('/')
        .to_owned();
    let body = Bytes::from(sample_payload());
    let next = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let stream = tokio::net::TcpStream::connect(&authority).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let (next, accepted, errors) = (next.clone(), accepted.clone(), errors.clone());
        let (body, authority) = (body.clone(), authority.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                if sender.ready().await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let request = hyper::Request::post("/direct")
                    .header("host", authority.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()));
                let Ok(request) = request else { return };
                let ok = match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        response.into_body().collect().await.is_ok() && status == 200
                    }
                    Err(_) => false,
                };
                let counter = if ok { &accepted } else { &errors };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(Sent {
        accepted: accepted.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: began.elapsed(),
        round_trips: Vec::new(),
    })
}
