//! `tunnel-server`: starts the gateway from flags and an optional TOML file.

use std::os::fd::{BorrowedFd, FromRawFd as _, OwnedFd};
use std::process::ExitCode;

use anyhow::Context as _;
use rand::SeedableRng as _;
use tunnel_runtime::config::{self, ConfigError, Reload, ServerConfig};
use tunnel_runtime::keys::{load_authorized_keys, load_or_generate_host_key};
use tunnel_runtime::net::TokioNet;
use tunnel_runtime::server::Running;
use tunnel_runtime::socket_activation::{check_open, passed_fds, ActivationError, Inherited};

/// glibc's allocator returns freed heap to the kernel and faults it back in on the data path
/// (about 10% of the server's CPU moving bytes, bench/profiles); mimalloc keeps it and still gives
/// memory back after load (idle RSS after the benchmark 18 MB, 56 MB with glibc). Without
/// transparent huge pages (`no_thp`): with them an idle server took 13 MB (PSS) and each idle
/// tunnel 61 KiB; without, 8 MB and 50 KiB (glibc: 6 MB and 47 KiB).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let inherited = match take_passed_listeners() {
        Ok(inherited) => inherited,
        Err(e) => {
            eprintln!("tunnel-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The configuration says how to log, so it comes first; its errors are printed as they are.
    let config = match ServerConfig::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("tunnel-server: {e}");
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    tunnel_runtime::logging::init(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can always be built on a working OS");
    match runtime.block_on(run(config, inherited)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tunnel-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP with `--config`: the file is read and checked again, and the running server takes
/// what can change live (see [`config::reload_of`]); each changed setting is named with when it
/// takes effect. A file that no longer reads or validates changes nothing and is named too.
async fn reread_config(
    running: &Running<TokioNet>,
    path: &std::path::Path,
    before: Option<Vec<(String, String)>>,
    current: &tokio::sync::watch::Sender<ServerConfig>,
) -> Option<Vec<(String, String)>> {
    let checked = config::file_settings(path).and_then(|after| {
        ServerConfig::from_args(std::env::args_os()).map(|config| (after, config))
    });
    let (after, config) = match checked {
        Ok(read) => read,
        Err(error) => {
            tracing::error!(%error, "SIGHUP: the config file was not taken; the server runs on as it was");
            return before;
        }
    };
    if let Err(error) = running.reconfigure(&config).await {
        tracing::error!(%error, "SIGHUP: the config file was not taken; the server runs on as it was");
        return before;
    }
    let changed = config::changed_settings(before.as_deref().unwrap_or_default(), &after);
    let file = path.display();
    for key in &changed {
        match config::reload_of(key) {
            Reload::Live => {
                tracing::info!("SIGHUP: {key} changed in {file}; it applies from now on")
            }
            Reload::NewEndpoints => tracing::info!(
                "SIGHUP: {key} changed in {file}; it applies to endpoints created from now on"
            ),
            Reload::Restart => tracing::warn!(
                "SIGHUP: {key} changed in {file}; it takes effect at the next restart"
            ),
        }
    }
    if changed.is_empty() {
        tracing::info!("SIGHUP: {file} read again, nothing in it changed");
    }
    current.send_replace(config);
    Some(after)
}

/// The listeners systemd passed in (socket activation), taken before anything else could open a
/// descriptor, and the variables that named them cleared so no child sees them.
fn take_passed_listeners() -> Result<Inherited, ActivationError> {
    let var = |name| std::env::var(name).ok();
    let passed = passed_fds(
        std::process::id(),
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
    )?;
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let mut owned = Vec::with_capacity(passed.len());
    for (fd, name) in passed {
        // SAFETY: only looked at, for as long as this call; an fd number is always safe to ask
        // the kernel about.
        check_open(fd, unsafe { BorrowedFd::borrow_raw(fd) })?;
        // SAFETY: the service manager passed this open descriptor to this process (LISTEN_PID
        // is ours) and nothing has used it yet: it is taken once, here, at start.
        owned.push((fd, name, unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    Inherited::from_fds(owned)
}

async fn run(config: ServerConfig, inherited: Inherited) -> anyhow::Result<()> {
    let host_key = load_or_generate_host_key(&config.host_key)?;
    let authorized = config
        .authorized_keys
        .as_deref()
        .map(load_authorized_keys)
        .transpose()?;
    match tunnel_runtime::accept::raise_open_files_limit() {
        Ok(limit) => tracing::info!("open files limit {limit}"),
        Err(error) => tracing::warn!(%error, "could not raise the open files limit"),
    }
    let rng = Box::new(rand_chacha::ChaCha20Rng::from_entropy());
    let running = tunnel_runtime::server::start_inheriting(
        TokioNet,
        &config,
        host_key,
        authorized.as_ref(),
        rng,
        inherited,
    )
    .await
    .context("starting the server")?;
    let running = std::sync::Arc::new(running);
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let config_file = config.config_file.clone();
    let (current, latest) = tokio::sync::watch::channel(config);
    let reloading = std::sync::Arc::clone(&running);
    tokio::spawn(async move {
        let mut file = config_file
            .as_deref()
            .and_then(|path| config::file_settings(path).ok());
        while hangups.recv().await.is_some() {
            if let Some(reload) = &reloading.reload_keys {
                tracing::info!("SIGHUP: re-reading the authorized keys file");
                reload.notify_one();
            }
            match &config_file {
                Some(path) => file = reread_config(&reloading, path, file.take(), &current).await,
                // The files the flags name (admin keys, admin token) are read again all the same.
                None => {
                    let config = current.borrow().clone();
                    if let Err(error) = reloading.reconfigure(&config).await {
                        tracing::error!(%error, "SIGHUP: not taken; the server runs on as it was");
                    }
                }
            }
        }
    });
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        stopped = tokio::signal::ctrl_c() => stopped.context("waiting for ctrl-c")?,
        _ = terminate.recv() => {}
    }
    let grace = latest.borrow().shutdown_grace;
    running.stop(grace).await;
    tracing::info!("stopped");
    Ok(())
}
