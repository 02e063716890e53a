//! The master key that seals webhook secrets at rest: where `serve` finds it (and, for a new
//! SQLite database, makes it), and `codmir secrets rotate-master-key`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use codmir_server::Store;
use codmir_server::store::seal::{KeyRing, MasterKey, read_key_file, write_key_file};
use codmir_server::store::{StoreOptions, sqlite_path};

use crate::remote::Failure;

/// Where the master keys are.
#[derive(clap::Args, Clone)]
pub(crate) struct MasterKeyArgs {
    /// File of master keys (32 bytes in base64, one per line, the current one first; mode
    /// 0600). Default for SQLite: PATH.key beside the database, made on its first start.
    /// Instead of a file, CODMIR_MASTER_KEY may hold the keys (comma-separated). PostgreSQL
    /// nodes must be given the same keys.
    #[arg(long, env = "CODMIR_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
}

impl MasterKeyArgs {
    /// The file of the keys, if they are in one: the flag's, or the one beside a SQLite db.
    fn file(&self, database_url: &str) -> Option<PathBuf> {
        self.master_key_file
            .clone()
            .or_else(|| sqlite_path(database_url).map(|p| PathBuf::from(format!("{p}.key"))))
    }

    /// The key ring `serve` seals with. With `create`, a SQLite database without a key file
    /// gets a new one (said on stderr).
    pub(crate) fn ring(&self, database_url: &str, create: bool) -> Result<KeyRing> {
        if let Ok(raw) = std::env::var("CODMIR_MASTER_KEY") {
            let keys = raw
                .split(',')
                .map(MasterKey::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("CODMIR_MASTER_KEY: {e}"))?;
            if keys.is_empty() {
                bail!("CODMIR_MASTER_KEY is empty");
            }
            return Ok(KeyRing::new(&keys));
        }
        let Some(file) = self.file(database_url) else {
            bail!(
                "PostgreSQL nodes must be given the master key that seals webhook secrets: \
                 CODMIR_MASTER_KEY or --master-key-file, the same on every node (make one with \
                 `head -c 32 /dev/urandom | base64`)"
            );
        };
        if !file.exists() && create {
            let key = MasterKey::generate();
            write_key_file(&file, std::slice::from_ref(&key))
                .with_context(|| format!("writing the master key file {}", file.display()))?;
            // A log line (not a bare print), so that it keeps the chosen log format.
            tracing::warn!(
                file = %absolute(&file).display(),
                "made a master key for webhook secrets (mode 0600); back it up with the \
                 database: without it the secrets cannot be read"
            );
            if let Some(tree) = git_work_tree(&absolute(&file)) {
                tracing::warn!(
                    work_tree = %tree.display(),
                    "the master key file is inside a git work tree: make sure git ignores it \
                     (e.g. `*.db.key` in .gitignore); committed, it would unseal every webhook \
                     secret"
                );
            }
        }
        KeyRing::from_file(&file).map_err(|e| anyhow::anyhow!(e))
    }
}

/// The git work tree `path` is in: the nearest directory above it holding `.git`.
fn git_work_tree(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|dir| dir.join(".git").exists())
        .map(Path::to_path_buf)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[derive(Subcommand)]
pub(crate) enum SecretsCommand {
    /// Make a new master key, put it first in the key file (the old ones stay, to open what
    /// they sealed) and seal every webhook secret again under it. Servers running on the
    /// database read the file again when they meet the new key; run this again after they
    /// have, to catch what they sealed meanwhile, before removing an old key from the file.
    #[command(
        after_help = "Example:\n  codmir secrets rotate-master-key --database-url sqlite://codmir.db"
    )]
    RotateMasterKey {
        /// sqlite://PATH or postgres://USER@HOST:PORT/DB.
        #[arg(
            long,
            env = "CODMIR_DATABASE_URL",
            default_value = "sqlite://codmir.db"
        )]
        database_url: String,
        #[command(flatten)]
        keys: MasterKeyArgs,
    },
}

pub(crate) async fn run(command: SecretsCommand) -> Result<(), Failure> {
    let SecretsCommand::RotateMasterKey { database_url, keys } = command;
    if std::env::var_os("CODMIR_MASTER_KEY").is_some() {
        return Err(Failure::usage(
            "keys given by CODMIR_MASTER_KEY are rotated by hand: put a new key first in it \
             (comma-separated, the old ones after), restart the servers, then run this with \
             the keys in a file"
                .into(),
        ));
    }
    let Some(file) = keys.file(&database_url) else {
        return Err(Failure::usage(
            "give the key file: --master-key-file (PostgreSQL has no default)".into(),
        ));
    };
    let old = read_key_file(&file).map_err(Failure::api)?;
    let new = MasterKey::generate();
    let mut all = vec![new.clone()];
    all.extend(old);
    write_key_file(&file, &all).with_context(|| format!("writing {}", file.display()))?;
    let options = StoreOptions {
        keys: Some(Arc::new(KeyRing::from_file(&file).map_err(Failure::api)?)),
        ..StoreOptions::default()
    };
    let store = Store::open_with(&database_url, &options)
        .await
        .with_context(|| format!("opening {database_url}"))?;
    let resealed = store
        .write(|tx| Box::pin(async move { tx.reseal_secrets().await }))
        .await
        .context("sealing the secrets again")?;
    store.close().await;
    println!(
        "New master key {} is first in {}; {resealed} webhooks' secrets sealed under it. \
         The old keys stay in the file to open anything sealed meanwhile.",
        new.id(),
        absolute(&file).display()
    );
    Ok(())
}
