//! A `codmir serve` process under test, and what the kernel says about its memory and CPU.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) struct Server {
    child: Child,
    pub base: String,
    pub key: Option<String>,
    pub pid: u32,
    /// From spawn to the first 200 of /healthz.
    pub startup: Duration,
}

/// PostgreSQL nodes (and `codmir keys create` beside them) must share a master key; a fixed
/// one serves the bench.
pub(crate) const MASTER_KEY: &str = "YmVuY2gtbWFzdGVyLWtleS1vZi0zMi1ieXRlcy1vayE=";

/// Makes an API key for `workspace` in `database_url` with `codmir keys create`.
pub(crate) async fn new_key(binary: &Path, database_url: &str, workspace: &str) -> Result<String> {
    let out = Command::new(binary)
        .args(["keys", "create", "--database-url", database_url])
        .args(["--workspace", workspace, "--user", "bench"])
        .env("CODMIR_MASTER_KEY", MASTER_KEY)
        .env("CODMIR_LOG", "warn")
        .output()
        .await
        .context("running codmir keys create")?;
    if !out.status.success() {
        bail!(
            "codmir keys create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(str::to_owned)
        .context("codmir keys create printed no key")
}

/// The `codmir` binary next to this one (both are built by `cargo build --release`).
pub(crate) fn default_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name("codmir")
}

impl Server {
    pub(crate) async fn start(binary: &Path, database_url: &str, extra: &[&str]) -> Result<Self> {
        Self::start_under(&[], binary, database_url, extra).await
    }

    /// [`Server::start`] with the command line `wrapper` in front (e.g. valgrind's).
    pub(crate) async fn start_under(
        wrapper: &[String],
        binary: &Path,
        database_url: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let listen = free_address()?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .args([
                "serve",
                "--database-url",
                database_url,
                "--listen",
                &listen,
                "--allow-private-targets",
            ])
            .args(extra)
            .env("CODMIR_LOG", "warn")
            // The bench measures what one workspace can push through: it drives one key far
            // past any per-key limit and fans out to 1,000 webhooks on one host, so the
            // tenant-fairness bounds are lifted (older binaries ignore these).
            .env("CODMIR_API_RATE_LIMIT", "off")
            .env("CODMIR_MAX_WEBHOOKS_PER_WORKSPACE", "100000")
            .env("CODMIR_MAX_IN_FLIGHT_PER_WORKSPACE", "65535")
            .env("CODMIR_MAX_IN_FLIGHT_PER_HOST", "65535")
            .env("CODMIR_MASTER_KEY", MASTER_KEY);
        Self::launch(command, &listen)
            .await
            .with_context(|| format!("starting {}", binary.display()))
    }

    /// This benchmark's own relay (see `relay.rs`), posting to `target`.
    pub(crate) async fn relay(target: &str) -> Result<Self> {
        let listen = free_address()?;
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["--relay-listen", &listen, "--relay-target", target]);
        Self::launch(command, &listen)
            .await
            .context("starting the relay")
    }

    /// Spawns `command`, which serves on `listen`, and waits for its first `/healthz` 200.
    async fn launch(mut command: Command, listen: &str) -> Result<Self> {
        let began = Instant::now();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().context("no pid")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("cmk_") {
                    let _ = tx.send(line);
                }
            }
        });
        let base = format!("http://{listen}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("{base} did not answer /healthz within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let startup = began.elapsed();
        // The key is printed before the server listens, but its reader task may lag behind.
        let key = match rx.try_recv() {
            Ok(k) => Some(k),
            Err(_) => tokio::time::timeout(Duration::from_millis(300), rx.recv())
                .await
                .ok()
                .flatten(),
        };
        Ok(Self {
            child,
            base,
            key,
            pid,
            startup,
        })
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage::of(self.pid)
    }

    pub(crate) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// A loopback address with a port free right now.
fn free_address() -> Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("127.0.0.1:{port}"))
}

/// Memory and CPU of a process from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Usage {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    /// User plus system CPU time in seconds.
    pub cpu_secs: f64,
}

impl Usage {
    pub(crate) fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let after = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name; 100 ticks/s.
        let cpu_secs = (ticks(11) + ticks(12)) as f64 / 100.0;
        Self {
            rss_kib: field("VmRSS:"),
            peak_rss_kib: field("VmHWM:"),
            cpu_secs,
        }
    }
}
