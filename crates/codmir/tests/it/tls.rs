//! TLS certificates are verified: an endpoint whose certificate no trusted authority signed
//! gets no request, and the attempt is logged as a failure naming the certificate.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::helpers::{eventually, spawn_app};

/// A self-signed certificate for 127.0.0.1 and localhost (valid until 2126), made for this
/// test alone with `openssl req -x509` (an end-entity certificate, `CA:FALSE`): no authority
/// the client trusts signed it, so verification fails with `UnknownIssuer`.
const CERT: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIB0jCCAXigAwIBAgIUSw3gBczYGqbeS0p1ktjN507sUeYwCgYIKoZIzj0EAwIw\n\
HzEdMBsGA1UEAwwUY29kbWlyIHRlc3QgcmVjZWl2ZXIwIBcNMjYxMjAxMDY1NDM5\n\
WhgPMjEyNjExMDcwNjU0MzlaMB8xHTAbBgNVBAMMFGNvZG1pciB0ZXN0IHJlY2Vp\n\
dmVyMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEXAKGYMZS3sOHHUmOtTKl2dxB\n\
km6PQTm4RmDcxnMKCW9g8VaXRQh8uhK/O+M4aOspOePNuwY4Cs0ywt/2tdxbkKOB\n\
jzCBjDAdBgNVHQ4EFgQU0I18lLM526r3SmLbg9a4Zbcf7XEwHwYDVR0jBBgwFoAU\n\
0I18lLM526r3SmLbg9a4Zbcf7XEwGgYDVR0RBBMwEYcEfwAAAYIJbG9jYWxob3N0\n\
MAwGA1UdEwEB/wQCMAAwCwYDVR0PBAQDAgeAMBMGA1UdJQQMMAoGCCsGAQUFBwMB\n\
MAoGCCqGSM49BAMCA0gAMEUCIBsyRlSG0Ha61l/Bny1M547Dd89GeiDNrSXQOIPx\n\
D4gPAiEAhbN4mS+4vQoje6e0ocz/Nr+Rq994uoxW7ALuUQ+MxaQ=\n\
-----END CERTIFICATE-----\n";
/// Its key, which protects nothing but this test.
const KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSDJOoD6enR0xNW8O\n\
xNjwj+vW9SetIyaP08pUC0oUJymhRANCAARcAoZgxlLew4cdSY61MqXZ3EGSbo9B\n\
ObhGYNzGcwoJb2DxVpdFCHy6Er874zho6yk54827BjgKzTLC3/a13FuQ\n\
-----END PRIVATE KEY-----\n";

/// A TLS endpoint on 127.0.0.1 with the self-signed certificate. Counts handshakes that
/// completed and requests that arrived.
struct TlsEndpoint {
    url: String,
    handshakes: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl TlsEndpoint {
    async fn start() -> Self {
        let cert = CertificateDer::from_pem_slice(CERT.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/hook", listener.local_addr().unwrap());
        let handshakes: Arc<AtomicUsize> = Arc::default();
        let requests: Arc<AtomicUsize> = Arc::default();
        let (h, r) = (handshakes.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, h, r) = (acceptor.clone(), h.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    h.fetch_add(1, Ordering::SeqCst);
                    let mut buf = [0u8; 1024];
                    if matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {
                        r.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Self {
            url,
            handshakes,
            requests,
        }
    }
}

#[tokio::test]
async fn an_endpoint_with_an_untrusted_certificate_gets_nothing_and_the_attempt_says_why() {
    let app = spawn_app().await; // retry schedule 100ms,200ms
    let endpoint = TlsEndpoint::start().await;
    let r = app
        .post(
            "/v1/webhooks",
            json!({"url": endpoint.url, "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let webhook = r.body["id"].as_str().unwrap().to_owned();
    app.project("P").await;
    let list = format!("/v1/webhooks/{webhook}/deliveries");
    let wait = std::time::Duration::from_secs(10);
    eventually(wait, "a delivery", || async {
        app.get(&list).await.body["data"][0]["id"].is_string()
    })
    .await;
    let id = app.get(&list).await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/deliveries/{id}");
    eventually(wait, "the delivery failed for good", || async {
        app.get(&path).await.body["status"] == "failed"
    })
    .await;
    let delivery = app.get(&path).await.body;
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        3,
        "every attempt made, and failed: {delivery}"
    );
    for a in attempts {
        assert_eq!(a["status_code"], Value::Null, "{a}");
        let error = a["error"].as_str().unwrap();
        assert!(error.contains("certificate"), "the cause is named: {error}");
    }
    assert_eq!(endpoint.handshakes.load(Ordering::SeqCst), 0);
    assert_eq!(
        endpoint.requests.load(Ordering::SeqCst),
        0,
        "no request, so no payload, left"
    );
}
