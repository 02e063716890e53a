//! The layering invariants of ARCHITECTURE.md, checked against the source: each driver and
//! each HTTP library is named only in the modules allowed to know it.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its path relative to `src/` (`/`-separated).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&src)
                .expect("under src/")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&p).expect("a readable source file");
            (rel, text)
        })
        .collect()
}

/// The files outside `allowed` (path prefixes) whose code, not comments, names `crate_name`.
fn offenders(crate_name: &str, allowed: &[&str]) -> Vec<String> {
    let needle = format!("{crate_name}::");
    let mut found = Vec::new();
    for (path, text) in sources() {
        if allowed.iter().any(|a| path.starts_with(a)) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if code.contains(&needle) {
                found.push(format!("{path}:{}: {}", n + 1, code));
            }
        }
    }
    found
}

#[test]
fn sql_drivers_are_named_only_in_their_backends() {
    for (driver, home) in [
        ("rusqlite", "store/sqlite/"),
        ("tokio_postgres", "store/postgres/"),
        ("deadpool_postgres", "store/postgres/"),
    ] {
        let found = offenders(driver, &[home]);
        assert!(found.is_empty(), "{driver} outside {home}: {found:#?}");
    }
}

#[test]
fn http_is_known_only_where_it_belongs() {
    // Inbound HTTP: the API, and `lib.rs` and `listen.rs`, which serve it.
    let found = offenders("axum", &["api/", "lib.rs", "listen.rs"]);
    assert!(found.is_empty(), "axum outside api/: {found:#?}");
    // hyper: the inbound listener, and the delivery client's connections.
    let found = offenders("hyper", &["listen.rs", "delivery/"]);
    assert!(
        found.is_empty(),
        "hyper outside listen.rs and delivery/: {found:#?}"
    );
    // Outbound TLS: the delivery engine's connections only.
    for tls in ["tokio_rustls", "rustls_platform_verifier"] {
        let found = offenders(tls, &["delivery/connect.rs"]);
        assert!(
            found.is_empty(),
            "{tls} outside delivery/connect.rs: {found:#?}"
        );
    }
}

#[test]
fn the_check_sees_what_it_looks_for() {
    // Without an allowed home, each name is found: the test above could fail.
    assert!(!offenders("rusqlite", &[]).is_empty());
    assert!(!offenders("axum", &[]).is_empty());
    assert!(!offenders("hyper", &[]).is_empty());
    assert!(!offenders("tokio_rustls", &[]).is_empty());
}
