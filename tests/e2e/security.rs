//! Security end to end: real agents with mutual TLS from the test CA (made
//! by `mend cert`), callers with missing, foreign, wrong-role, expired and
//! rotated certificates, addresses outside the allow-list, and floods.

use std::sync::Arc;
use std::time::Duration;

use mend_rpc::pb;
use mend_rpc::pb::operator_client::OperatorClient;
use mend_rpc::pb::peer_client::PeerClient;
use mend_rpc::pb::replica_client::ReplicaClient;
use tokio::io::AsyncWriteExt;
use tonic::Code;

use crate::harness::*;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// One sample of a metric (sum over label sets matching `labels`).
async fn metric(http: &str, name: &str, labels: &str) -> f64 {
    let body = reqwest::get(format!("http://{http}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Whether a status call through `ep` fails (at the handshake or after).
async fn refused(ep: tonic::transport::Endpoint) -> bool {
    match ep.connect().await {
        Err(_) => true,
        Ok(ch) => OperatorClient::new(ch)
            .status(pb::StatusRequest::default())
            .await
            .is_err(),
    }
}

/// The certificate an agent serves right now, as DER.
async fn served_cert(addr: &str) -> Vec<u8> {
    let m = mend_tls::Material::load(&mend_tls::TlsPaths::in_dir(&cert_set(CLIENT))).unwrap();
    let mut cfg = m.client_config().unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let conn = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = conn.connect(name, tcp).await.expect("TLS handshake");
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_cluster_certificate_are_refused_at_the_handshake() {
    // Proves that no client certificate, or one from another CA, gets no
    // call through, while the cluster's certificate does.
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let ca = std::fs::read(certs().join("ca.crt")).unwrap();

    // No client certificate.
    let ep = tonic::transport::Endpoint::from_shared(format!("https://{}", a.addr))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
                .domain_name("127.0.0.1"),
        )
        .unwrap();
    assert!(
        refused(ep).await,
        "a caller without a certificate was served"
    );

    // A certificate of another CA (trusting ours, so only our check refuses).
    let other = tmp();
    mend_tls::dev::make(other.path(), &["operator".into()], &[], 1).unwrap();
    let set = other.path().join("operator");
    let ep = tonic::transport::Endpoint::from_shared(format!("https://{}", a.addr))
        .unwrap()
        .tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&ca))
                .identity(tonic::transport::Identity::from_pem(
                    std::fs::read(set.join("tls.crt")).unwrap(),
                    std::fs::read(set.join("tls.key")).unwrap(),
                ))
                .domain_name("127.0.0.1"),
        )
        .unwrap();
    assert!(refused(ep).await, "a certificate of another CA was served");

    // Plaintext to a TLS agent.
    let out = mend(&["status", "--agent", &a.addr, "--insecure-plaintext"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // The cluster's certificate works.
    let (code, st) = mend_json(&["status", "--agent", &a.addr]);
    assert_eq!(code, 0, "{st}");
    assert_eq!(st["node_id"], "node-a");
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_refuses_identities_without_its_role_and_writes_nothing() {
    // Proves the role check: a valid certificate with the wrong role gets
    // PERMISSION_DENIED from each service, nothing is written, and each
    // refusal is counted in mend_auth_denied_total{service,reason}.
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &["--http", "127.0.0.1:0"]);
    let http = a.http.clone().unwrap();
    let put = pb::PutRequest {
        key: b"secret-key".to_vec(),
        value: b"v".to_vec(),
        version: None,
    };

    // A peer's certificate may not write as a replica nor act as operator.
    let peer_ch = channel_as(&a.addr, "node-x").await;
    let e = ReplicaClient::new(peer_ch.clone())
        .put(put.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = OperatorClient::new(peer_ch.clone())
        .undo(pb::UndoRequest {
            repair_id: "r1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // An operator's certificate may not write nor speak as a peer.
    let op = channel_as(&a.addr, "operator").await;
    let e = ReplicaClient::new(op.clone())
        .put(put.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = PeerClient::new(op.clone())
        .push(tokio_stream::iter(vec![pb::PushRequest {
            repair_id: "r1".into(),
            entries: vec![pb::Entry {
                key: b"pushed".to_vec(),
                version: ver(now_ms(), "node-a", 1),
                tombstone: false,
                value: b"v".to_vec(),
            }],
        }]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A writer's certificate may not run the operator's or the peer's calls.
    let w = channel_as(&a.addr, "replica").await;
    let e = OperatorClient::new(w.clone())
        .status(pb::StatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = PeerClient::new(w.clone())
        .challenge(pb::ChallengeRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // ... but may write, which is its role.
    ReplicaClient::new(w)
        .put(pb::PutRequest {
            key: b"allowed".to_vec(),
            ..put.clone()
        })
        .await
        .unwrap();

    // A repair pushed by one peer can be undone by that peer only.
    let x = PeerClient::new(peer_ch.clone());
    x.clone()
        .push(tokio_stream::iter(vec![pb::PushRequest {
            repair_id: "rx".into(),
            entries: vec![pb::Entry {
                key: b"repaired".to_vec(),
                version: ver(now_ms() - 60_000, "node-x", 1),
                tombstone: false,
                value: b"v".to_vec(),
            }],
        }]))
        .await
        .unwrap();
    let e = PeerClient::new(channel_as(&a.addr, "node-y").await)
        .undo_push(pb::UndoPushRequest {
            repair_id: "rx".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let got = get(&mut a.replica().await, "repaired").await;
    assert!(got.found, "another identity's undo restored nothing");
    let undone = x
        .clone()
        .undo_push(pb::UndoPushRequest {
            repair_id: "rx".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(undone.restored, 1, "the owner's undo works");
    assert_eq!(
        metric(&http, "mend_auth_denied_total", "reason=\"not_owner\"").await,
        1.0
    );

    // Nothing of the refused calls was written.
    let mut r = a.replica().await;
    for k in ["secret-key", "pushed"] {
        let got = get(&mut r, k).await;
        assert!(!got.found, "{k} was written by a refused call");
    }
    for (svc, n) in [("Replica", 2.0), ("Operator", 2.0), ("Peer", 2.0)] {
        let got = metric(
            &http,
            "mend_auth_denied_total",
            &format!("service=\"{svc}\",reason=\"role\""),
        )
        .await;
        assert_eq!(got, n, "denied calls to {svc}");
    }
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_and_repair_dial_only_configured_or_allowed_peers() {
    // Proves no SSRF: an operator cannot make an agent dial an address that
    // is neither a configured peer nor allowed by roles.peer_addresses,
    // while a configured peer id works.
    let d = tmp();
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let peer_flag = format!("node-b={}", b.addr);
    let a = AgentProc::start_bare(
        "node-a",
        &d.path().join("a"),
        &[
            "--tls-dir",
            cert_set("node-a").to_str().unwrap(),
            "--peer",
            &peer_flag,
        ],
    );
    // An arbitrary address: refused before anything is dialled.
    for cmd in ["diff", "repair"] {
        let out = mend(&[cmd, "--agent", &a.addr, "--peer", "127.0.0.1:1"]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("PermissionDenied") && err.contains("roles.peer_addresses"),
            "{err}"
        );
    }
    // The configured peer, by id and by its address.
    for p in ["node-b", b.addr.as_str()] {
        let (code, v) = mend_json(&["diff", "--agent", &a.addr, "--peer", p]);
        assert_eq!(code, 0, "{p}: {v}");
        assert_eq!(v["in_sync"], true, "{v}");
    }
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_without_restart_and_a_bad_replacement_is_refused() {
    // Proves hot reload: rewritten cert files are served at the next
    // handshake, and an expired replacement is refused, counted, and the
    // previous certificate kept in service.
    let d = tmp();
    let cfg = d.path().join("agent.toml");
    std::fs::write(&cfg, "[tls]\nreload_poll_ms = 100\n").unwrap();
    let node = "node-rotate";
    let set = cert_set(node);
    let a = AgentProc::start(
        node,
        &d.path().join("a"),
        &["--config", cfg.to_str().unwrap(), "--http", "127.0.0.1:0"],
    );
    let http = a.http.clone().unwrap();
    let first = served_cert(&a.addr).await;
    assert_eq!(first, pem_der(&set.join("tls.crt")));

    // Rotate: a new key and certificate from the same CA.
    mend_tls::dev::make(certs(), &[node.into()], &[], 2).unwrap();
    let second = pem_der(&set.join("tls.crt"));
    assert_ne!(first, second);
    until(
        Duration::from_secs(20),
        "the rotated certificate",
        async || (served_cert(&a.addr).await == second).then_some(()),
    )
    .await;
    assert_eq!(metric(&http, "mend_tls_reloads_total", "").await, 1.0);

    // An expired replacement: refused, old one kept, calls still served.
    let ca = mend_tls::dev::DevCa::load(certs()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .issue_between(
            node,
            &["127.0.0.1".into()],
            now - time::Duration::days(3),
            now - time::Duration::days(1),
        )
        .unwrap();
    ca.write_set(&expired, &set).unwrap();
    until(
        Duration::from_secs(20),
        "the refusal of the expired set",
        async || (metric(&http, "mend_tls_reload_failures_total", "").await >= 1.0).then_some(()),
    )
    .await;
    assert_eq!(served_cert(&a.addr).await, second, "the previous set stays");
    let (code, _) = mend_json(&["status", "--agent", &a.addr]);
    assert_eq!(code, 0);
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_the_development_secret_are_refused_off_loopback() {
    // Proves the two insecure settings are loopback-only, with one clear
    // line each, and that a plaintext agent on loopback works.
    let d = tmp();
    let run = |args: &[&str], secret: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mend"));
        c.arg("agent")
            .args(args)
            .arg("--data-dir")
            .arg(d.path().join("x"));
        if secret {
            c.env("MEND_CLUSTER_SECRET", SECRET);
        } else {
            c.env_remove("MEND_CLUSTER_SECRET");
        }
        c.output().unwrap()
    };
    let out = run(&["--insecure-plaintext", "--listen", "0.0.0.0:0"], true);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
    let set = cert_set("node-a");
    let out = run(
        &["--tls-dir", set.to_str().unwrap(), "--listen", "0.0.0.0:0"],
        false,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("development secret"), "{err}");
    let out = run(&["--listen", "127.0.0.1:0"], true);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls") && err.contains("mend cert"), "{err}");

    let p = AgentProc::start_bare("node-p", &d.path().join("p"), &["--insecure-plaintext"]);
    let out = mend(&[
        "status",
        "--agent",
        &p.addr,
        "--insecure-plaintext",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_and_garbage_connections_leaves_the_agent_serving() {
    // Proves the accept loop: hundreds of connections that never finish a
    // TLS handshake, or send garbage, neither stop service nor hold it up;
    // the garbage ones are refused and counted.
    let d = tmp();
    let cfg = d.path().join("agent.toml");
    std::fs::write(&cfg, "[limits]\ntls_handshake_timeout_ms = 500\n").unwrap();
    let a = AgentProc::start(
        "node-a",
        &d.path().join("a"),
        &["--config", cfg.to_str().unwrap(), "--http", "127.0.0.1:0"],
    );
    let http = a.http.clone().unwrap();
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(tokio::net::TcpStream::connect(&a.addr).await.unwrap());
    }
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(&a.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03\x01garbage")
            .await
            .unwrap();
        idle.push(s);
    }
    // Still serving while the flood is open.
    let (code, st) = mend_json(&["status", "--agent", &a.addr]);
    assert_eq!(code, 0, "{st}");
    until(Duration::from_secs(20), "refusals counted", async || {
        let n = metric(&http, "mend_connections_refused_total", "").await;
        (n >= 300.0).then_some(())
    })
    .await;
    let handshake = metric(
        &http,
        "mend_connections_refused_total",
        "reason=\"tls_handshake\"",
    )
    .await;
    assert!(handshake >= 50.0, "garbage refused: {handshake}");
    drop(idle);
    let (code, _) = mend_json(&["status", "--agent", &a.addr]);
    assert_eq!(code, 0);
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_stamped_far_ahead_are_refused_and_nothing_is_written() {
    // Proves a replicated write stamped beyond clock_skew_ms (a
    // version with ms = u64::MAX would win every comparison forever) is
    // refused with INVALID_ARGUMENT, counted, and not stored, while one
    // within the limit is accepted.
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &["--http", "127.0.0.1:0"]);
    let mut r = a.replica().await;
    // 5 s ahead: beyond the one allowed skew (clock_skew_ms = 1 s), which
    // is also how far the store's clock follows replicated versions.
    for ms in [u64::MAX, now_ms() + 3_600_000, now_ms() + 5_000] {
        let e = r
            .put(pb::PutRequest {
                key: b"forever".to_vec(),
                value: b"v".to_vec(),
                version: ver(ms, "node-z", 1),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("clock_skew_ms"), "{e:?}");
    }
    let got = get(&mut r, "forever").await;
    assert!(!got.found, "a refused write was stored");
    r.put(pb::PutRequest {
        key: b"soon".to_vec(),
        value: b"v".to_vec(),
        version: ver(now_ms() + 300, "node-z", 2),
    })
    .await
    .unwrap();
    let http = a.http.clone().unwrap();
    assert_eq!(
        metric(&http, "mend_future_writes_refused_total", "").await,
        3.0
    );
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_the_same_name_with_other_bounds_are_not_compared() {
    // Proves the handshake compares range bounds, not just names and
    // shapes: two agents whose range "r" covers different keys get a clear
    // FAILED_PRECONDITION instead of a permanent false divergence.
    let d = tmp();
    let cfg = |start: &str| {
        let p = d.path().join(format!("{start}.toml"));
        std::fs::write(
            &p,
            format!(
                "[[ranges]]\nname = \"r\"\nstart = [{}]\n",
                start.as_bytes()[0]
            ),
        )
        .unwrap();
        p
    };
    let (ca, cb) = (cfg("a"), cfg("b"));
    let a = AgentProc::start(
        "node-a",
        &d.path().join("a"),
        &["--config", ca.to_str().unwrap()],
    );
    let b = AgentProc::start(
        "node-b",
        &d.path().join("b"),
        &["--config", cb.to_str().unwrap()],
    );
    let out = mend(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bounds differ") && err.contains("FailedPrecondition"),
        "{err}"
    );
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_diff_updates_the_divergence_gauges_under_the_peer_node_id() {
    // Proves `mend diff` (not only scheduled exchanges) sets
    // mend_divergent_keys, labelled by the node id the peer proved at the
    // handshake, never by the address the caller typed.
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &["--http", "127.0.0.1:0"]);
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let old = now_ms() - 600_000;
    write(
        &a,
        (0..3)
            .map(|i| put(&format!("only-a-{i}"), "v", ver(old + i, "node-a", i + 1)))
            .collect(),
    )
    .await;
    let (code, v) = mend_json(&["diff", "--agent", &a.addr, "--peer", &b.addr]);
    assert_eq!(code, 1, "{v}");
    let http = a.http.clone().unwrap();
    let missing = metric(
        &http,
        "mend_divergent_keys",
        "peer=\"node-b\",range=\"default\",category=\"missing\"",
    )
    .await;
    assert_eq!(missing, 3.0);
    let by_addr = metric(&http, "mend_", &format!("peer=\"{}\"", b.addr)).await;
    assert_eq!(by_addr, 0.0, "no metric labelled by the typed address");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_is_served_in_v1alpha_too() {
    // Proves clients that speak only grpc.reflection.v1alpha (grpcurl before
    // 1.8.8, grpcui, Postman, Python's grpcio-reflection) can list services.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
    };
    let d = tmp();
    let a = AgentProc::start("node-a", &d.path().join("a"), &[]);
    let mut c = ServerReflectionClient::new(channel(&a.addr).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut s = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("v1alpha reflection served")
        .into_inner();
    let text = format!("{:?}", s.message().await.unwrap().unwrap());
    assert!(text.contains("mend.v1.Operator"), "{text}");
    a.stop();
}
