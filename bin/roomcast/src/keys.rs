//! `roomcast keys`: service keys, made, listed and revoked straight in the
//! database (like `fixture`), whether or not a server is running: every
//! node looks a key up on each request, so a revocation holds at once.

use std::io::Write;

use anyhow::{Context, bail};
use roomcast_domain::{Scopes, Username};
use roomcast_storage::{NewServiceKey, StorageError};
use roomcast_transport::GeneratedKey;

use crate::cli::KeysCommand;
use crate::open_storage_at;

/// Runs a `keys` subcommand, writing what it reports to `out`. `create`
/// writes the key alone on its first line (`KEY=$(roomcast keys create
/// ... | head -1)`), then what to do with it.
pub async fn run(command: KeysCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            scopes,
            database,
        } => {
            let name = key_name(&name)?;
            let scopes = Scopes::new(scopes)?;
            let storage = open_storage_at(&database.data_dir, &database.database_url()).await?;
            let generated = GeneratedKey::generate();
            let new = NewServiceKey {
                name: name.clone(),
                key_hash: generated.hash().to_owned(),
                scopes: scopes.clone(),
            };
            match storage.create_service_key(new).await {
                Ok(_) => {}
                Err(StorageError::Conflict(_)) => {
                    bail!("a user or service key named {name} exists already; choose another name")
                }
                Err(e) => return Err(e).context("storing the key"),
            }
            writeln!(out, "{}", generated.key())?;
            writeln!(
                out,
                "Service key {name} (scope: {scopes}) made; it posts as the bot user {name}. \
                 This is the only time the key is shown: keep it now. Use it as \
                 `Authorization: Bearer <key>`."
            )?;
            Ok(())
        }
        KeysCommand::List { database } => {
            let storage = open_storage_at(&database.data_dir, &database.database_url()).await?;
            let keys = storage.service_keys().await.context("listing the keys")?;
            writeln!(
                out,
                "{:<24} {:<14} {:<32} revoked",
                "name", "scope", "created"
            )?;
            for key in keys {
                let revoked = key
                    .revoked
                    .map_or_else(|| "-".to_owned(), |t| t.to_string());
                writeln!(
                    out,
                    "{:<24} {:<14} {:<32} {revoked}",
                    key.name.as_str(),
                    key.scopes.to_string(),
                    key.created.to_string()
                )?;
            }
            Ok(())
        }
        KeysCommand::Revoke { name, database } => {
            let name = key_name(&name)?;
            let storage = open_storage_at(&database.data_dir, &database.database_url()).await?;
            match storage.revoke_service_key(&name).await {
                Ok(true) => writeln!(out, "Service key {name} revoked.")?,
                Ok(false) => writeln!(out, "Service key {name} was revoked already.")?,
                Err(StorageError::NotFound) => bail!("there is no service key named {name}"),
                Err(e) => return Err(e).context("revoking the key"),
            }
            Ok(())
        }
    }
}

fn key_name(name: &str) -> anyhow::Result<Username> {
    Username::parse(name).with_context(|| {
        format!("{name:?} cannot name a key: use lowercase letters, digits, `-` and `_`")
    })
}
