//! Command-line interface of the `wscluster` binary.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A clustered WebSocket publish/subscribe server (sgc protocol).
#[derive(Debug, Parser)]
#[command(name = "wscluster", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(ServeArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Backplane engine choice.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngineArg {
    /// Nodes link directly over TCP.
    Mesh,
    /// Redis Pub/Sub.
    Redis,
}

/// Settings of `wscluster serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// WebSocket and HTTP listen address.
    #[arg(long, env = "WSCLUSTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest WebSocket message accepted, in bytes (larger: close 1009).
    #[arg(long, env = "WSCLUSTER_MAX_MESSAGE_SIZE", default_value_t = 1 << 20)]
    pub max_message_size: usize,

    /// Outbound queue bound per connection, in messages; a client that
    /// falls this far behind is closed with 1008 "slow consumer".
    #[arg(long, env = "WSCLUSTER_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Outbound queue bound per connection, in bytes.
    #[arg(long, env = "WSCLUSTER_OUTBOUND_QUEUE_BYTES", default_value_t = 4 << 20)]
    pub outbound_queue_bytes: usize,

    /// Longest channel name accepted, in bytes.
    #[arg(long, env = "WSCLUSTER_MAX_CHANNEL_LENGTH", default_value_t = 255)]
    pub max_channel_length: usize,

    /// Kept events per channel at queueLevel2.
    #[arg(long, env = "WSCLUSTER_KEPT_PER_CHANNEL", default_value_t = 100)]
    pub kept_per_channel: usize,

    /// Server-to-client QoS: qosLevel0, qosLevel1 or qosLevel2.
    #[arg(long, env = "WSCLUSTER_QOS", default_value = "qosLevel0")]
    pub qos: String,

    /// Milliseconds before an unacknowledged message is re-sent (QoS 1/2).
    #[arg(long, env = "WSCLUSTER_RESEND_INTERVAL_MS", default_value_t = 5000)]
    pub resend_interval_ms: u64,

    /// This node's id in the cluster; unique per live node (generated when
    /// absent).
    #[arg(long, env = "WSCLUSTER_NODE_ID", default_value = "")]
    pub node_id: String,

    /// Backplane engine.
    #[arg(long, env = "WSCLUSTER_ENGINE", value_enum, default_value = "mesh")]
    pub engine: EngineArg,

    /// Mesh: where this node accepts links from its peers.
    #[arg(long, env = "WSCLUSTER_CLUSTER_LISTEN", default_value = "127.0.0.1:5410")]
    pub cluster_listen: SocketAddr,

    /// Mesh: another node's link address (repeatable; one reachable seed
    /// is enough to join the whole mesh).
    #[arg(long = "peer", env = "WSCLUSTER_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,

    /// Shared secret every node must prove (never sent over the wire).
    #[arg(long, env = "WSCLUSTER_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// Milliseconds of silence after which a peer is treated as gone.
    #[arg(long, env = "WSCLUSTER_FAILURE_TIMEOUT_MS", default_value_t = 3000)]
    pub failure_timeout_ms: u64,

    /// Redis: server host (ignored when --redis-url is given).
    #[arg(long, env = "WSCLUSTER_REDIS_HOST", default_value = "127.0.0.1")]
    pub redis_host: String,

    /// Redis: server port (ignored when --redis-url is given).
    #[arg(long, env = "WSCLUSTER_REDIS_PORT", default_value_t = 6379)]
    pub redis_port: u16,

    /// Redis: full URL with user, password, database and TLS, e.g.
    /// `rediss://user:password@host:6380/0`.
    #[arg(long, env = "WSCLUSTER_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis: the Pub/Sub channel every node shares.
    #[arg(long, env = "WSCLUSTER_REDIS_CHANNEL", default_value = "wscluster")]
    pub redis_channel: String,

    /// Log format.
    #[arg(long, env = "WSCLUSTER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log level or filter (overridden by RUST_LOG when set).
    #[arg(long, env = "WSCLUSTER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Serve a plain echo on every WebSocket instead of the protocols.
    /// Only for the WebSocket conformance suite.
    #[arg(long, hide = true)]
    pub echo: bool,
}
