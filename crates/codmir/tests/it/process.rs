//! The `codmir` binary run as a child process, as a user or an operator runs it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::{answers, client, eventually};

/// The master key test servers on PostgreSQL are given (32 bytes in base64).
pub(crate) const TEST_MASTER_KEY: &str = "dGVzdC1tYXN0ZXIta2V5LW9mLTMyLWJ5dGVzLW9rISE=";

pub(crate) fn codmir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_codmir"))
}

/// `codmir keys create …` on `db`; returns the key from the last line of stdout.
pub(crate) fn create_key(db: &str, workspace: &str, user: &str) -> String {
    let out = codmir()
        .args([
            "keys",
            "create",
            "--database-url",
            db,
            "--workspace",
            workspace,
            "--user",
            user,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("cmk_"), "{stdout}");
    key
}

/// What a command that ran to its end printed.
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end, or kills it and returns `None` after `limit` (a command that should
/// have refused at once but serves instead).
pub(crate) fn finish_within(mut cmd: Command, limit: Duration) -> Option<Finished> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (Arc::default(), Arc::default());
    let out = collect_lines(child.stdout.take().unwrap(), Arc::clone(&stdout));
    let err = collect_lines(child.stderr.take().unwrap(), Arc::clone(&stderr));
    // The exit is waited for on a thread of its own, with `limit` as the deadline.
    let pid = child.id().to_string();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let Ok(Ok(status)) = exit.recv_timeout(limit) else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let _ = exit.recv();
        return None;
    };
    // The pipes close with the process, which ends their readers.
    let (out, err) = (out.join(), err.join());
    assert!(out.is_ok() && err.is_ok());
    let text = |lines: &Arc<Mutex<Vec<String>>>| lines.lock().unwrap().join("\n");
    Some(Finished {
        status,
        stdout: text(&stdout),
        stderr: text(&stderr),
    })
}

/// A long-running `codmir` child (a server, `listen`) whose output lines are collected as
/// they come; killed when dropped.
pub(crate) struct Spawned {
    pub child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

pub(crate) struct ServerProcess {
    proc: Spawned,
    pub base: String,
}

impl std::ops::Deref for ServerProcess {
    type Target = Spawned;
    fn deref(&self) -> &Spawned {
        &self.proc
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut Spawned {
        &mut self.proc
    }
}

/// Collects the lines of `pipe` into `lines` on a thread of its own.
fn collect_lines(
    pipe: impl std::io::Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    })
}

impl ServerProcess {
    /// Starts `codmir serve` on `db` and a free port with `extra` flags; returns once it answers.
    pub(crate) async fn start(db: &str, extra: &[&str]) -> Self {
        Self::start_with_env(db, extra, &[]).await
    }

    /// [`ServerProcess::start`] with environment variables set for the server.
    pub(crate) async fn start_with_env(db: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_as(codmir(), &format!("127.0.0.1:{port}"), db, extra, env).await
    }

    /// `serve` run by `serve` (the binary, or a command that runs it, such as `ip netns exec
    /// NS codmir`) listening on `listen`; returns once it answers there.
    pub(crate) async fn start_as(
        mut serve: Command,
        listen: &str,
        db: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        if db.starts_with("postgres") {
            // PostgreSQL nodes must be given the master key (SQLite makes its own file).
            serve.env("CODMIR_MASTER_KEY", TEST_MASTER_KEY);
        }
        serve
            .args(["serve", "--database-url", db, "--listen", listen])
            .args(extra)
            .envs(env.iter().copied());
        let proc = Spawned::start(serve);
        let base = format!("http://{listen}");
        let health = format!("{base}/healthz");
        eventually(Duration::from_secs(10), "server up", || {
            answers(&health, 200)
        })
        .await;
        Self { proc, base }
    }

    /// POSTs `body` to `path` with `key`; the answer must be a success.
    pub(crate) async fn post(
        &self,
        key: &str,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let r = client()
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The API key printed on a first start, if any.
    pub(crate) fn printed_key(&self) -> Option<String> {
        self.stdout().into_iter().find(|l| l.starts_with("cmk_"))
    }
}

impl Spawned {
    /// Starts `cmd` with its stdout and stderr collected.
    pub(crate) fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, stderr) = (Arc::default(), Arc::default());
        collect_lines(child.stdout.take().unwrap(), Arc::clone(&stdout));
        collect_lines(child.stderr.take().unwrap(), Arc::clone(&stderr));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// What it logged on stderr so far.
    pub(crate) fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// What it printed on stdout so far.
    pub(crate) fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) and waits for the exit.
    pub(crate) fn stop_with(&mut self, signal: &str) -> Option<ExitStatus> {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([&format!("-{signal}"), &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
