//! The `wscluster` binary: parses the command line and runs a node.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

use wscluster::cli::{Cli, Command, EngineArg, LogFormat, ServeArgs};
use wscluster::cluster::{Cluster, ClusterConfig, Engine};
use wscluster::hub::HubLimits;
use wscluster::server::{Server, ServerConfig, Status};
use wscluster::sgc::{Qos, SgcHooks, SgcProtocol, SgcSettings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format, &args.log_level);
    let Some(qos) = Qos::parse(&args.qos) else {
        error!(qos = %args.qos, "invalid --qos: expected qosLevel0, qosLevel1 or qosLevel2");
        return ExitCode::from(2);
    };

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args, qos))
}

async fn run(args: ServeArgs, qos: Qos) -> ExitCode {
    let defaults = SgcSettings::default();
    let settings = SgcSettings {
        qos,
        max_channel_len: args.max_channel_length,
        resend_interval: Duration::from_millis(args.resend_interval_ms),
        hub: HubLimits {
            outbound_messages: args.outbound_queue,
            outbound_bytes: args.outbound_queue_bytes,
            kept_per_channel: args.kept_per_channel,
            ..defaults.hub
        },
        ..defaults
    };
    let sgc = SgcProtocol::with(settings, SgcHooks::default());

    let cluster = Arc::new(Cluster::new(cluster_config(&args)));
    cluster.attach(&sgc);
    if let Err(e) = cluster.start().await {
        error!(error = %e, "cannot start the cluster");
        return ExitCode::FAILURE;
    }
    if let Some(addr) = cluster.mesh_addr() {
        println!("cluster-listening {addr}");
    }

    let config = ServerConfig {
        listen: args.listen,
        max_message_size: args.max_message_size,
        echo: args.echo,
        ..ServerConfig::default()
    };
    let status: Arc<dyn Status> = cluster.clone();
    let handle = match Server::new(config, sgc).with_status(status).start().await {
        Ok(h) => h,
        Err(e) => {
            error!(addr = %args.listen, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    // The one line on stdout: scripts and tests read the bound port here.
    println!("listening {}", handle.local_addr());

    wait_for_signal().await;
    // Leave the cluster first, so peers drop this node at once rather than
    // after the failure timeout, then close the clients with 1001.
    cluster.stop().await;
    handle.shutdown().await;
    info!("stopped");
    ExitCode::SUCCESS
}

fn cluster_config(args: &ServeArgs) -> ClusterConfig {
    ClusterConfig {
        engine: match args.engine {
            EngineArg::Mesh => Engine::Mesh,
            EngineArg::Redis => Engine::Redis,
        },
        node_id: args.node_id.clone(),
        listen: args.cluster_listen,
        peers: args.peers.clone(),
        secret: args.cluster_secret.clone().filter(|s| !s.is_empty()),
        failure_timeout: Duration::from_millis(args.failure_timeout_ms),
        max_message_size: args.max_message_size,
        redis_url: args.redis_url.clone().unwrap_or_else(|| {
            // Bracket IPv6 hosts so the URL stays parseable.
            let host = &args.redis_host;
            let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            format!("redis://{host}:{}/", args.redis_port)
        }),
        redis_channel: args.redis_channel.clone(),
        ..ClusterConfig::default()
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot watch SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
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
