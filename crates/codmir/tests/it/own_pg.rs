//! A PostgreSQL server of the test's own (`initdb` and `pg_ctl` in a temp dir, on a free
//! port), for tests that stop and restart the database: never the shared one on 5432 that
//! other tests are using.

use std::path::PathBuf;
use std::process::Command;

pub(crate) struct OwnPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed under /usr/lib/postgresql")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL with pg_ctl")
}

/// Runs a PostgreSQL program as the `postgres` user when we are root (it refuses root).
fn as_postgres(program: PathBuf) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl OwnPostgres {
    pub(crate) fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.path().join("data");
        let out = as_postgres(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self { dir, bin, port };
        pg.pg_ctl_start();
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories='{}' -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = as_postgres(self.bin.join("pg_ctl"))
            .args(["start", "-w", "-l"])
            .arg(self.dir.path().join("log"))
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (fast: open sessions are cut).
    pub(crate) fn stop(&self) {
        self.stop_with("fast");
    }

    /// Stops the server in `mode`: `fast` (sessions cut, a clean shutdown) or `immediate`
    /// (every process killed at once, recovery at the next start: a crash).
    pub(crate) fn stop_with(&self, mode: &str) {
        let out = as_postgres(self.bin.join("pg_ctl"))
            .args(["stop", "-w", "-m", mode, "-D"])
            .arg(self.data())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it again on the same port, with the same data.
    pub(crate) fn restart(&self) {
        self.pg_ctl_start();
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data())
            .output();
    }
}

/// The pending deliveries leased right now on the database at `url`: (id, owner, expiry).
pub(crate) async fn leased(url: &str) -> std::collections::HashSet<(String, String, i64)> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query(
            "SELECT id, lease_owner, lease_expires_at FROM deliveries \
             WHERE status = 'pending' AND lease_owner IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Waits until no lease held at a cut (`at_cut`, from [`leased`]) is still held as it was:
/// the healthy node's attempts finished, and what the cut-off node held was taken over
/// once its leases ran out.
pub(crate) async fn taken_over(
    url: &str,
    at_cut: &std::collections::HashSet<(String, String, i64)>,
) {
    crate::helpers::eventually(
        std::time::Duration::from_secs(30),
        "every lease held at the cut taken over or done",
        || async { leased(url).await.is_disjoint(at_cut) },
    )
    .await;
}
