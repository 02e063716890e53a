//! `codmir keys …`: API keys, managed on the database itself (not over the API), so that an
//! operator can make the first key, or one more, beside a running server.

use anyhow::{Context, Result};
use clap::Subcommand;
use codmir_core::time::Timestamp;
use codmir_core::tracker::{UserName, WorkspaceName};
use codmir_server::store::sqlite_path;
use codmir_server::{Store, ops};
use serde_json::json;

use crate::remote::{Failure, table};
use crate::serve::shown_url;

#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Create an API key, creating the database, workspace and user if needed. Prints the key
    /// alone on the last line of stdout, and on stderr which database it used.
    #[command(after_help = "Example:\n  codmir keys create --workspace acme --user alice")]
    Create {
        #[command(flatten)]
        db: Database,
        /// Workspace name.
        #[arg(long)]
        workspace: String,
        /// User name; the key acts as this user.
        #[arg(long)]
        user: String,
    },
    /// List every key: id, workspace, user, when it was created, last used and revoked.
    /// Secrets are never shown (only their hashes are stored).
    #[command(after_help = "Example:\n  codmir keys list --json")]
    List {
        #[command(flatten)]
        db: Database,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (as `keys list` shows it) or the whole key. Every node refuses
    /// it within 5 seconds (the time a node trusts a key it has seen without asking the
    /// database again).
    #[command(after_help = "Example:\n  codmir keys revoke 3f9c2a7d41e08b65")]
    Revoke {
        #[command(flatten)]
        db: Database,
        /// The key's id, or the key itself.
        key: String,
    },
}

#[derive(clap::Args)]
pub(crate) struct Database {
    /// sqlite://PATH or postgres://USER@HOST:PORT/DB.
    #[arg(
        long,
        env = "CODMIR_DATABASE_URL",
        default_value = "sqlite://codmir.db"
    )]
    database_url: String,
}

impl Database {
    /// Opens the database, saying on stderr which one (and, for a SQLite file, whether this
    /// created it): a key made in the wrong directory's `codmir.db` is otherwise a mystery 401.
    async fn open(&self) -> Result<Store> {
        let url = &self.database_url;
        let created = sqlite_path(url).is_some_and(|p| !std::path::Path::new(p).exists());
        let store = Store::open(url)
            .await
            .with_context(|| format!("opening {url}"))?;
        let what = if created {
            "created a new database"
        } else {
            "using database"
        };
        eprintln!("codmir: {what} {}", shown_url(url));
        Ok(store)
    }
}

pub(crate) async fn run(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::Create {
            db,
            workspace,
            user,
        } => {
            let workspace = WorkspaceName::parse(&workspace)
                .map_err(|e| Failure::usage(format!("--workspace {}", e.message)))?;
            let user = UserName::parse(&user)
                .map_err(|e| Failure::usage(format!("--user {}", e.message)))?;
            let store = db.open().await?;
            let key = store
                .write(move |tx| {
                    Box::pin(async move {
                        ops::create_key(tx, &workspace, &user, Timestamp::now()).await
                    })
                })
                .await
                .context("creating the key")?;
            store.close().await;
            println!(
                "Created an API key for user \"{}\" ({}) in workspace {}. It will not be shown again:",
                key.principal.user_name, key.principal.user_id, key.principal.workspace_id
            );
            println!("{}", key.key);
        }
        KeysCommand::List { db, json } => {
            let store = db.open().await?;
            let keys = store
                .read(|tx| Box::pin(async move { ops::list_keys(tx).await }))
                .await
                .context("listing the keys")?;
            store.close().await;
            let time = |t: Option<Timestamp>| t.map(Timestamp::to_rfc3339_seconds);
            if json {
                let data: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        json!({"id": k.id, "workspace": k.workspace, "user": k.user,
                            "created_at": k.created_at.to_rfc3339_seconds(),
                            "last_used_at": time(k.last_used_at), "revoked_at": time(k.revoked_at)})
                    })
                    .collect();
                crate::remote::print_json(&json!({ "data": data }));
            } else {
                let dash = |t: Option<Timestamp>| time(t).unwrap_or_else(|| "-".into());
                table(
                    &["ID", "WORKSPACE", "USER", "CREATED", "LAST USED", "REVOKED"],
                    keys.iter()
                        .map(|k| {
                            vec![
                                k.id.clone(),
                                k.workspace.clone(),
                                k.user.clone(),
                                k.created_at.to_rfc3339_seconds(),
                                dash(k.last_used_at),
                                dash(k.revoked_at),
                            ]
                        })
                        .collect(),
                );
            }
        }
        KeysCommand::Revoke { db, key } => {
            let store = db.open().await?;
            let revoked = store
                .write(move |tx| {
                    Box::pin(async move { ops::revoke_key(tx, &key, Timestamp::now()).await })
                })
                .await;
            store.close().await;
            let k = revoked.map_err(|e| match e {
                ops::Error::NotFound(_) => Failure::not_found("there is no such API key".into()),
                ops::Error::Invalid(v) => Failure::usage(v.message),
                other => Failure::api(other.to_string()),
            })?;
            println!(
                "Revoked API key {} (user \"{}\" in workspace \"{}\"). Every node refuses it within 5 seconds.",
                k.id, k.user, k.workspace
            );
        }
    }
    Ok(())
}
