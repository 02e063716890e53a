//! The dashboard: served by `codmir serve` with a strict policy, and driven end to end in
//! headless Chromium by `tests/browser/dashboard.mjs` (playwright-core and axe-core from npm,
//! Debian's `chromium`), which saves a screenshot of each page.

use std::path::Path;

use crate::helpers::client;
use crate::process::ServerProcess;

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let s = ServerProcess::start(&db, &[]).await;
    let c = client();
    let index = c.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(index.status(), 200);
    let csp = index.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(index.headers()["x-frame-options"], "DENY");
    assert!(
        index.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = index.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/dashboard/app.js">"#));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from elsewhere"
    );
    for (file, kind) in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let r = c
            .get(format!("{}/dashboard/{file}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{file}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    let missing = c
        .get(format!("{}/dashboard/nope.js", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
#[ignore = "needs Chromium (apt-get install chromium) and npm; .ci/run installs them and runs it"]
async fn the_dashboard_end_to_end_in_a_real_browser() {
    let browser = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !browser.join("node_modules/playwright-core").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&browser)
            .status()
            .expect("npm runs");
        assert!(status.success(), "npm ci in {}", browser.display());
    }
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let s = ServerProcess::start(
        &db,
        &["--allow-private-targets", "--retry-schedule", "200ms,60s"],
    )
    .await;
    let key = s.printed_key().unwrap();
    // Screenshots are the run's artifacts, beside the build's; with CODMIR_SCREENSHOTS set
    // (docs/screenshots, as docs/dashboard.md says), they are written there instead.
    let shots = match std::env::var_os("CODMIR_SCREENSHOTS") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots"),
    };
    let base = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("dashboard.mjs")
            .current_dir(&browser)
            .env("BASE", base)
            .env("KEY", key)
            .env("SHOTS", &shots)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{stderr}\nserver log:\n{}",
        s.stderr().join("\n")
    );
    assert!(
        stdout.contains("ok - signing out forgets the key"),
        "{stdout}"
    );
}
