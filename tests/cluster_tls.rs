//! TLS on mesh links: encrypted links between nodes holding certificates
//! from the cluster's CA; a node without TLS, or with a certificate from
//! another CA, is refused.

#[allow(unused_macros)]
#[macro_use]
mod support;

use std::path::PathBuf;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use support::{Cluster, Engine, Options, connected_ids};

/// A CA and the files of one node certificate it signed, in a temp dir
/// removed on drop.
struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    /// A fresh CA named `name`, with one node certificate for 127.0.0.1.
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wscluster-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");

        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let node_key = KeyPair::generate().expect("node key");
        let node_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("node params");
        let node_cert = node_params.signed_by(&node_key, &issuer).expect("node cert");

        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca");
        std::fs::write(dir.join("node.pem"), node_cert.pem()).expect("write cert");
        std::fs::write(dir.join("node.key"), node_key.serialize_pem()).expect("write key");
        Self { dir }
    }

    fn flags(&self) -> Vec<String> {
        let path = |f: &str| self.dir.join(f).display().to_string();
        vec![
            "--cluster-tls-cert".into(),
            path("node.pem"),
            "--cluster-tls-key".into(),
            path("node.key"),
            "--cluster-tls-ca".into(),
            path("ca.pem"),
        ]
    }
}

fn with(flags: Vec<String>) -> Options {
    Options { failure_timeout_ms: Some(1000), extra: flags, ..Options::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_certificates_from_the_cluster_ca_link_and_relay() {
    let pki = Pki::new("good");
    let cluster = Cluster::start_with(Engine::Mesh, &["a", "b"], with(pki.flags())).await;

    let mut sub = cluster.node("b").client().await;
    sub.subscribe("secure").await;
    let mut publisher = cluster.node("a").client().await;
    publisher.publish("secure", "over tls").await;
    let event = sub.recv().await;
    assert_eq!(event["result"]["message"], "over tls", "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_tls_or_with_another_ca_is_refused() {
    let pki = Pki::new("cluster");
    let stranger = Pki::new("stranger");
    let mut cluster = Cluster::start_with(Engine::Mesh, &["a"], with(pki.flags())).await;

    let plain = cluster.spec("plain", with(Vec::new()));
    cluster.add(plain).await;
    let foreign = cluster.spec("foreign", with(stranger.flags()));
    cluster.add(foreign).await;

    // Both keep trying and failing: give them a few rounds, then check.
    let a = cluster.node("a");
    a.wait_log(&["mesh link refused", "tls"], Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = a.status().await;
    assert!(connected_ids(&status).is_empty(), "a linked with a stranger: {status}");
}
