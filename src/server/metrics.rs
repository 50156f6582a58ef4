//! The Prometheus exposition behind `GET /metrics`.
//!
//! Instrumentation throughout the crate goes through the `metrics` facade;
//! this module installs the Prometheus recorder once per process. An
//! application that embeds wscluster and installed its own recorder keeps
//! it: `/metrics` then answers 404 and the application exports as it likes.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of the cross-node delay histogram, in seconds: loopback
/// deliveries sit in the first few, a congested network in the last.
const DELAY_BUCKETS: &[f64] =
    &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (first call only) and returns its handle, or
/// `None` when another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("wscluster_cross_node_delay_seconds".into()),
                    DELAY_BUCKETS,
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// Help texts, so `/metrics` explains itself.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("wscluster_connections", "open WebSocket connections");
    describe_gauge!("wscluster_ready", "1 when the cluster is ready, else 0");
    describe_gauge!("wscluster_connected_peers", "other nodes linked or heard from");
    describe_gauge!("wscluster_subscriptions", "subscriptions held on this node (sgc)");
    describe_gauge!("wscluster_channels", "distinct channels and patterns subscribed on this node");
    describe_counter!(
        "wscluster_messages_in_total",
        "client messages received, by protocol and kind"
    );
    describe_counter!("wscluster_messages_out_total", "messages written to clients");
    describe_counter!("wscluster_bytes_in_total", "bytes of client text messages received");
    describe_counter!("wscluster_bytes_out_total", "bytes of messages written to clients");
    describe_counter!("wscluster_deliveries_total", "publications queued for clients, by kind");
    describe_counter!("wscluster_slow_consumer_total", "clients closed with 1008 slow consumer");
    describe_counter!(
        "wscluster_qos_expired_total",
        "server-to-client QoS messages dropped unacknowledged after the resend timeout"
    );
    describe_counter!(
        "wscluster_bad_input_total",
        "client messages answered with an error, by code"
    );
    describe_counter!("wscluster_refused_total", "requests refused by a limit, by reason");
    describe_counter!("wscluster_kept_dropped_total", "kept events dropped by a cap, by reason");
    describe_counter!(
        "wscluster_kept_synced_total",
        "kept events received from peers when they became live"
    );
    describe_counter!("wscluster_backplane_sent_total", "envelopes sent, by peer (or redis)");
    describe_counter!("wscluster_backplane_received_total", "envelopes received, by origin");
    describe_counter!("wscluster_backplane_dropped_total", "envelopes dropped, by reason");
    describe_counter!("wscluster_backplane_duplicates_total", "duplicate envelopes ignored");
    describe_histogram!(
        "wscluster_cross_node_delay_seconds",
        "origin timestamp to local fan-out of publications from other nodes"
    );

    // Exported from the start at zero, so a dashboard or an alert sees the
    // series before the first event rather than a gap.
    for name in [
        "wscluster_slow_consumer_total",
        "wscluster_messages_out_total",
        "wscluster_bytes_out_total",
        "wscluster_backplane_duplicates_total",
        "wscluster_qos_expired_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    for name in ["wscluster_connections", "wscluster_subscriptions", "wscluster_channels"] {
        metrics::gauge!(name).set(0.0);
    }
    let _ = metrics::histogram!("wscluster_cross_node_delay_seconds");
}
