//! `roomcast`: the server binary. Parses the command line, installs
//! logging, and runs a command from the library half.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use roomcast_app::{Cli, Command, Server, fixture, open_storage_at};

fn main() -> ExitCode {
    let cli = Cli::parse();
    roomcast_app::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roomcast: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once, through the log (stderr), in the chosen format.
            tracing::error!(error = format!("{e:#}"), "roomcast cannot go on");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let server = Server::start(&args).await?;
            println!("Roomcast is listening on http://{}", server.addr());
            println!("Open {} in a browser to chat.", server.browser_url());
            println!(
                "WebSocket endpoint: ws://{}/ws/chat/{{host}}/{{room}}",
                server.addr()
            );
            println!(
                "WebSocket origins allowed: {} (add one with --allowed-origins or ROOMCAST_ALLOWED_ORIGINS)",
                server.state().config().allowed_origins
            );
            println!("API documentation: http://{}/api/docs", server.addr());
            tracing::info!(addr = %server.addr(), "listening");
            shutdown_signal().await?;
            tracing::info!("signal received: shutting down");
            server.shutdown().await?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Fixture(args) => {
            let fixture = fixture(&args.common, args.rooms, args.members).await?;
            let json = serde_json::to_string(&fixture).context("encoding the fixture")?;
            println!("{json}");
            Ok(())
        }
        Command::Openapi => {
            let doc = roomcast_transport::openapi()
                .to_pretty_json()
                .context("encoding the OpenAPI document")?;
            println!("{doc}");
            Ok(())
        }
        Command::Keys(args) => {
            let mut out = std::io::stdout().lock();
            roomcast_app::keys::run(args.command, &mut out).await
        }
        Command::Migrate(args) => {
            let storage = open_storage_at(&args.data_dir, &args.database_url()).await?;
            tracing::info!(backend = storage.backend(), "database is migrated");
            Ok(())
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
