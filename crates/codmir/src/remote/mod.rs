//! The commands that talk to a running server over its HTTP API (`webhooks`, `deliveries`,
//! `replay`, `events`, `event-types`, `listen`, `trigger`): a thin client, tables for people, the API's own JSON
//! with `--json`, the API's errors shown as they are, and exit codes that say what happened.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

pub(crate) mod deliveries;
pub(crate) mod events;
pub(crate) mod listen;
pub(crate) mod trigger;
pub(crate) mod webhooks;

/// A command that did not succeed: the message for stderr and the exit code (listed in
/// `codmir --help`; 2 is also clap's code for bad usage).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn api(message: String) -> Self {
        Self { code: 1, message }
    }
    pub(crate) fn usage(message: String) -> Self {
        Self { code: 2, message }
    }
    fn unreachable(message: String) -> Self {
        Self { code: 3, message }
    }
    fn auth(message: String) -> Self {
        Self { code: 4, message }
    }
    pub(crate) fn not_found(message: String) -> Self {
        Self { code: 5, message }
    }

    pub(crate) fn exit(&self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::api(format!("{e:#}"))
    }
}

pub(crate) type Outcome = Result<(), Failure>;

/// A `--since`/`--until` value as the API takes it (RFC 3339): an RFC 3339 time as it is, a
/// date (`2026-12-07`, its midnight UTC), or an age (`30m`, `2h`, `3d`: that long ago). Bad
/// usage otherwise (exit 2).
pub(crate) fn time_arg(raw: &str) -> Result<String, String> {
    use codmir_core::time::Timestamp;
    if Timestamp::parse_rfc3339(raw, "time").is_ok() {
        return Ok(raw.to_owned());
    }
    let date = format!("{raw}T00:00:00Z");
    if raw.len() == 10 && Timestamp::parse_rfc3339(&date, "time").is_ok() {
        return Ok(date);
    }
    match codmir_core::retry::parse_duration(raw) {
        Ok(age) => {
            let now = Timestamp::now().as_millis();
            let ago = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            Ok(Timestamp::from_millis(now.saturating_sub(ago)).to_rfc3339_millis())
        }
        Err(_) => Err(format!(
            "`{raw}` is not a time: give an RFC 3339 time (2026-12-07T09:00:00Z), a date \
             (2026-12-07) or an age (30m, 2h, 3d)"
        )),
    }
}

/// An API error's message as the CLI says it: the commands to type, not the request bodies
/// the API's own message names.
fn in_cli_words(code: &str, message: &str) -> String {
    match code {
        "webhook_disabled" => {
            let id = message
                .split_whitespace()
                .find(|w| w.starts_with("wh_"))
                .unwrap_or("wh_…");
            format!("webhook {id} is disabled; turn it back on first: codmir webhooks enable {id}")
        }
        "rotation_in_grace_period" => {
            message.replace("grace_period_seconds: 0", "--grace-period 0s")
        }
        _ => message.to_owned(),
    }
}

/// Where the server is and how to authenticate, shared by every API command.
#[derive(clap::Args, Clone)]
pub(crate) struct Remote {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "CODMIR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// An API key (`cmk_…`), as `serve` printed it or `codmir keys create` made it.
    #[arg(long, global = true, env = "CODMIR_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the API's JSON instead of a table, for scripts.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

/// An API client for one command.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
    pub(crate) json: bool,
}

impl Api {
    pub(crate) fn new(remote: &Remote) -> Result<Self, Failure> {
        let key = remote.api_key.clone().ok_or_else(|| {
            Failure::usage("no API key: pass --api-key or set CODMIR_API_KEY".into())
        })?;
        codmir_server::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Long enough for a ping, which waits for the endpoint's answer.
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Failure::api(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: remote.url.trim_end_matches('/').to_owned(),
            key,
            json: remote.json,
        })
    }

    /// The API key this client authenticates with.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<Value, Failure> {
        let query: Vec<(&str, String)> = query
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
            .collect();
        self.call(Method::GET, path, &query, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Result<Value, Failure> {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    pub(crate) async fn patch(&self, path: &str, body: Value) -> Result<Value, Failure> {
        self.call(Method::PATCH, path, &[], Some(body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.call(Method::DELETE, path, &[], None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.key)
            .query(query);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            Failure::unreachable(format!(
                "cannot reach codmir at {}: {} (is `codmir serve` running there? set --url or CODMIR_URL)",
                self.base,
                error_chain(&e)
            ))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            Failure::unreachable(format!(
                "reading the answer to {method} {path}: {}",
                error_chain(&e)
            ))
        })?;
        if status.is_success() {
            return Ok(if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            });
        }
        // The API's error as it is: its message (and field), after the status.
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let error = &body["error"];
        let mut message = match error["message"].as_str() {
            Some(m) => {
                let code = error["code"].as_str().unwrap_or("error");
                format!("{} {code}: {}", status.as_u16(), in_cli_words(code, m))
            }
            None => format!("{status} from {method} {path}: {}", text.trim()),
        };
        if let Some(field) = error["field"].as_str() {
            let _ = write!(message, " (field `{field}`)");
        }
        Err(match status.as_u16() {
            401 | 403 => Failure::auth(format!(
                "{message} — the server refused the API key (check --api-key or CODMIR_API_KEY)"
            )),
            404 => Failure::not_found(message),
            _ => Failure::api(message),
        })
    }

    /// Prints `value` as JSON with `--json`, otherwise hands it to `human`.
    pub(crate) fn show(&self, value: &Value, human: impl FnOnce(&Value)) {
        if self.json {
            print_json(value);
        } else {
            human(value);
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(out, ": {s}");
        source = s.source();
    }
    out
}

pub(crate) fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Columns aligned to their widest cell, headers first.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ");
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `key: value` lines, keys aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in pairs {
        println!("{:<width$} {v}", format!("{k}:"));
    }
}

/// A JSON value as a table cell: strings bare, null as `-`.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Rows of a list answer; with more pages, says on stderr how to get the next.
pub(crate) fn list_rows(list: &Value, row: impl Fn(&Value) -> Vec<String>) -> Vec<Vec<String>> {
    let rows = list["data"]
        .as_array()
        .map(|items| items.iter().map(row).collect())
        .unwrap_or_default();
    if let Some(cursor) = list["next_cursor"].as_str() {
        eprintln!("(more: add --cursor {cursor})");
    }
    rows
}

/// `?limit=&cursor=` of every list command.
#[derive(clap::Args)]
pub(crate) struct Paging {
    /// Items per page, 1–100.
    #[arg(long)]
    limit: Option<u32>,
    /// The cursor a previous page ended with.
    #[arg(long)]
    cursor: Option<String>,
}

impl Paging {
    pub(crate) fn query(&self) -> [(&'static str, Option<String>); 2] {
        [
            ("limit", self.limit.map(|l| l.to_string())),
            ("cursor", self.cursor.clone()),
        ]
    }
}
