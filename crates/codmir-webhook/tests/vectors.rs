//! The verifier against the shared vectors (`vectors.json`, made independently with Python's
//! hmac module; codmir-server's signer is tested against the same file), and every way a
//! request can be wrong.

use std::time::Duration;

use codmir_webhook::{Scheme, Verifier, VerifyError};
use serde_json::Value;

struct Vector {
    name: String,
    secret: String,
    previous: Option<String>,
    signing_secret: String,
    timestamp: i64,
    body: Vec<u8>,
    headers: Vec<(String, String)>,
}

fn vectors() -> Vec<Vector> {
    let file: Value =
        serde_json::from_str(include_str!("vectors.json")).expect("vectors.json is JSON");
    let text = |v: &Value| v.as_str().expect("a string").to_owned();
    file["vectors"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| Vector {
            name: text(&v["name"]),
            secret: text(&v["secret"]),
            previous: v.get("previous_secret").map(text),
            signing_secret: text(&v["signing_secret"]),
            timestamp: v["timestamp"].as_i64().expect("a number"),
            body: text(&v["body"]).into_bytes(),
            headers: v["headers"]
                .as_object()
                .expect("an object")
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect(),
        })
        .collect()
}

fn without(headers: &[(String, String)], names: &[&str]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !names.contains(&k.as_str()))
        .cloned()
        .collect()
}

const STANDARD: [&str; 3] = ["webhook-id", "webhook-timestamp", "webhook-signature"];

#[test]
fn every_vector_verifies_by_either_secret_string_and_by_either_scheme() {
    for v in vectors() {
        for secret in [&v.secret, &v.signing_secret] {
            let verifier = Verifier::new(secret).unwrap();
            let scheme = verifier.verify_signature_at(&v.body, &v.headers, v.timestamp);
            assert_eq!(
                scheme,
                Ok(Scheme::StandardWebhooks),
                "{} with {secret}",
                v.name
            );
        }
        // The contract's header alone: keyed with the previous secret during a rotation.
        let contract = without(&v.headers, &STANDARD);
        let secret = v.previous.as_ref().unwrap_or(&v.secret);
        let scheme = Verifier::new(secret)
            .unwrap()
            .verify_signature_at(&v.body, &contract, 0);
        assert_eq!(scheme, Ok(Scheme::Codmir), "{}", v.name);
    }
}

#[test]
fn during_a_rotation_either_secret_verifies() {
    let v = vectors()
        .into_iter()
        .find(|v| v.previous.is_some())
        .expect("a rotation vector");
    for secret in [&v.secret, v.previous.as_ref().unwrap()] {
        let scheme =
            Verifier::new(secret)
                .unwrap()
                .verify_signature_at(&v.body, &v.headers, v.timestamp);
        assert_eq!(scheme, Ok(Scheme::StandardWebhooks), "{secret}");
    }
    // A receiver moving to its own next secret holds both.
    let both = Verifier::with_secrets(["not-this-one-at-all", &v.secret]).unwrap();
    assert!(
        both.verify_signature_at(&v.body, &v.headers, v.timestamp)
            .is_ok()
    );
}

#[test]
fn tampered_bodies_wrong_secrets_and_bad_times_are_refused_with_the_reason() {
    let v = vectors()
        .into_iter()
        .find(|v| v.name == "custom-secret")
        .unwrap();
    let verifier = Verifier::new(&v.secret).unwrap();
    let at = v.timestamp;
    // The whole event reads back typed.
    let event = verifier.verify_at(&v.body, &v.headers, at).unwrap();
    assert_eq!(event.event_type(), "ticket.created");

    let mut tampered = v.body.clone();
    tampered[10] ^= 1;
    assert_eq!(
        verifier.verify_at(&tampered, &v.headers, at),
        Err(VerifyError::NoSignatureMatched(Scheme::StandardWebhooks))
    );
    // Re-serialized JSON (what a framework's body parser hands over) is a different body.
    let reserialized =
        serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&v.body).unwrap()).unwrap();
    assert!(verifier.verify_at(&reserialized, &v.headers, at).is_err());
    let wrong = Verifier::new("another-webhooks-secret").unwrap();
    let e = wrong.verify_at(&v.body, &v.headers, at).unwrap_err();
    assert_eq!(e, VerifyError::NoSignatureMatched(Scheme::StandardWebhooks));
    assert!(e.to_string().contains("raw bytes"), "{e}");
    let contract = without(&v.headers, &STANDARD);
    assert_eq!(
        wrong.verify_at(&v.body, &contract, at),
        Err(VerifyError::NoSignatureMatched(Scheme::Codmir))
    );

    let tolerance = Duration::from_secs(300);
    assert!(verifier.verify_at(&v.body, &v.headers, at + 300).is_ok());
    assert_eq!(
        verifier.verify_at(&v.body, &v.headers, at + 301),
        Err(VerifyError::TimestampTooOld {
            age: Duration::from_secs(301),
            tolerance
        })
    );
    assert_eq!(
        verifier.verify_at(&v.body, &v.headers, at - 301),
        Err(VerifyError::TimestampInFuture {
            ahead: Duration::from_secs(301),
            tolerance
        })
    );
    let lenient = verifier.clone().tolerance(Duration::from_secs(3600));
    assert!(lenient.verify_at(&v.body, &v.headers, at + 3000).is_ok());

    assert_eq!(
        verifier.verify_at(&v.body, &Vec::<(String, String)>::new(), at),
        Err(VerifyError::MissingSignature)
    );
    for name in ["webhook-id", "webhook-timestamp"] {
        let h = without(&v.headers, &[name]);
        assert_eq!(
            verifier.verify_at(&v.body, &h, at),
            Err(VerifyError::MissingHeader(name))
        );
    }
    let mut bad = without(&v.headers, &["webhook-timestamp"]);
    bad.push(("Webhook-Timestamp".into(), "yesterday".into()));
    assert!(matches!(
        verifier.verify_at(&v.body, &bad, at),
        Err(VerifyError::InvalidHeader {
            name: "webhook-timestamp",
            ..
        })
    ));
    let mut bad = without(&v.headers, &["webhook-signature"]);
    bad.push(("webhook-signature".into(), "v2,abc".into()));
    assert!(matches!(
        verifier.verify_at(&v.body, &bad, at),
        Err(VerifyError::InvalidHeader {
            name: "webhook-signature",
            ..
        })
    ));
    let short = [("x-codmir-signature", "sha256=abc")];
    assert!(matches!(
        verifier.verify_at(&v.body, &short[..], at),
        Err(VerifyError::InvalidHeader {
            name: "x-codmir-signature",
            ..
        })
    ));
}

#[test]
fn a_valid_signature_over_a_body_that_is_not_an_event_is_not_an_event() {
    let v = vectors()
        .into_iter()
        .find(|v| v.name == "empty-body")
        .unwrap();
    let e = Verifier::new(&v.secret)
        .unwrap()
        .verify_at(&v.body, &v.headers, v.timestamp)
        .unwrap_err();
    assert!(matches!(e, VerifyError::NotAnEvent(_)), "{e:?}");
}

#[test]
fn unusable_secrets_say_why() {
    assert!(matches!(
        Verifier::new(""),
        Err(VerifyError::InvalidSecret(_))
    ));
    let e = Verifier::new("whsec_abc\n").unwrap_err();
    assert!(e.to_string().contains("newline"), "{e}");
    assert!(Verifier::with_secrets(Vec::<String>::new()).is_err());
}

#[test]
fn unknown_types_and_new_fields_do_not_break_reading() {
    let body = br#"{"id":"evt_1","type":"sprint.started","timestamp":"2026-12-01T10:00:00.000Z","data":{"sprint":{"id":"spr_1"}},"extra":1}"#;
    let event: codmir_webhook::Event = serde_json::from_slice(body).unwrap();
    assert_eq!(event.event_type(), "sprint.started");
    assert!(matches!(event.data, codmir_webhook::Data::Unknown { .. }));
    let body = br#"{"id":"evt_2","type":"project.created","timestamp":"t","data":{"project":{"id":"p","name":"P","color":"red"},"user":{"id":"u","name":"U"},"new_part":{}}}"#;
    let event: codmir_webhook::Event = serde_json::from_slice(body).unwrap();
    assert!(matches!(
        event.data,
        codmir_webhook::Data::ProjectCreated(_)
    ));
    // A known type with the wrong shape is an error that names the type.
    let body = br#"{"id":"evt_3","type":"ticket.created","timestamp":"t","data":{}}"#;
    let e = serde_json::from_slice::<codmir_webhook::Event>(body).unwrap_err();
    assert!(e.to_string().contains("ticket.created"), "{e}");
}
