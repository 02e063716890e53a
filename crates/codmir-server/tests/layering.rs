//! The layering invariants of ARCHITECTURE.md, checked against the source: each driver and
//! each HTTP library is named only in the modules allowed to know it.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its path relative to `src/` (`/`-separated).
fn sources() -> Vec<(String, String)> {
    sources_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// Every `.rs` file under `src`, with its path relative to it.
fn sources_of(src: &Path) -> Vec<(String, String)> {
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
    let mut files = Vec::new();
    walk(src, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(src)
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
    lines_with(&sources(), &format!("{crate_name}::"), allowed)
}

/// The lines of code (not comments) of `sources` outside `allowed` that contain `needle`.
fn lines_with(sources: &[(String, String)], needle: &str, allowed: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in sources {
        if allowed.iter().any(|a| path.starts_with(a)) {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if code.contains(needle) {
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
fn core_does_no_io_and_has_no_async_code() {
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("../codmir-core");
    let sources = sources_of(&core.join("src"));
    for io in [
        "std::fs",
        "TcpStream",
        "TcpListener",
        "UdpSocket",
        "ToSocketAddrs",
        "std::process",
        "tokio",
        "async fn",
        ".await",
    ] {
        let found = lines_with(&sources, io, &[]);
        assert!(found.is_empty(), "{io} in codmir-core: {found:#?}");
    }
    let manifest = std::fs::read_to_string(core.join("Cargo.toml")).unwrap();
    for runtime in ["tokio", "hyper", "reqwest", "rusqlite", "postgres", "axum"] {
        assert!(
            !manifest.contains(runtime),
            "codmir-core depends on {runtime}"
        );
    }
}

/// SQL is text known at compile time (`store/sql.rs`): a statement built with `format!` on
/// every call is what the one-text store replaced.
#[test]
fn no_sql_statement_is_built_at_run_time() {
    let sources = sources();
    let mut found = Vec::new();
    for verb in ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH"] {
        found.extend(lines_with(&sources, &format!("format!(\"{verb} "), &[]));
    }
    assert!(found.is_empty(), "{found:#?}");
}

/// Every background task is spawned through `Tasks` (`tasks.rs`), which shutdown waits for;
/// the only other spawns are awaited where they are made: the server's own task (`lib.rs`,
/// awaited by `Running::wait`), opening SQLite and its reads
/// (`spawn_blocking`), a PostgreSQL batch in a task of its own (so that a panicking unit
/// ends its batch, not its batcher), and the connection that runs migrations.
#[test]
fn every_task_is_spawned_through_tasks_or_awaited_where_it_is_made() {
    let awaited = [
        "tasks.rs",
        "lib.rs",
        "store/sqlite/mod.rs",
        "store/postgres/batch.rs",
        "store/postgres/mod.rs",
    ];
    for spawn in [
        "tokio::spawn",
        "tokio::task::spawn",
        "std::thread::spawn",
        "runtime.spawn",
    ] {
        let found = lines_with(&sources(), spawn, &awaited);
        assert!(found.is_empty(), "{spawn}: {found:#?}");
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
