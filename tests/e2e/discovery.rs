//! Peers discovered from DNS on real agents: a small DNS server in the test
//! answers SRV records for `_mend._tcp.mend.test` (targets `node-b.`,
//! `node-c.`, and node-a's own), with A records for each target. node-a,
//! configured with `[discovery]` and no peer list, finds node-b (its
//! certificate checked against the SRV target, its id from the handshake),
//! skips itself, runs scheduled exchanges with it and diffs it by id; finds
//! node-c once DNS names it (re-resolved every interval); and after a
//! restart with DNS answering nothing still knows both (persisted).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::Value;

use crate::harness::*;

const SRV_NAME: &str = "_mend._tcp.mend.test.";

/// SRV targets served now: (target without the trailing dot, port).
type Targets = Arc<Mutex<Vec<(String, u16)>>>;

/// A records served now besides the SRV targets': (name without the
/// trailing dot, its addresses).
type Hosts = Arc<Mutex<Vec<(String, Vec<Ipv4Addr>)>>>;

/// Serves SRV answers for [`SRV_NAME`] from `targets` and A records
/// (127.0.0.1) for each target, with TTL 0, on UDP; returns its address.
async fn dns_server(targets: Targets) -> SocketAddr {
    dns_server_with(targets, Arc::new(Mutex::new(Vec::new()))).await
}

/// [`dns_server`], also answering A queries for the names in `hosts`.
async fn dns_server_with(targets: Targets, hosts: Hosts) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .set_op_code(q.op_code())
                .set_recursion_desired(q.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            let now = targets.lock().unwrap().clone();
            let hosts_now = hosts.lock().unwrap().clone();
            for query in q.queries() {
                r.add_query(query.clone());
                let name = query.name().to_ascii().to_ascii_lowercase();
                let host = hosts_now.iter().find(|(h, _)| format!("{h}.") == name);
                match query.query_type() {
                    RecordType::SRV if name == SRV_NAME => {
                        for (t, port) in &now {
                            let target = Name::from_ascii(format!("{t}.")).unwrap();
                            r.add_answer(Record::from_rdata(
                                query.name().clone(),
                                0,
                                RData::SRV(SRV::new(0, 0, *port, target)),
                            ));
                        }
                    }
                    RecordType::A if now.iter().any(|(t, _)| format!("{t}.") == name) => {
                        r.add_answer(Record::from_rdata(
                            query.name().clone(),
                            0,
                            RData::A(A(Ipv4Addr::LOCALHOST)),
                        ));
                    }
                    RecordType::A if host.is_some() => {
                        for ip in host.map(|(_, ips)| ips.as_slice()).unwrap_or_default() {
                            r.add_answer(Record::from_rdata(
                                query.name().clone(),
                                0,
                                RData::A(A(*ip)),
                            ));
                        }
                    }
                    // Names that exist have no IPv6 address here.
                    RecordType::AAAA
                        if host.is_some() || now.iter().any(|(t, _)| format!("{t}.") == name) => {}
                    _ => {
                        r.set_response_code(ResponseCode::NXDomain);
                    }
                }
            }
            if let Ok(out) = r.to_vec() {
                let _ = sock.send_to(&out, from).await;
            }
        }
    });
    addr
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn peer_ids(agent: &str) -> Vec<String> {
    let (code, s) = mend_json(&["status", "--agent", agent]);
    assert_eq!(code, 0, "{s}");
    let mut ids: Vec<String> = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_come_from_dns_srv_records_are_scheduled_and_are_remembered() {
    let d = tempfile::tempdir().unwrap();
    let targets: Targets = Arc::new(Mutex::new(Vec::new()));
    let ns = dns_server(targets.clone()).await;
    let b = AgentProc::start("node-b", &d.path().join("b"), &[]);
    let c = AgentProc::start("node-c", &d.path().join("c"), &[]);
    let a_listen = format!("127.0.0.1:{}", free_port());
    let cfg = d.path().join("a.toml");
    std::fs::write(
        &cfg,
        format!(
            "[discovery]\npeers = \"dns:{}\"\nnameserver = \"{ns}\"\ninterval_ms = 1000\n",
            SRV_NAME.trim_end_matches('.')
        ),
    )
    .unwrap();
    let args = ["--config", cfg.to_str().unwrap(), "--http", "127.0.0.1:0"];
    // DNS names node-a itself and node-b.
    *targets.lock().unwrap() = vec![
        ("node-a".into(), port_of(&a_listen)),
        ("node-b".into(), port_of(&b.addr)),
    ];
    let a = AgentProc::start_at("node-a", &d.path().join("a"), &a_listen, &args);
    let found = until(Duration::from_secs(30), "node-b discovered", async || {
        let ids = peer_ids(&a.addr);
        ids.contains(&"node-b".to_string()).then_some(ids)
    })
    .await;
    assert_eq!(
        found,
        vec!["node-b"],
        "itself skipped, nothing else invented"
    );

    // The discovered peer is scheduled (node-a is the lower id) and can be
    // named by id.
    let http = a.http.clone().unwrap();
    until(
        Duration::from_secs(30),
        "a scheduled exchange with node-b",
        async || {
            let s = scrape(&http).await;
            (metric(&s, "mend_exchanges_total", &[("peer", "node-b")]) >= 1.0).then_some(())
        },
    )
    .await;
    write(
        &b,
        vec![put("only-at-b", "x", ver(now_ms() - 60_000, "node-b", 1))],
    )
    .await;
    let (code, v) = mend_json(&["diff", "--agent", &a.addr, "--peer", "node-b"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["divergent_keys"], 1, "{v}");

    // Re-resolved every interval: node-c appears.
    targets
        .lock()
        .unwrap()
        .push(("node-c".into(), port_of(&c.addr)));
    until(Duration::from_secs(30), "node-c discovered", async || {
        (peer_ids(&a.addr) == ["node-b", "node-c"]).then_some(())
    })
    .await;

    // Once both have exchanged with node-a, the purge horizon moves.
    until(
        Duration::from_secs(30),
        "the purge horizon to move",
        async || {
            let (_, st) = mend_json(&["status", "--agent", &a.addr]);
            st["ranges"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["purge_horizon_ms"].as_u64().unwrap() > 0)
                .then_some(())
        },
    )
    .await;

    // Restarted with DNS answering nothing: both are remembered, the
    // failed lookups are counted, and the purge waits for a resolution.
    a.stop();
    targets.lock().unwrap().clear();
    let a = AgentProc::start_at("node-a", &d.path().join("a"), &a_listen, &args);
    assert_eq!(peer_ids(&a.addr), ["node-b", "node-c"], "persisted");
    let http = a.http.clone().unwrap();
    until(
        Duration::from_secs(30),
        "a failed lookup counted",
        async || {
            let s = scrape(&http).await;
            (metric(&s, "mend_discovery_lookups_total", &[("reason", "failed")]) >= 1.0)
                .then_some(())
        },
    )
    .await;
    let (_, st) = mend_json(&["status", "--agent", &a.addr]);
    let ranges: &Vec<Value> = st["ranges"].as_array().unwrap();
    assert!(
        ranges.iter().all(|r| r["purge_horizon_ms"] == 0),
        "no purge while discovery has not resolved since the start: {st}"
    );
    a.stop();
    b.stop();
    c.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_come_from_dns_a_records_at_one_port_with_the_shared_name_checked() {
    // As in a StatefulSet behind a headless Service: one name, an A record
    // per pod, every agent at the same port (here on three loopback
    // addresses), and every certificate carrying the shared name.
    const SHARED: &str = "peers.mend.test";
    let d = tempfile::tempdir().unwrap();
    // Each also names its own loopback address, for the test's own writes.
    for (n, ip) in [
        ("node-aa", "127.0.0.1"),
        ("node-ab", "127.0.0.2"),
        ("node-ac", "127.0.0.3"),
    ] {
        cert_set_with(n, &[SHARED, ip]);
    }
    // node-ad's certificate lacks the shared name: it answers at an address
    // DNS gives, but is never taken for a peer.
    cert_set("node-ad");
    let port = free_port();
    let listen = |last: u8| format!("127.0.0.{last}:{port}");
    let b = AgentProc::start_at("node-ab", &d.path().join("b"), &listen(2), &[]);
    let c = AgentProc::start_at("node-ac", &d.path().join("c"), &listen(3), &[]);
    let x = AgentProc::start_at("node-ad", &d.path().join("x"), &listen(4), &[]);
    let hosts: Hosts = Arc::new(Mutex::new(vec![(
        SHARED.into(),
        vec![
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(127, 0, 0, 2),
            Ipv4Addr::new(127, 0, 0, 4),
        ],
    )]));
    let ns = dns_server_with(Arc::new(Mutex::new(Vec::new())), hosts.clone()).await;
    let cfg = d.path().join("a.toml");
    std::fs::write(
        &cfg,
        format!("[discovery]\npeers = \"dns:{SHARED}:{port}\"\nnameserver = \"{ns}\"\ninterval_ms = 1000\n"),
    )
    .unwrap();
    let a = AgentProc::start_at(
        "node-aa",
        &d.path().join("a"),
        &listen(1),
        &["--config", cfg.to_str().unwrap(), "--http", "127.0.0.1:0"],
    );
    until(Duration::from_secs(30), "node-ab discovered", async || {
        peer_ids(&a.addr)
            .contains(&"node-ab".to_string())
            .then_some(())
    })
    .await;
    // DNS adds node-ac: it is found on a later round.
    hosts.lock().unwrap()[0].1.push(Ipv4Addr::new(127, 0, 0, 3));
    until(Duration::from_secs(30), "node-ac discovered", async || {
        (peer_ids(&a.addr) == ["node-ab", "node-ac"]).then_some(())
    })
    .await;
    // node-ad's address came in the first answer, so it was asked in the
    // round that found node-ab, before the one that found node-ac: its
    // certificate does not carry the DNS name, so it is no peer (the list
    // above is exact), and node-aa itself (127.0.0.1) was recognised and
    // skipped.
    let http = a.http.clone().unwrap();
    let s = scrape(&http).await;
    assert!(metric(&s, "mend_discovery_lookups_total", &[("reason", "ok")]) >= 2.0);
    // The discovered peer at the shared port is exchanged with by id.
    write(
        &b,
        vec![put("only-at-ab", "x", ver(now_ms() - 60_000, "node-ab", 1))],
    )
    .await;
    let (code, v) = mend_json(&["diff", "--agent", &a.addr, "--peer", "node-ab"]);
    assert_eq!((code, v["divergent_keys"].as_u64()), (1, Some(1)), "{v}");
    a.stop();
    b.stop();
    c.stop();
    x.stop();
}
