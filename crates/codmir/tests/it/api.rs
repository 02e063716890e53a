//! The tracker API over HTTP: routes, pagination, validation, auth and isolation.

use serde_json::{Value, json};

use crate::helpers::{new_key, spawn_app};

#[tokio::test]
async fn projects_are_created_read_and_listed_with_pagination() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.project(&format!("Project {i}")).await);
    }
    let one = app.get(&format!("/v1/projects/{}", ids[0])).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["name"], "Project 0");
    assert!(one.body["created_at"].as_str().unwrap().ends_with('Z'));

    let mut seen = Vec::new();
    let mut path = "/v1/projects?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let r = app.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let data = r.body["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        pages += 1;
        match r.body["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(r.body["has_more"], true);
                path = format!("/v1/projects?limit=2&cursor={c}");
            }
            None => {
                assert_eq!(r.body["has_more"], false);
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each once");
}

#[tokio::test]
async fn members_are_added_once_and_users_are_reused_by_email() {
    let app = spawn_app().await;
    let p1 = app.project("One").await;
    let p2 = app.project("Two").await;
    let r = app
        .post(
            &format!("/v1/projects/{p1}/members"),
            json!({"name": "Ann", "email": "Ann@Example.com", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["email"], "ann@example.com");
    assert_eq!(r.body["role"], "admin");
    let ann = r.body["id"].as_str().unwrap().to_owned();
    assert!(ann.starts_with("usr_"));

    let again = app
        .post(
            &format!("/v1/projects/{p1}/members"),
            json!({"name": "Ann", "email": "ann@example.com"}),
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"]["code"], "already_member");

    let other = app
        .post(
            &format!("/v1/projects/{p2}/members"),
            json!({"name": "Ann B", "email": "ann@example.com"}),
        )
        .await;
    assert_eq!(other.status, 201);
    assert_eq!(
        other.body["id"],
        ann.as_str(),
        "same user for the same e-mail"
    );
    assert_eq!(other.body["role"], "member", "default role");

    let list = app.get(&format!("/v1/projects/{p1}/members")).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);

    for (body, field) in [
        (json!({"name": "X", "email": "not-an-email"}), "email"),
        (json!({"name": "", "email": "x@example.com"}), "name"),
        (
            json!({"name": "X", "email": "x@example.com", "role": "owner"}),
            "role",
        ),
    ] {
        let r = app.post(&format!("/v1/projects/{p1}/members"), body).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.body["error"]["field"], field);
    }
}

#[tokio::test]
async fn tickets_have_defaults_can_be_patched_listed_and_deleted() {
    let app = spawn_app().await;
    let project = app.project("Main App").await;
    let t = app
        .ticket(&project, json!({"title": "Bug in login flow"}))
        .await;
    assert_eq!(t["status"], "open");
    assert_eq!(t["priority"], "medium");
    assert_eq!(t["description"], Value::Null);
    let id = t["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("tkt_"));

    let member = app
        .post(
            &format!("/v1/projects/{project}/members"),
            json!({"name": "Bo", "email": "bo@example.com"}),
        )
        .await;
    let bo = member.body["id"].as_str().unwrap();

    let r = app
        .patch(
            &format!("/v1/tickets/{id}"),
            json!({"status": "resolved", "description": "fixed", "assignee_id": bo}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "resolved");
    assert_eq!(r.body["assignee_id"], bo);
    let cleared = app
        .patch(
            &format!("/v1/tickets/{id}"),
            json!({"assignee_id": null, "description": null}),
        )
        .await;
    assert_eq!(cleared.body["assignee_id"], Value::Null);
    assert_eq!(cleared.body["description"], Value::Null);
    assert_eq!(cleared.body["status"], "resolved", "absent fields stay");

    for i in 0..3 {
        app.ticket(
            &project,
            json!({"title": format!("T{i}"), "priority": "urgent"}),
        )
        .await;
    }
    let page = app
        .get(&format!("/v1/projects/{project}/tickets?limit=3"))
        .await;
    assert_eq!(page.body["data"].as_array().unwrap().len(), 3);
    assert_eq!(page.body["has_more"], true);
    let rest = app
        .get(&format!(
            "/v1/projects/{project}/tickets?limit=3&cursor={}",
            page.body["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(rest.body["data"][0]["id"], id.as_str());

    let comment = app
        .post(
            &format!("/v1/tickets/{id}/comments"),
            json!({"body": "Seen on Safari"}),
        )
        .await;
    assert_eq!(comment.status, 201, "{}", comment.text);
    assert!(comment.body["id"].as_str().unwrap().starts_with("cmt_"));

    assert_eq!(app.delete(&format!("/v1/tickets/{id}")).await.status, 204);
    assert_eq!(app.get(&format!("/v1/tickets/{id}")).await.status, 404);
    assert_eq!(app.delete(&format!("/v1/tickets/{id}")).await.status, 404);
    assert_eq!(
        app.patch(&format!("/v1/tickets/{id}"), json!({"title": "x"}))
            .await
            .status,
        404
    );
    let after = app.get(&format!("/v1/projects/{project}/tickets")).await;
    assert_eq!(
        after.body["data"].as_array().unwrap().len(),
        3,
        "deleted tickets are not listed"
    );
}

#[tokio::test]
async fn bad_ticket_input_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    let project = app.project("P").await;
    let path = format!("/v1/projects/{project}/tickets");
    for (body, field) in [
        (json!({"title": ""}), "title"),
        (json!({"title": "x".repeat(501)}), "title"),
        (json!({"title": "ok", "status": "done"}), "status"),
        (json!({"title": "ok", "priority": "p0"}), "priority"),
        (
            json!({"title": "ok", "assignee_id": "usr_01m8mfwv1zhaevqnr82bqc78pm"}),
            "assignee_id",
        ),
        (json!({"title": "ok", "assignee_id": "bob"}), "assignee_id"),
        (json!({"title": 5}), "title"),
        (json!({"title": "ok", "colour": "red"}), "colour"),
        (json!({}), "."),
    ] {
        let r = app.post(&path, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "validation_failed");
        if field != "." {
            assert_eq!(r.body["error"]["field"], field, "{body}: {}", r.text);
        }
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }
    let t = app.ticket(&project, json!({"title": "ok"})).await;
    let r = app
        .patch(
            &format!("/v1/tickets/{}", t["id"].as_str().unwrap()),
            json!({"status": "closedd"}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], "status");
}

#[tokio::test]
async fn requests_without_a_valid_key_get_401_json() {
    let app = spawn_app().await;
    for key in [
        None,
        Some("nope"),
        Some("cmk_0123456789abcdef_00"),
        Some("cmk_zz_zz"),
    ] {
        let r = app.request("GET", "/v1/projects", key, None).await;
        assert_eq!(r.status, 401, "{key:?}");
        assert_eq!(r.body["error"]["code"], "unauthorized");
    }
    // The right key id with a wrong secret.
    let last = if app.key.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &app.key[..app.key.len() - 1]);
    assert_eq!(
        app.request("GET", "/v1/projects", Some(&wrong), None)
            .await
            .status,
        401
    );
    let basic = app
        .client
        .get(format!("{}/v1/projects", app.base))
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
}

#[tokio::test]
async fn malformed_requests_get_clear_json_errors_never_5xx() {
    let app = spawn_app().await;
    let project = app.project("P").await;
    let url = format!("{}/v1/projects/{project}/tickets", app.base);
    let send = |body: Vec<u8>, ct: &'static str| {
        app.client
            .post(&url)
            .bearer_auth(&app.key)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let malformed = send(b"{\"title\": ".to_vec(), "application/json")
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");

    let big = format!("{{\"title\": \"{}\"}}", "x".repeat(1 << 20));
    let too_big = send(big.into_bytes(), "application/json").await.unwrap();
    assert_eq!(too_big.status(), 413);
    let body: Value = too_big.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");

    let form = send(b"title=x".to_vec(), "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(form.status(), 415);

    let not_utf8 = send(vec![b'"', 0xff, 0xfe, b'"'], "application/json")
        .await
        .unwrap();
    assert_eq!(not_utf8.status(), 400);

    for path in ["/nope", "/v1/tickets", "/v1/projects/proj_x/nope"] {
        let r = app.get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.body["error"]["code"], "not_found");
    }
    for path in [
        "/v1/projects?limit=0",
        "/v1/projects?limit=101",
        "/v1/projects?limit=abc",
        "/v1/projects?cursor=garbage",
        "/v1/projects?colour=red",
        "/v1/events?type=ticket.exploded",
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status, 422, "{path}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "validation_failed");
    }
    let r = app
        .request("PUT", "/v1/projects", Some(&app.key), None)
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.body["error"]["code"], "method_not_allowed");
    // Ids of the wrong shape are simply not found.
    for path in [
        "/v1/projects/tkt_01m8mfwv1zhaevqnr82bqc78pm",
        "/v1/tickets/%00",
        "/v1/events/evt_'%20OR%201=1",
    ] {
        assert_eq!(app.get(path).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn another_workspace_sees_404_on_every_id() {
    let app = spawn_app().await;
    let project = app.project("Secret").await;
    let member = app
        .post(
            &format!("/v1/projects/{project}/members"),
            json!({"name": "A", "email": "a@example.com"}),
        )
        .await;
    let user = member.body["id"].as_str().unwrap().to_owned();
    let ticket = app.ticket(&project, json!({"title": "T"})).await;
    let ticket = ticket["id"].as_str().unwrap().to_owned();
    let event = app.events().await[0]["id"].as_str().unwrap().to_owned();

    let other = new_key(&app.store, "other", "mallory").await;
    let k = Some(other.as_str());
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/v1/projects/{project}"), None),
        ("GET", format!("/v1/projects/{project}/tickets"), None),
        ("GET", format!("/v1/projects/{project}/members"), None),
        (
            "POST",
            format!("/v1/projects/{project}/members"),
            Some(json!({"name": "M", "email": "m@example.com"})),
        ),
        (
            "POST",
            format!("/v1/projects/{project}/tickets"),
            Some(json!({"title": "x"})),
        ),
        ("GET", format!("/v1/tickets/{ticket}"), None),
        (
            "PATCH",
            format!("/v1/tickets/{ticket}"),
            Some(json!({"title": "pwned"})),
        ),
        ("DELETE", format!("/v1/tickets/{ticket}"), None),
        (
            "POST",
            format!("/v1/tickets/{ticket}/comments"),
            Some(json!({"body": "hi"})),
        ),
        ("GET", format!("/v1/events/{event}"), None),
    ];
    for (method, path, body) in cases {
        let r = app.request(method, &path, k, body).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
    }
    // Nor can the other workspace assign the first workspace's user.
    let own = app
        .request("POST", "/v1/projects", k, Some(json!({"name": "Mine"})))
        .await;
    let own = own.body["id"].as_str().unwrap();
    let r = app
        .request(
            "POST",
            &format!("/v1/projects/{own}/tickets"),
            k,
            Some(json!({"title": "x", "assignee_id": user})),
        )
        .await;
    assert_eq!(r.status, 422);
    // Lists show only its own things.
    let list = app.request("GET", "/v1/projects", k, None).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    let events = app.request("GET", "/v1/events", k, None).await;
    assert_eq!(events.body["data"].as_array().unwrap().len(), 1);
    // And the first workspace's data is untouched.
    assert_eq!(
        app.get(&format!("/v1/tickets/{ticket}")).await.body["title"],
        "T"
    );
}

#[tokio::test]
async fn openapi_lists_every_route_and_healthz_answers() {
    let app = spawn_app().await;
    let health = app.request("GET", "/healthz", None, None).await;
    assert_eq!(health.status, 200);
    let doc = app.request("GET", "/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let routes = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/v1/event-types"),
        ("get", "/v1/events"),
        ("get", "/v1/events/{id}"),
        ("post", "/v1/projects"),
        ("get", "/v1/projects"),
        ("get", "/v1/projects/{id}"),
        ("post", "/v1/projects/{id}/members"),
        ("get", "/v1/projects/{id}/members"),
        ("post", "/v1/projects/{id}/tickets"),
        ("get", "/v1/projects/{id}/tickets"),
        ("get", "/v1/tickets/{id}"),
        ("patch", "/v1/tickets/{id}"),
        ("delete", "/v1/tickets/{id}"),
        ("post", "/v1/tickets/{id}/comments"),
        ("get", "/v1/tickets/{id}/comments"),
        ("get", "/v1/me"),
        ("get", "/v1/api-keys"),
        ("delete", "/v1/api-keys/{id}"),
        ("get", "/v1/deliveries"),
        ("post", "/v1/deliveries/{id}/redeliver"),
        ("post", "/v1/webhooks/{id}/retry-pending"),
        ("post", "/v1/webhooks/{id}/ping"),
        ("post", "/v1/webhooks/{id}/replay"),
        ("post", "/v1/webhooks/{id}/rotate-secret"),
        ("post", "/v1/webhooks"),
        ("get", "/v1/webhooks"),
        ("get", "/v1/webhooks/{id}"),
        ("patch", "/v1/webhooks/{id}"),
        ("delete", "/v1/webhooks/{id}"),
        ("get", "/v1/webhooks/{id}/deliveries"),
        ("get", "/v1/webhooks/{id}/stats"),
        ("get", "/v1/webhooks/health"),
        ("post", "/v1/deliveries/{id}/skip"),
        ("get", "/v1/deliveries/{id}"),
    ];
    let paths = doc.body["paths"].as_object().unwrap();
    for (method, path) in routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
        // And the route is really served: a request to it is not a route-level 404/405.
        let concrete = path.replace("{id}", "x_01m8mfwv1zhaevqnr82bqc78pm");
        let r = app
            .request(
                &method.to_uppercase(),
                &concrete,
                Some(&app.key),
                Some(json!({})),
            )
            .await;
        assert_ne!(r.status, 405, "{method} {path}");
        assert!(r.status < 500, "{method} {path}: {}", r.text);
        if r.status == 404 {
            assert_ne!(
                r.body["error"]["message"], "route not found",
                "{method} {path} is not routed"
            );
        }
    }
    // Every status an operation can answer is documented, in the error shape.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |code: &str| responses.contains_key(code);
            assert!(has("500") && has("503"), "{method} {path}");
            if op.get("security").is_some() {
                assert!(has("401") && has("429"), "{method} {path}: {responses:?}");
            }
            if op.get("requestBody").is_some() {
                for code in ["400", "408", "413", "415", "422"] {
                    assert!(has(code), "{method} {path} lacks {code}");
                }
            }
            if path.contains('{') {
                assert!(has("404"), "{method} {path} lacks 404");
            }
        }
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "every documented operation is in the test's list"
    );
}

/// The bounds `/openapi.json` states are the ones the API enforces: at the bound accepted,
/// one past it refused with a 422 naming the field.
#[tokio::test]
async fn openapi_states_the_bounds_the_api_enforces() {
    let app = spawn_app().await;
    let doc = app.request("GET", "/openapi.json", None, None).await.body;
    let schema = |name: &str| doc["components"]["schemas"][name]["properties"].clone();
    // An optional field's schema is `oneOf: [null, the schema]`.
    let some = |v: &Value| {
        v["oneOf"]
            .as_array()
            .and_then(|o| o.iter().find(|s| s["type"] != "null"))
            .unwrap_or(v)
            .clone()
    };
    let webhook = schema("CreateWebhook");
    assert_eq!(webhook["events"]["maxItems"], 32);
    let patterns = webhook["events"]["items"]["enum"].as_array().unwrap();
    for p in ["*", "ticket.*", "ticket.created", "webhook.ping"] {
        assert!(patterns.iter().any(|v| v == p), "{p} in {patterns:?}");
    }
    assert_eq!(some(&webhook["project_ids"])["maxItems"], 100, "{webhook}");
    assert_eq!(some(&webhook["headers"])["maxProperties"], 20);
    assert_eq!(webhook["url"]["maxLength"], 2048);
    assert_eq!(schema("CreateProject")["name"]["maxLength"], 200);
    let limit = doc["paths"]["/v1/events"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"]
        .clone();
    assert_eq!(
        (limit["minimum"].as_u64(), limit["maximum"].as_u64()),
        (Some(1), Some(100))
    );

    let create = |events: usize| json!({"url": "https://receiver.example.com/h", "events": vec!["*"; events]});
    let ok = app
        .request("POST", "/v1/webhooks", Some(&app.key), Some(create(32)))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let past = app
        .request("POST", "/v1/webhooks", Some(&app.key), Some(create(33)))
        .await;
    assert_eq!(
        (past.status, past.body["error"]["field"].as_str()),
        (422, Some("events"))
    );
    let name = |n: usize| json!({"name": "n".repeat(n)});
    let ok = app
        .request("POST", "/v1/projects", Some(&app.key), Some(name(200)))
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let past = app
        .request("POST", "/v1/projects", Some(&app.key), Some(name(201)))
        .await;
    assert_eq!(
        (past.status, past.body["error"]["field"].as_str()),
        (422, Some("name"))
    );
    let ok = app
        .request("GET", "/v1/events?limit=100", Some(&app.key), None)
        .await;
    assert_eq!(ok.status, 200);
    let past = app
        .request("GET", "/v1/events?limit=101", Some(&app.key), None)
        .await;
    assert_eq!(
        (past.status, past.body["error"]["field"].as_str()),
        (422, Some("limit"))
    );
}

#[tokio::test]
async fn comments_are_listed_newest_first_and_me_names_the_key() {
    let app = spawn_app().await;
    let p = app.project("P").await;
    let t = app.ticket(&p, json!({"title": "T"})).await;
    let t = t["id"].as_str().unwrap();
    let mut made = Vec::new();
    for body in ["first", "second", "third"] {
        let r = app
            .post(&format!("/v1/tickets/{t}/comments"), json!({"body": body}))
            .await;
        assert_eq!(r.status, 201);
        made.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let page = app.get(&format!("/v1/tickets/{t}/comments?limit=2")).await;
    assert_eq!(page.status, 200);
    let bodies: Vec<&str> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["third", "second"]);
    assert_eq!(page.body["has_more"], true);
    let missing = app
        .get("/v1/tickets/tkt_01m8mfwv1zhaevqnr82bqc78pm/comments")
        .await;
    assert_eq!(missing.status, 404);

    let me = app.get("/v1/me").await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["user"]["name"], "admin");
    assert!(me.body["user"]["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(me.body["workspace"]["name"], "default");
    let anonymous = app.request("GET", "/v1/me", Some("cmk_nope"), None).await;
    assert_eq!(anonymous.status, 401);
}

/// Every request body is a JSON object: an array (which serde would read field by field into
/// a struct) is a 422 and changes nothing; a body declared larger than the limit is a 413
/// before any of it is sent; every answer says `nosniff`.
#[tokio::test]
async fn bodies_are_objects_of_a_bounded_size_and_answers_are_not_sniffed() {
    let app = spawn_app().await;
    let hook = app
        .register(json!({"url": "https://example.com/h", "events": ["*"]}))
        .await;
    let id = hook["id"].as_str().unwrap();
    let rotate = format!("/v1/webhooks/{id}/rotate-secret");
    for (path, body) in [
        (rotate.as_str(), json!([null, null])),
        ("/v1/projects", json!(["P"])),
    ] {
        let r = app.post(path, body).await;
        assert_eq!(r.status, 422, "{path}: {}", r.text);
        assert!(r.text.contains("JSON object"), "{}", r.text);
    }
    let read = app.get(&format!("/v1/webhooks/{id}")).await;
    assert_eq!(
        read.body["previous_secret_expires_at"],
        Value::Null,
        "not rotated"
    );
    assert!(
        app.get("/v1/projects").await.body["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Declared 10 GB and nothing sent: answered from the head alone (waiting for the body
    // would end in a 408).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_owned();
    for idempotent in [false, true] {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let key_header = if idempotent {
            "Idempotency-Key: big\r\n"
        } else {
            ""
        };
        let head = format!(
            "POST /v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n{key_header}Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
            app.key
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = conn.read(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).to_string();
        assert!(answer.starts_with("HTTP/1.1 413"), "{idempotent}: {answer}");
        assert!(answer.contains("payload_too_large"), "{answer}");
    }

    for r in [
        app.get("/v1/projects").await,
        app.get("/v1/nothing-here").await,
        app.post("/v1/projects", json!({"name": ""})).await,
    ] {
        let nosniff = r.headers.get("x-content-type-options");
        assert_eq!(
            nosniff.and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{}",
            r.text
        );
    }
}
