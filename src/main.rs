//! The `wscluster` binary: parses the command line and runs a node.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use wscluster::cli::{CheckArgs, Cli, Command, ServeArgs};
use wscluster::cluster::{Cluster, ClusterConfig, Engine};
use wscluster::config::{EngineName, LogFormat, Settings};
use wscluster::hub::HubLimits;
use wscluster::presence::PresenceProtocol;
use wscluster::server::{Server, ServerConfig, Status};
use wscluster::sgc::{Qos, SgcHooks, SgcProtocol, SgcSettings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig(args) => check_config(&args),
    }
}

fn check_config(args: &CheckArgs) -> ExitCode {
    match Settings::resolve(&args.options, Some(&args.file)) {
        Ok(settings) => {
            println!("# {} is valid; effective settings:", args.file.display());
            print!("{}", settings.masked_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let settings = match Settings::resolve(&args.options, args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(settings.log_format, &settings.log_level);

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if settings.worker_threads > 0 {
        builder.worker_threads(settings.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(settings, args.echo))
}

async fn run(settings: Settings, echo: bool) -> ExitCode {
    let stop = StopSignals::install();
    let sgc = SgcProtocol::with(sgc_settings(&settings), SgcHooks::default());

    let presence = PresenceProtocol::new();

    let cluster = Arc::new(Cluster::new(cluster_config(&settings)));
    cluster.attach(&sgc);
    cluster.attach(&presence);
    if let Err(e) = cluster.start().await {
        error!(error = %e, "cannot start the cluster");
        return ExitCode::FAILURE;
    }
    if let Some(addr) = cluster.mesh_addr() {
        println!("cluster-listening {addr}");
    }

    let config = ServerConfig {
        listen: settings.listen,
        max_message_size: settings.max_message_size,
        max_connections: settings.max_connections,
        drain_timeout: Duration::from_millis(settings.drain_timeout_ms),
        api_key: settings.api_key.clone(),
        echo,
    };
    let status: Arc<dyn Status> = cluster.clone();
    let server = Server::new(config, sgc).with_presence(presence).with_status(status);
    let handle = match server.start().await {
        Ok(h) => h,
        Err(e) => {
            error!(addr = %settings.listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    // The stdout lines scripts and tests read the bound ports from.
    println!("listening {}", handle.local_addr());

    stop.wait().await;
    // Leave the cluster first, so peers drop this node at once rather than
    // after the failure timeout, then close the clients with 1001.
    cluster.shutdown().await;
    handle.shutdown().await;
    info!("stopped");
    ExitCode::SUCCESS
}

fn sgc_settings(s: &Settings) -> SgcSettings {
    let defaults = SgcSettings::default();
    SgcSettings {
        qos: Qos::parse(&s.qos).unwrap_or_default(),
        max_channel_len: s.max_channel_length,
        max_subscriptions: s.max_subscriptions,
        resend_interval: Duration::from_millis(s.resend_interval_ms),
        hub: HubLimits {
            outbound_messages: s.outbound_queue,
            outbound_bytes: s.outbound_queue_bytes,
            kept_per_channel: s.kept_per_channel,
            ..defaults.hub
        },
        ..defaults
    }
}

fn cluster_config(s: &Settings) -> ClusterConfig {
    ClusterConfig {
        engine: match s.engine {
            EngineName::Mesh => Engine::Mesh,
            EngineName::Redis => Engine::Redis,
        },
        node_id: s.node_id.clone(),
        listen: s.cluster_listen,
        peers: s.peers.clone(),
        secret: s.cluster_secret.clone().filter(|v| !v.is_empty()),
        failure_timeout: s.failure_timeout(),
        max_message_size: s.max_message_size,
        redis_url: s.effective_redis_url(),
        redis_channel: s.redis_channel.clone(),
        tls: s.cluster_tls(),
        ..ClusterConfig::default()
    }
}

/// SIGINT and SIGTERM, watched from the moment this is created: a signal
/// arriving between start-up and the first wait still stops us cleanly
/// instead of killing the process with the default action.
struct StopSignals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let watch = |kind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                error!(error = %e, signal = name, "cannot watch signal");
                None
            }
        };
        Self {
            term: watch(SignalKind::terminate(), "SIGTERM"),
            int: watch(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Resolves on the first SIGINT or SIGTERM.
    async fn wait(mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.term) => {}
            () = recv(&mut self.int) => {}
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
