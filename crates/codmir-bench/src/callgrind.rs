//! Instruction counts of a server run under valgrind's callgrind, split by what the work was
//! for: the count a change is judged by, since it does not move with the machine's load the
//! way wall-clock throughput does (±30 % between runs here).
//!
//! The server starts with instrumentation off (`--instr-atstart=no`, so its start-up is not
//! counted and runs faster); `callgrind_control` turns it on, zeroes the counters before a
//! workload and dumps them after it, one file per thread (`--separate-threads=yes`). Each
//! thread's dump is read through `callgrind_annotate --inclusive=yes`, and its instructions
//! go to the part whose entry function they ran under.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

/// The command line that runs the server under callgrind, writing dumps into `dir`.
pub(crate) fn wrapper(dir: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--separate-threads=yes".into(),
        "--instr-atstart=no".into(),
        format!("--callgrind-out-file={}/cg.%p", dir.display()),
    ]
}

/// Sends `command` (`--instr=on`, `--zero`, `--dump`) to the callgrind run `pid`.
pub(crate) async fn control(pid: u32, command: &str) -> Result<()> {
    let out = Command::new("callgrind_control")
        .args([command, &pid.to_string()])
        .output()
        .await
        .context("running callgrind_control (is valgrind installed?)")?;
    if !out.status.success() {
        bail!(
            "callgrind_control {command} {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Instructions of one dump, by part. On a tokio worker thread the API, delivery and engine
/// are told apart by the task they ran in; `runtime` is the rest of those threads (the
/// scheduler, timers, epoll, the accept loop).
#[derive(Debug, Clone, Default)]
pub(crate) struct Split {
    /// The per-connection tasks of the API: hyper, axum, the handlers.
    pub(crate) api: u64,
    /// The SQLite writer thread: every unit of work and commit.
    pub(crate) writer: u64,
    /// The part of `writer` spent on recording attempts' outcomes.
    pub(crate) writer_outcomes: u64,
    /// Units of work on PostgreSQL (tasks, not a thread).
    pub(crate) store: u64,
    /// Attempt tasks: signing, the HTTP client, the response.
    pub(crate) delivery: u64,
    /// The part of `delivery` spent in HMAC-SHA256 (both signatures of each attempt), which
    /// valgrind runs on SHA-256's software path: it does not emulate SHA-NI.
    pub(crate) delivery_signing: u64,
    /// The dispatcher loop and the recorder task.
    pub(crate) engine: u64,
    /// Blocking-pool threads: SQLite reads.
    pub(crate) readers: u64,
    pub(crate) runtime: u64,
    pub(crate) total: u64,
}

impl Split {
    /// The parts in the order they are printed, with their names.
    pub(crate) fn parts(&self) -> [(&'static str, u64); 7] {
        [
            ("api", self.api),
            ("writer", self.writer),
            ("store", self.store),
            ("delivery", self.delivery),
            ("engine", self.engine),
            ("readers", self.readers),
            ("runtime", self.runtime),
        ]
    }
}

/// Entry functions of the parts (inclusive costs; exact names as callgrind demangles them).
const API: &str = "<codmir_server::listen::Connection as core::future::future::Future>::poll";
const DELIVERY: &str = "codmir_server::delivery::dispatcher::start_ready::{{closure}}";
const DISPATCHER: &str = "codmir_server::delivery::dispatcher::Dispatcher::run::{{closure}}";
const RECORDER: &str = "codmir_server::delivery::recorder::record_outcomes::{{closure}}";
const RECORDER_UNIT: &str =
    "codmir_server::delivery::recorder::record_outcomes::{{closure}}::{{closure}}::{{closure}}";
const WRITER: &str = "codmir_server::store::sqlite::writer_loop";
const HMAC: &str = "codmir_core::sign::hmac";
/// PostgreSQL's batches of checked units run in these tasks, not in `run_job`.
const PG_BATCHER: &str = "codmir_server::store::postgres::batch::run_batch::{{closure}}";
const WORKER: &str = "tokio::runtime::scheduler::multi_thread::worker::Context::run";
const BLOCKING: &str = "tokio::runtime::blocking::pool::Inner::run";

/// Reads dump number `dump` of the run `pid` in `dir` (all its threads).
pub(crate) async fn read_dump(dir: &Path, pid: u32, dump: u32) -> Result<Split> {
    let prefix = format!("cg.{pid}.{dump}-");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no dump {prefix}* in {}", dir.display());
    }
    let mut split = Split::default();
    for file in files {
        let out = Command::new("callgrind_annotate")
            .args(["--inclusive=yes", "--threshold=100"])
            .arg(&file)
            .output()
            .await
            .context("running callgrind_annotate")?;
        let costs = inclusive(&String::from_utf8_lossy(&out.stdout));
        add_thread(&mut split, &costs);
    }
    Ok(split)
}

/// One thread's instructions into the parts.
fn add_thread(split: &mut Split, costs: &BTreeMap<String, u64>) {
    let of = |name: &str| costs.get(name).copied().unwrap_or(0);
    let total = of("PROGRAM TOTALS");
    split.total += total;
    if of(WRITER) > 0 {
        split.writer += total;
        split.writer_outcomes += of(RECORDER_UNIT);
    } else if of(WORKER) > 0 {
        let api = of(API);
        let delivery = of(DELIVERY);
        let engine = of(DISPATCHER) + of(RECORDER);
        let store: u64 = costs
            .iter()
            .filter(|(name, _)| {
                name.starts_with("codmir_server::store::postgres::")
                    && name.ends_with("::run_job::{{closure}}")
            })
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0)
            + of(PG_BATCHER);
        split.api += api;
        split.delivery += delivery;
        split.delivery_signing += of(HMAC);
        split.engine += engine;
        split.store += store;
        split.runtime += total.saturating_sub(api + delivery + engine + store);
    } else if of(BLOCKING) > 0 {
        split.readers += total;
    } else {
        split.runtime += total;
    }
}

/// Inclusive instructions per function from `callgrind_annotate --inclusive=yes` output.
/// A function is listed once per source file it has code from (inlining); its inclusive
/// count is the largest of those lines. Recursive entries (`name'2`) are left out: they are
/// counted within the outer call already.
fn inclusive(annotate: &str) -> BTreeMap<String, u64> {
    let mut costs = BTreeMap::new();
    for line in annotate.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        // "(12.3%)  file:function [object]" or "(100.0%)  PROGRAM TOTALS"
        let Some((_, rest)) = rest.split_once(')') else {
            continue;
        };
        let rest = rest.trim();
        let name = if rest == "PROGRAM TOTALS" {
            rest
        } else {
            let without_object = rest.split(" [").next().unwrap_or(rest);
            match without_object.split_once(':') {
                Some((_, function)) => function,
                None => continue,
            }
        };
        if name.contains('\'') {
            continue;
        }
        let slot = costs.entry(name.to_owned()).or_insert(0);
        *slot = (*slot).max(count);
    }
    costs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotate_lines_give_each_function_its_largest_inclusive_count() {
        let out = "\
29,091,369 (100.0%)  PROGRAM TOTALS
14,277,588 (49.08%)  /w/src/delivery/dispatcher.rs:codmir_server::delivery::dispatcher::start_ready::{{closure}} [/w/codmir]
14,145,194 (48.62%)  /w/src/delivery/attempt.rs:codmir_server::delivery::dispatcher::start_ready::{{closure}}
49,245,227 (169.3%)  /r/axum/src/util.rs:<axum::util::MapIntoResponseFuture<F> as core::future::future::Future>::poll'2 [/w/codmir]
 8,864,496 (30.47%)  /w/src/listen.rs:<codmir_server::listen::Connection as core::future::future::Future>::poll [/w/codmir]
 1,000,000 ( 3.44%)  /r/tokio/src/runtime/scheduler/multi_thread/worker.rs:tokio::runtime::scheduler::multi_thread::worker::Context::run [/w/codmir]
";
        let costs = inclusive(out);
        assert_eq!(costs["PROGRAM TOTALS"], 29_091_369);
        assert_eq!(costs[DELIVERY], 14_277_588);
        assert!(!costs.keys().any(|k| k.contains('\'')));
        let mut split = Split::default();
        add_thread(&mut split, &costs);
        assert_eq!(split.api, 8_864_496);
        assert_eq!(split.delivery, 14_277_588);
        assert_eq!(split.runtime, 29_091_369 - 8_864_496 - 14_277_588);
    }
}
