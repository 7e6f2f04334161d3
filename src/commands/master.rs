//! `pyti master`: serve the queue and API, or manage its tokens.

use crate::cli::{MasterArgs, MasterCommand, MasterServeArgs, TokenCommand, TokenRole};
use anyhow::Context;
use pyti_master::tokens::{self, Role};
use pyti_master::{Master, MasterConfig, Store};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the default database lives: `master.sqlite` in the user's data directory.
pub fn default_database_path() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from(".local/share"))
        .join("pyti")
        .join("master.sqlite")
}

/// The database used when none is given (its directory created).
pub fn default_database() -> anyhow::Result<String> {
    let path = default_database_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(path.display().to_string())
}

fn database(given: Option<String>) -> anyhow::Result<String> {
    given.map(Ok).unwrap_or_else(default_database)
}

pub fn run(args: MasterArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    match args.command {
        None => runtime.block_on(serve(args.serve)),
        Some(MasterCommand::Token(command)) => runtime.block_on(token(command)),
    }
}

async fn serve(args: MasterServeArgs) -> anyhow::Result<ExitCode> {
    let config = MasterConfig {
        listen: args.listen,
        database_url: database(args.database)?,
        recipes_dir: args.recipes.recipes_dir,
        lease_secs: args.lease_secs,
        max_attempts: args.max_attempts,
        ..MasterConfig::default()
    };
    let database = config.database_url.clone();
    let master = Master::open(config).await?;
    tracing::info!(address = %master.local_addr(), %database, "master serving JSON-RPC (HTTP + WebSocket), /health and /metrics");
    eprintln!(
        "pyti master on http://{} (database {database}); stop with Ctrl-C",
        master.local_addr()
    );
    master.serve(super::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn open_store(database: Option<String>) -> anyhow::Result<Store> {
    let url = self::database(database)?;
    Store::open_admin(&url)
        .await
        .with_context(|| format!("opening the master's database {url}"))
}

async fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Add {
            name,
            role,
            database,
        } => {
            let store = open_store(database).await?;
            let role = match role {
                TokenRole::Slave => Role::Slave,
                TokenRole::Submitter => Role::Submitter,
                TokenRole::Reader => Role::Reader,
                TokenRole::Admin => Role::Admin,
            };
            let secret = tokens::add(&store, &name, role).await?;
            eprintln!(
                "token `{name}` ({}) created; it is shown only once:",
                role.as_str()
            );
            println!("{secret}");
        }
        TokenCommand::List { all, database } => {
            let store = open_store(database).await?;
            let (shown, hidden): (Vec<_>, Vec<_>) = tokens::list(&store)
                .await?
                .into_iter()
                .partition(|t| all || t.revoked_at_ms.is_none());
            let mut table = super::new_table();
            if all {
                table.set_header(["name", "role", "created", "revoked"]);
            } else {
                table.set_header(["name", "role", "created"]);
            }
            for t in shown {
                let mut row = vec![
                    t.name,
                    t.role.as_str().to_string(),
                    super::format_ms(t.created_at_ms),
                ];
                if all {
                    row.push(t.revoked_at_ms.map(super::format_ms).unwrap_or_default());
                }
                table.add_row(row);
            }
            println!("{table}");
            if !hidden.is_empty() {
                eprintln!(
                    "{} revoked token(s) not shown (--all lists them)",
                    hidden.len()
                );
            }
        }
        TokenCommand::Revoke { name, database } => {
            let store = open_store(database).await?;
            if tokens::revoke(&store, &name).await? {
                println!("token `{name}` revoked");
            } else {
                anyhow::bail!("no active token named `{name}` (see `pyti master token list`)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
