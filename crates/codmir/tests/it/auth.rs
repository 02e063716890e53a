//! Authentication answered consistently: the `Bearer` scheme in any case, `WWW-Authenticate`
//! on every 401, one answer for an unknown key and a wrong secret, revocation through the
//! API that its node honours at once, and failed attempts limited per client address.

use crate::helpers::{new_key, spawn_app};

#[tokio::test]
async fn the_scheme_is_case_insensitive_and_every_401_names_it() {
    let app = spawn_app().await;
    let me = format!("{}/v1/me", app.base);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = app
            .client
            .get(&me)
            .header("authorization", format!("{scheme} {}", app.key))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    let unknown = "cmk_0123456789abcdef_0000";
    let wrong_secret = format!("{}_nope", &app.key[..20]);
    let mut bodies = Vec::new();
    for auth in [
        None,
        Some("Basic dXNlcjpwYXNz".to_owned()),
        Some(format!("Bearer {unknown}")),
        Some(format!("Bearer {wrong_secret}")),
        Some("Bearer".to_owned()),
    ] {
        let mut req = app.client.get(&me);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(
            r.headers()["www-authenticate"],
            "Bearer realm=\"codmir\"",
            "{auth:?}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        bodies.push(body);
    }
    assert_eq!(
        bodies[2], bodies[3],
        "an unknown key and a wrong secret get the same answer"
    );
}

#[tokio::test]
async fn a_key_revoked_through_the_api_is_refused_at_once_by_its_node() {
    let app = spawn_app().await;
    let ci = new_key(&app.store, "default", "ci").await;
    let other_ws = new_key(&app.store, "elsewhere", "mallory").await;
    let with = |key: &str| {
        let (c, url, key) = (
            app.client.clone(),
            format!("{}/v1/me", app.base),
            key.to_owned(),
        );
        async move {
            c.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(with(&ci).await, 200, "used once, so cached");
    let list = app.get("/v1/api-keys").await;
    assert_eq!(list.status, 200, "{}", list.text);
    let keys = list.body["data"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "this workspace's keys only: {}", list.text);
    assert!(!list.text.contains(&ci[21..]), "never a secret");
    let id = ci[4..20].to_owned();
    assert!(
        keys.iter()
            .any(|k| k["id"] == id.as_str() && k["user"] == "ci")
    );

    // Another workspace's key is not found from here.
    let foreign = &other_ws[4..20];
    assert_eq!(
        app.delete(&format!("/v1/api-keys/{foreign}")).await.status,
        404
    );
    assert_eq!(with(&other_ws).await, 200);

    let r = app.delete(&format!("/v1/api-keys/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        with(&ci).await,
        401,
        "refused at once, though it was cached"
    );
    assert_eq!(app.delete(&format!("/v1/api-keys/{id}")).await.status, 409);
    let list = app.get("/v1/api-keys").await;
    assert!(
        list.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str() && k["revoked_at"].is_string())
    );
    assert_eq!(with(&app.key).await, 200, "the others still work");
}

#[tokio::test]
async fn past_the_rate_limit_a_key_gets_429_with_retry_after_and_recovers() {
    let app = crate::helpers::spawn_app_with(codmir_server::Config {
        api_rate_limit: Some(5),
        ..crate::helpers::test_config()
    })
    .await;
    let other = new_key(&app.store, "default", "other").await;
    let me = format!("{}/v1/me", app.base);
    // Ten at once: the burst is two seconds' worth (10), so the eleventh and twelfth wait.
    let mut limited = None;
    for _ in 0..12 {
        let r = app
            .client
            .get(&me)
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let r = limited.expect("a 429 past the burst");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Other keys and the probes are not held back.
    let r = app
        .client
        .get(&me)
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for _ in 0..20 {
        let r = app.request("GET", "/healthz", None, None).await;
        assert_eq!(r.status, 200);
    }
    crate::helpers::eventually(std::time::Duration::from_secs(5), "recovered", || async {
        let r = app
            .client
            .get(&me)
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        r.status() == 200
    })
    .await;
}

/// Revoking the workspace's last active key through the API would lock the workspace out of
/// it for good: refused, saying how to do it instead; once another key exists it may go.
#[tokio::test]
async fn the_last_active_key_of_a_workspace_cannot_be_revoked_through_the_api() {
    let app = spawn_app().await;
    let own = app.key[4..20].to_owned();
    let r = app.delete(&format!("/v1/api-keys/{own}")).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "last_active_key");
    assert!(r.text.contains("codmir keys create"), "{}", r.text);
    assert_eq!(app.get("/v1/me").await.status, 200, "still usable");

    let other = crate::helpers::new_key(&app.store, "default", "ops").await;
    let r = app.delete(&format!("/v1/api-keys/{own}")).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let me = app.request("GET", "/v1/me", Some(&other), None).await;
    assert_eq!(me.status, 200);
}

/// A client address that keeps presenting bad keys gets a 429 after 30, before its next key is
/// even looked up; a key already known good from that address still works, and another
/// address is not held back.
#[tokio::test]
async fn failed_authentications_are_limited_per_client_address() {
    let app = spawn_app().await;
    let me = format!("{}/v1/me", app.base);
    let from = crate::helpers::client_from;
    let (guesser, neighbour) = (from("127.0.0.1"), from("127.0.0.2"));
    // The good key is used once first, so it is known.
    let status = |c: &reqwest::Client, key: String| {
        let req = c.get(&me).bearer_auth(key);
        async move { req.send().await.unwrap() }
    };
    assert_eq!(status(&guesser, app.key.clone()).await.status(), 200);
    for i in 0..30 {
        let r = status(&guesser, format!("cmk_0123456789abcdef_{i:04}")).await;
        assert_eq!(r.status(), 401, "guess {i}");
    }
    let r = status(&guesser, "cmk_0123456789abcdef_9999".into()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        status(&guesser, app.key.clone()).await.status(),
        200,
        "a key known good still works from that address"
    );
    assert_eq!(
        status(&neighbour, "cmk_0123456789abcdef_0000".into())
            .await
            .status(),
        401,
        "another address has its own count"
    );
    // One more guess a second: refused (429, nothing looked up) until then, then looked up.
    crate::helpers::eventually(
        std::time::Duration::from_secs(3),
        "the next guess looked up",
        || async {
            let r = status(&guesser, "cmk_0123456789abcdef_8888".into()).await;
            assert!(matches!(r.status().as_u16(), 401 | 429), "{}", r.status());
            r.status() == 401
        },
    )
    .await;
}
