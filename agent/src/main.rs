//! `vireod [--config FILE] [--listen ADDR:PORT] [--data-dir DIR] [--root-password-file FILE]`:
//! starts the vSphere-compatible host agent over HTTPS.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use vireo_agent::config::Config;
use vireo_agent::users::RootPassword;
use vireo_agent::{autostart, server, startup};

/// Command line of vireod.
#[derive(Parser)]
#[command(
    name = "vireod",
    version,
    about = "vSphere API host agent for Linux/KVM"
)]
struct Args {
    /// TOML configuration file layered over the built-in defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// HTTPS listen address (default 127.0.0.1:8443).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory (default ./vireo-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// File holding the root password (else $VIREO_ROOT_PASSWORD, else kept or generated).
    #[arg(long)]
    root_password_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    keep_large_allocations_out_of_the_heap();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIREO_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    // Paths handed to the VMM (its jail, sockets) must not depend on its working directory.
    config.data_dir = std::path::absolute(&config.data_dir)?;
    let root = match (
        &args.root_password_file,
        std::env::var("VIREO_ROOT_PASSWORD"),
    ) {
        (Some(file), _) => RootPassword::Given(
            std::fs::read_to_string(file)?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        (None, Ok(password)) if !password.is_empty() => RootPassword::Given(password),
        _ => RootPassword::KeepOrGenerate,
    };
    let listen = config.listen;
    let started = startup::start(config, root)?;
    if let Some(password) = &started.generated_root_password {
        println!("vireod: generated root password (shown once): {password}");
    }
    tracing::info!(
        sha1 = started.identity.sha1,
        sha256 = started.identity.sha256,
        "certificate thumbprints"
    );
    let tls = started.identity.server_config()?;
    let workers = start_workers()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!("vireod listening on https://{}/sdk", listener.local_addr()?);
        let host = started.host;
        tokio::spawn(startup::upkeep(host.clone()));
        tokio::select! {
            _ = server::serve(host.clone(), listener, tls, workers) => {}
            _ = shutdown_signal() => tracing::info!("shutting down"),
        }
        tokio::task::spawn_blocking(move || {
            autostart::stop_with_host(&host);
            // After the VMs that stop with the host: their network goes too.
            startup::stop(&host);
        })
        .await?;
        Ok(())
    })
}

/// One single-threaded runtime per CPU, each on its own thread, serving connections.
fn start_workers() -> std::io::Result<Vec<tokio::runtime::Handle>> {
    let count = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..count)
        .map(|i| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(format!("vireod-worker-{i}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
            Ok(handle)
        })
        .collect()
}

/// Argon2 hashes use a 19 MiB block. glibc would raise its mmap threshold after freeing one
/// and keep later blocks on the heap for good; a fixed threshold returns them to the system.
fn keep_large_allocations_out_of_the_heap() {
    // nix has no wrapper for glibc's mallopt.
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
