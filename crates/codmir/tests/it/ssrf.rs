//! The SSRF guard: a matrix of non-public spellings refused at registration, and a real
//! private network (codmir in a network namespace, a canary HTTP receiver on a private address
//! across a veth pair, the test's own DNS server naming it) that codmir never reaches, by IP
//! literal or by a name resolving to it, unless `--allow-cidr` allows it.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{client, eventually, spawn_app_with, test_config};
use crate::process::ServerProcess;
use crate::receiver::Receiver;

/// At least 80 spellings of addresses that are not public, by category.
const REFUSED: &[&str] = &[
    // loopback, in every spelling the URL standard turns into 127.0.0.1, and names
    "http://127.0.0.1/",
    "http://127.1/",
    "http://127.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://127.255.255.254/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[2002:7f00:1::]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://localhost/",
    "http://LOCALHOST/",
    "http://localhost./",
    "http://a.localhost/",
    "http://x.y.localhost:8080/",
    // cloud metadata and link-local
    "http://169.254.169.254/",
    "http://169.254.169.254:80/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://2852039166/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[fe80::1]/",
    "http://[fe80::a9fe:a9fe]/",
    "http://169.254.0.1/",
    // private networks
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://012.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.0.1/",
    "http://192.168.255.255/",
    "http://[fc00::1]/",
    "http://[fd00::1]/",
    "http://[fdff:ffff::1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:192.168.1.1]/",
    "http://[64:ff9b::10.0.0.1]/",
    "http://[2002:c0a8:101::1]/",
    "http://[::10.0.0.1]/",
    // this network, unspecified
    "http://0.0.0.0/",
    "http://0/",
    "http://0.1.2.3/",
    "http://[::]/",
    "http://[::0]/",
    "http://[::ffff:0.0.0.0]/",
    // shared address space (carrier-grade NAT)
    "http://100.64.0.1/",
    "http://100.127.255.255/",
    // special purpose, documentation, benchmarking, multicast, reserved, broadcast
    "http://192.0.0.1/",
    "http://192.0.0.170/",
    "http://192.0.2.1/",
    "http://192.88.99.1/",
    "http://198.18.0.1/",
    "http://198.19.255.255/",
    "http://198.51.100.1/",
    "http://203.0.113.1/",
    "http://224.0.0.1/",
    "http://239.255.255.255/",
    "http://240.0.0.1/",
    "http://255.255.255.254/",
    "http://255.255.255.255/",
    "http://[ff02::1]/",
    "http://[ff0e::1]/",
    "http://[fec0::1]/",
    "http://[100::1]/",
    "http://[2001:db8::1]/",
    "http://[2001:2::1]/",
    "http://[3fff::1]/",
    "http://[5f00::1]/",
    "http://[64:ff9b:1::1]/",
    "http://[64:ff9b:1::8.8.8.8]/",
    "http://[::2:3:4:5]/",
    "http://[2001:10::1]/",
    // port 0
    "https://example.com:0/",
    "http://8.8.8.8:0/",
];

const ACCEPTED: &[&str] = &[
    "https://example.com/",
    "http://8.8.8.8/",
    "https://1.1.1.1:8443/x",
    "http://[2606:4700:4700::1111]/",
    "http://[::ffff:8.8.8.8]/",
    "http://[64:ff9b::808:808]/",
    "http://100.63.0.1/",
    "http://172.32.0.1/",
    "http://192.169.0.1/",
    "https://hooks.example.org/path?x=1",
    "http://[2002:808:808::1]/",
];

#[tokio::test]
async fn registration_refuses_every_non_public_spelling_and_accepts_public_ones() {
    assert!(REFUSED.len() >= 80, "{}", REFUSED.len());
    let app = spawn_app_with(codmir_server::Config {
        allow_private_targets: false,
        ..test_config()
    })
    .await;
    for url in REFUSED {
        let r = app
            .post("/v1/webhooks", json!({"url": url, "events": ["*"]}))
            .await;
        assert_eq!(r.status, 422, "{url} must be refused: {}", r.text);
        assert_eq!(r.body["error"]["field"], "url", "{url}");
    }
    for url in ACCEPTED {
        let r = app
            .post("/v1/webhooks", json!({"url": url, "events": ["*"]}))
            .await;
        assert_eq!(r.status, 201, "{url} must be accepted: {}", r.text);
    }

    let strict = spawn_app_with(codmir_server::Config {
        allow_private_targets: false,
        https_only: true,
        ..test_config()
    })
    .await;
    let r = strict
        .post(
            "/v1/webhooks",
            json!({"url": "http://8.8.8.8/", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("--https-only"), "{}", r.text);
    let r = strict
        .post(
            "/v1/webhooks",
            json!({"url": "https://8.8.8.8/", "events": ["*"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// A network namespace joined to this one by a veth pair, with a private address on each end;
/// codmir runs inside it. Names are resolved there by the machine's own resolver, reading the
/// machine's own files: the nameserver `/etc/resolv.conf` names is given, inside the namespace
/// only, to the test's DNS server ([`serve_dns`]), which answers the canary's name. No file is
/// written. Removed when dropped.
struct PrivateNet {
    ns: String,
    subnet: u8,
    /// The canary's name, which the test's DNS server answers with this end's address.
    name: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl PrivateNet {
    fn create() -> Self {
        let id = std::process::id();
        let subnet = (id % 200 + 20) as u8;
        let ns = format!("codmir-ssrf-{id}");
        assert!(
            ip(&["netns", "add", &ns]),
            "a network namespace (needs root and iproute2's `ip`)"
        );
        let net = PrivateNet {
            name: format!("canary-{id}.codmir.test"),
            ns: ns.clone(),
            subnet,
        };
        let (host_if, ns_if) = (format!("cmh{id}"), format!("cmn{id}"));
        let near = format!("{}/24", net.near());
        let far = format!("{}/24", net.far());
        let ok = ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]) && ip(&["link", "set", &ns_if, "netns", &ns])
            && ip(&["addr", "add", &near, "dev", &host_if])
            && ip(&["link", "set", &host_if, "up"])
            && ip(&[
                "netns", "exec", &ns, "ip", "addr", "add", &far, "dev", &ns_if,
            ])
            && ip(&["netns", "exec", &ns, "ip", "link", "set", &ns_if, "up"])
            && ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        assert!(ok, "setting up the veth pair");
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let nameserver: std::net::IpAddr = resolv
            .lines()
            .find_map(|l| l.strip_prefix("nameserver"))
            .and_then(|a| a.trim().parse().ok())
            .expect("a nameserver in /etc/resolv.conf");
        // Inside the namespace, the machine's nameserver is an address of its own loopback.
        let prefix = if nameserver.is_ipv4() { "32" } else { "128" };
        let at = format!("{nameserver}/{prefix}");
        ip(&["netns", "exec", &ns, "ip", "addr", "add", &at, "dev", "lo"]);
        let answer: std::net::Ipv4Addr = net.near().parse().unwrap();
        serve_dns(&ns, nameserver, net.name.clone(), answer);
        net
    }

    /// This end: where the canary listens.
    fn near(&self) -> String {
        format!("10.213.{}.1", self.subnet)
    }

    /// The namespace's end: where codmir listens.
    fn far(&self) -> String {
        format!("10.213.{}.2", self.subnet)
    }

    fn cidr(&self) -> String {
        format!("10.213.{}.0/24", self.subnet)
    }

    /// `codmir serve` inside the namespace, on `port` of its end of the pair (nothing else
    /// listens in a namespace this new).
    async fn serve(&self, port: u16, db: &str, extra: &[&str]) -> ServerProcess {
        let mut inside = Command::new("ip");
        inside
            .args(["netns", "exec", &self.ns])
            .arg(env!("CARGO_BIN_EXE_codmir"));
        let listen = format!("{}:{port}", self.far());
        ServerProcess::start_as(inside, &listen, db, extra, &[]).await
    }
}

impl Drop for PrivateNet {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.ns]);
    }
}

/// A DNS server on `at`:53 inside the namespace `ns`, on a thread of its own (a network
/// namespace is per thread; the socket stays in it): an A query for `name` gets `answer`, an
/// AAAA query for it no record, any other name NXDOMAIN. Returns once it listens.
fn serve_dns(ns: &str, at: std::net::IpAddr, name: String, answer: std::net::Ipv4Addr) {
    use std::os::fd::AsFd;
    let path = format!("/var/run/netns/{ns}");
    let (ready, listening) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let netns = std::fs::File::open(path).unwrap();
        rustix::thread::move_into_link_name_space(
            netns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let socket = std::net::UdpSocket::bind((at, 53)).unwrap();
        ready.send(()).unwrap();
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if let Some(reply) = dns_reply(&buf[..n], &name, answer) {
                let _ = socket.send_to(&reply, from);
            }
        }
    });
    listening
        .recv_timeout(Duration::from_secs(5))
        .expect("the test's DNS server listens");
}

/// The answer to one DNS query (RFC 1035: a 12-byte header, one question of labels, type and
/// class), or `None` for what is not one.
fn dns_reply(query: &[u8], name: &str, answer: std::net::Ipv4Addr) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    let ours = labels.join(".") == name;
    let a = ours && qtype == 1;
    let mut reply = Vec::with_capacity(64);
    reply.extend_from_slice(&query[..2]); // the query's id
    reply.extend_from_slice(if ours { &[0x81, 0x80] } else { &[0x81, 0x83] }); // NOERROR | NXDOMAIN
    reply.extend_from_slice(&[0, 1, 0, u8::from(a), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if a {
        // The question's name (a pointer to offset 12), A, IN, TTL 0, four bytes.
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        reply.extend_from_slice(&answer.octets());
    }
    Some(reply)
}

async fn register(s: &ServerProcess, key: &str, url: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{}/v1/webhooks", s.base))
        .bearer_auth(key)
        .json(&json!({"url": url, "events": ["project.created"]}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
#[ignore = "needs root and iproute2 (a network namespace and a veth pair of the test's own); .ci/run runs it"]
async fn a_private_network_is_never_reached_unless_its_cidr_is_allowed() {
    let net = PrivateNet::create();
    let canary = Receiver::start_at(&net.near()).await;
    // `http://10.213.x.1:PORT/webhooks/codmir`
    let port = canary
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let guarded = net.serve(8080, &db, &["--retry-schedule", "50ms"]).await;
    let key = guarded.printed_key().unwrap();
    let literal = format!("http://{}:{port}/literal", net.near());
    let named = format!("http://{}:{port}/named", net.name);
    let (status, body) = register(&guarded, &key, &literal).await;
    assert_eq!(
        status, 422,
        "the literal is refused at registration: {body}"
    );
    let (status, w) = register(&guarded, &key, &named).await;
    assert_eq!(
        status, 201,
        "a name is resolved at each attempt, not at registration"
    );
    guarded
        .post(&key, "/v1/projects", json!({"name": "P"}))
        .await;
    let url = format!(
        "{}/v1/webhooks/{}/deliveries",
        guarded.base,
        w["id"].as_str().unwrap()
    );
    eventually(Duration::from_secs(10), "the delivery failed", || async {
        crate::helpers::get_json(&url, &key).await["data"][0]["status"] == "failed"
    })
    .await;
    let d = crate::helpers::get_json(&url, &key).await;
    let error = d["data"][0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("not public"), "why: {error}");
    assert_eq!(canary.count(), 0, "the canary was never reached");
    drop(guarded);

    // With the network allowed, both the literal and the name arrive: the canary is there.
    let db = format!("sqlite://{}", dir.path().join("b.db").display());
    let allowed = net.serve(8081, &db, &["--allow-cidr", &net.cidr()]).await;
    let key = allowed.printed_key().unwrap();
    assert_eq!(register(&allowed, &key, &literal).await.0, 201);
    assert_eq!(register(&allowed, &key, &named).await.0, 201);
    allowed
        .post(&key, "/v1/projects", json!({"name": "P"}))
        .await;
    eventually(
        Duration::from_secs(10),
        "both reached the canary",
        || async { canary.count() == 2 },
    )
    .await;
}
