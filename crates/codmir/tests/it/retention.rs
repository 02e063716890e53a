//! Retention: old rows go, in batches and under load; pending work and its events stay.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{WAIT, eventually, id_of, spawn_app_with, test_config};
use crate::receiver::{Receiver, Reply};

#[tokio::test]
async fn retention_deletes_old_rows_in_batches_under_load_and_keeps_pending_work() {
    let config = codmir_server::Config {
        retry_schedule: codmir_core::retry::RetrySchedule::parse("10m").unwrap(),
        retention: Some(Duration::from_millis(1500)),
        retention_interval: Duration::from_millis(100),
        retention_batch: 7,
        ..test_config()
    };
    let app = spawn_app_with(config).await;
    let (ok, down) = (Receiver::start().await, Receiver::start().await);
    down.always(Reply::Status(503));
    let ok_id = id_of(
        &app.register(json!({"url": ok.url, "events": ["project.created"]}))
            .await,
    );
    let down_id = id_of(
        &app.register(json!({"url": down.url, "events": ["project.created"]}))
            .await,
    );
    for i in 0..30 {
        app.project(&format!("old{i}")).await;
    }
    eventually(WAIT, "the healthy webhook's deliveries settled", || async {
        app.list(&format!(
            "/v1/deliveries?webhook_id={ok_id}&status=succeeded&limit=100"
        ))
        .await
        .len()
            == 30
    })
    .await;
    let pending = app
        .list(&format!("/v1/deliveries?webhook_id={down_id}&limit=100"))
        .await;
    assert_eq!(pending.len(), 30);
    // A load through the API while retention deletes the old rows, 7 of each kind at a time:
    // one request per check, until the old settled deliveries are gone.
    let answered = std::sync::Mutex::new(Vec::new());
    eventually(
        WAIT,
        "the old settled deliveries deleted under load",
        || async {
            let n = answered.lock().unwrap().len();
            let r = app
                .post("/v1/projects", json!({"name": format!("new{n}")}))
                .await;
            answered.lock().unwrap().push(r.status);
            app.list(&format!("/v1/deliveries?webhook_id={ok_id}&limit=100"))
                .await
                .iter()
                .all(|d| d["created_at"].as_str() > pending[0]["created_at"].as_str())
        },
    )
    .await;
    let answered = answered.into_inner().unwrap();
    assert!(answered.len() > 1, "the load ran during the pass");
    assert!(
        answered.iter().all(|s| *s == 201),
        "the API kept answering: {answered:?}"
    );
    // The pending deliveries, their events and their attempts are all still there.
    let still = app
        .list(&format!(
            "/v1/deliveries?webhook_id={down_id}&status=pending&limit=100"
        ))
        .await;
    let old_pending: Vec<&Value> = still
        .iter()
        .filter(|d| pending.iter().any(|p| p["id"] == d["id"]))
        .collect();
    assert_eq!(old_pending.len(), 30, "pending work is never deleted");
    for d in old_pending {
        let event = app
            .get(&format!("/v1/events/{}", d["event_id"].as_str().unwrap()))
            .await;
        assert_eq!(event.status, 200, "the events pending work needs are kept");
        let detail = app
            .get(&format!("/v1/deliveries/{}", d["id"].as_str().unwrap()))
            .await;
        assert_eq!(detail.body["attempts"].as_array().unwrap().len(), 1);
    }
    // Only the events nothing needs went: the 30 old ones still have pending deliveries.
    let events = app.list("/v1/events?type=project.created&limit=100").await;
    assert!(events.len() >= 30, "{} events left", events.len());
}
