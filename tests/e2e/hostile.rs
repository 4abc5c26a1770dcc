//! A hostile peer: a test gRPC server speaking the Peer service over mutual
//! TLS with a valid cluster certificate and the cluster secret (an
//! authenticated but buggy or compromised peer), answering a real agent's
//! diff and repair with a packed bomb, an endless listing, entries of
//! buckets it was not asked about, and fetched entries of other keys. The
//! agent must fail with a clear error, within bounded memory, having
//! written nothing. Also: readers that stop reading pin nothing.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use mend_rpc::pb;
use mend_rpc::pb::peer_client::PeerClient;
use tonic::{Request, Response, Status, Streaming};

use crate::harness::*;

/// What the hostile peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    /// A leaf reply whose front-coded keys decode to gigabytes.
    Bomb,
    /// Valid entries, reply after reply, without end.
    Endless,
    /// Entries of buckets other than the ones asked about.
    OutOfBucket,
    /// One honest listing, then fetched entries of other keys.
    WrongFetch,
    /// A handshake answer in another protocol version.
    WrongVersion,
    /// A handshake answer naming the same range twice.
    DuplicateRange,
    /// A handshake answer without a valid proof of the secret.
    NoProof,
    /// A listing stream that sends its headers, then nothing, forever.
    Stall,
}

struct Hostile {
    attack: Attack,
    secret: mend_core::Secret,
    shape: mend_core::TreeShape,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The first key named `evil-N` whose bucket satisfies `want`.
fn key_where(
    secret: &mend_core::Secret,
    shape: mend_core::TreeShape,
    want: impl Fn(u32) -> bool,
) -> Vec<u8> {
    (0u64..)
        .map(|i| format!("evil-{i}").into_bytes())
        .find(|k| want(shape.bucket_of(secret.placement(k))))
        .unwrap()
}

fn entry(key: Vec<u8>, seq: u64) -> mend_core::exchange::EntrySummary {
    mend_core::exchange::EntrySummary {
        key,
        version: mend_core::Version {
            ms: now_ms() - 600_000,
            logical: 0,
            origin: mend_core::NodeId::new("node-evil").unwrap(),
            seq,
        },
        tombstone: false,
        hash: 0,
    }
}

/// A packed list of `n` 4 KiB keys, each sharing all but 3 bytes with the
/// previous one: ~8 wire bytes per entry, 4 KiB decoded.
fn bomb(n: u32) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    varint(&mut out, 1);
    varint(&mut out, 9);
    out.extend_from_slice(b"node-evil");
    varint(&mut out, u64::from(n));
    varint(&mut out, 1);
    for i in 0..n {
        if i == 0 {
            varint(&mut out, 0);
            varint(&mut out, 4096);
            out.extend(std::iter::repeat_n(b'k', 4093));
        } else {
            varint(&mut out, 4093);
            varint(&mut out, 3);
        }
        out.extend_from_slice(&i.to_be_bytes()[1..]);
        varint(&mut out, 0);
        varint(&mut out, 0);
        varint(&mut out, 0);
    }
    out
}

#[tonic::async_trait]
impl pb::peer_server::Peer for Hostile {
    async fn challenge(
        &self,
        _: Request<pb::ChallengeRequest>,
    ) -> Result<Response<pb::ChallengeResponse>, Status> {
        Ok(Response::new(pb::ChallengeResponse {
            protocol_version: mend_rpc::PROTOCOL_VERSION,
            challenge: vec![9; 16],
        }))
    }

    async fn handshake(
        &self,
        req: Request<pb::HandshakeRequest>,
    ) -> Result<Response<pb::HandshakeResponse>, Status> {
        let r = req.into_inner();
        let node = "node-evil";
        let mut ranges: Vec<_> = r
            .ranges
            .iter()
            .map(|s| pb::RangeRoot {
                name: s.name.clone(),
                root: 0xfeed,
                entries: 1 << 40,
                depth: s.depth,
            })
            .collect();
        if self.attack == Attack::DuplicateRange {
            ranges.extend(ranges.clone());
        }
        let mut proof = self
            .secret
            .handshake_proof("responder", &[&r.nonce, &r.challenge, node.as_bytes()])
            .to_vec();
        if self.attack == Attack::NoProof {
            // A replay of a proof for another nonce.
            proof = self
                .secret
                .handshake_proof("responder", &[&[0; 16], &r.challenge, node.as_bytes()])
                .to_vec();
        }
        Ok(Response::new(pb::HandshakeResponse {
            protocol_version: mend_rpc::PROTOCOL_VERSION
                + u32::from(self.attack == Attack::WrongVersion),
            node_id: node.into(),
            ranges,
            now_ms: now_ms(),
            proof,
            incarnation: 1,
        }))
    }

    async fn probe(
        &self,
        _: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        Err(Status::unimplemented("the victim is empty: no probes"))
    }

    type LeavesStream = BoxStream<pb::LeafReply>;

    async fn leaves(
        &self,
        req: Request<pb::LeavesRequest>,
    ) -> Result<Response<Self::LeavesStream>, Status> {
        let q = req.into_inner().queries;
        let first = q.first().map(|q| q.first).unwrap_or(0);
        let end = q.first().map(|q| q.first + q.count).unwrap_or(0);
        let (attack, secret, shape) = (self.attack, self.secret.clone(), self.shape);
        let s = async_stream(move |tx| async move {
            match attack {
                Attack::Bomb => {
                    let _ = tx
                        .send(Ok(pb::LeafReply {
                            query: 0,
                            lacking: vec![],
                            extra: bomb(1_000_000),
                        }))
                        .await;
                }
                Attack::Endless => {
                    let batch: Vec<_> = (0..5_000u64)
                        .map(|i| entry(format!("endless-{first}-{i:06}").into_bytes(), i))
                        .collect();
                    let extra = mend_core::packed::encode(&batch);
                    loop {
                        if tx
                            .send(Ok(pb::LeafReply {
                                query: 0,
                                lacking: vec![],
                                extra: extra.clone(),
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                Attack::OutOfBucket => {
                    let k = key_where(&secret, shape, |b| b < first || b >= end);
                    let _ = tx
                        .send(Ok(pb::LeafReply {
                            query: 0,
                            lacking: vec![],
                            extra: mend_core::packed::encode(&[entry(k, 1)]),
                        }))
                        .await;
                }
                Attack::WrongVersion | Attack::DuplicateRange | Attack::NoProof => {}
                Attack::Stall => {
                    // Hold the stream open without a message until the
                    // victim gives up and resets it.
                    tx.closed().await;
                }
                Attack::WrongFetch => {
                    if first == 0 {
                        let k = key_where(&secret, shape, |b| b < end);
                        let _ = tx
                            .send(Ok(pb::LeafReply {
                                query: 0,
                                lacking: vec![],
                                extra: mend_core::packed::encode(&[entry(k, 1)]),
                            }))
                            .await;
                    }
                }
            }
        });
        Ok(Response::new(s))
    }

    type FetchStream = BoxStream<pb::FetchedEntry>;

    async fn fetch(
        &self,
        req: Request<pb::FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let keys = req.into_inner().keys;
        let s = async_stream(move |tx| async move {
            for k in keys {
                let e = pb::Entry {
                    key: b"somebody-else".to_vec(),
                    version: ver(now_ms() - 600_000, "node-evil", 1),
                    tombstone: false,
                    value: b"planted".to_vec(),
                };
                let _ = tx
                    .send(Ok(pb::FetchedEntry {
                        key: k,
                        found: true,
                        entry: Some(e),
                    }))
                    .await;
            }
        });
        Ok(Response::new(s))
    }

    async fn push(
        &self,
        _: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        Err(Status::unimplemented("hostile"))
    }
    async fn undo_push(
        &self,
        _: Request<pb::UndoPushRequest>,
    ) -> Result<Response<pb::UndoResponse>, Status> {
        Err(Status::unimplemented("hostile"))
    }
    async fn sample(
        &self,
        _: Request<pb::PeerSampleRequest>,
    ) -> Result<Response<pb::EntrySummaries>, Status> {
        Err(Status::unimplemented("hostile"))
    }
    async fn lookup(
        &self,
        _: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        Err(Status::unimplemented("hostile"))
    }
    async fn shadow_push(
        &self,
        _: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        Err(Status::unimplemented("hostile"))
    }

    async fn reserve(
        &self,
        _: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        Err(Status::unimplemented("hostile"))
    }

    async fn release(
        &self,
        _: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        Err(Status::unimplemented("hostile"))
    }
}

/// A boxed stream fed by `f` through a small channel.
fn async_stream<T: Send + 'static, F, Fut>(f: F) -> BoxStream<T>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Serves `attack` over mutual TLS as `node-evil`; returns its address.
async fn serve(attack: Attack) -> String {
    let set = cert_set("node-evil");
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(set.join("tls.crt")).unwrap(),
        std::fs::read(set.join("tls.key")).unwrap(),
    );
    let ca = tonic::transport::Certificate::from_pem(std::fs::read(set.join("ca.crt")).unwrap());
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(ca);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let svc = Hostile {
        attack,
        secret: mend_core::Secret::from_bytes(SECRET.as_bytes()),
        shape: mend_core::TreeShape::default(),
    };
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(
                pb::peer_server::PeerServer::new(svc)
                    .max_encoding_message_size(mend_rpc::MESSAGE_BYTES_MAX),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
            .await
            .unwrap();
    });
    addr
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Most peak RSS an agent under attack may reach: its configured limits
/// (16 concurrent leaf streams × a 16 MiB message each, 2 MiB decoded per
/// reply, diff_keys_max = 20 000 summaries) plus RocksDB and the runtime.
const ATTACKED_RSS_MAX: u64 = 512 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_peer_gets_a_clear_error_within_bounded_memory_and_writes_nothing() {
    // Proves each attack of an authenticated peer ends the diff or repair
    // with a one-line error naming the breach, the agent's peak memory stays
    // within its limits, and nothing is written to the victim.
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "[limits]\ndiff_keys_max = 20000\nrpc_timeout_ms = 2000\n",
    )
    .unwrap();
    let a = AgentProc::start(
        "node-a",
        &d.path().join("a"),
        &["--config", cfg.to_str().unwrap()],
    );
    for (attack, cmd, expect) in [
        (Attack::Bomb, "diff", "decoded keys exceed"),
        (Attack::Endless, "diff", "diff_keys_max"),
        (Attack::OutOfBucket, "diff", "peer listed a key of bucket"),
        (Attack::WrongFetch, "repair", "another key's entry"),
        (Attack::WrongVersion, "diff", "answered with protocol"),
        (Attack::DuplicateRange, "diff", "answered twice for range"),
        (
            Attack::NoProof,
            "diff",
            "does not prove this cluster's secret",
        ),
        // Timeouts cover streamed bodies, not just response headers.
        (
            Attack::Stall,
            "diff",
            "no message of the stream within 2000 ms",
        ),
    ] {
        let evil = serve(attack).await;
        let out = mend(&[cmd, "--agent", &a.addr, "--peer", &evil]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{attack:?}: {out:?}");
        assert!(err.contains(expect), "{attack:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{attack:?}: one line: {err}");
        let (code, st) = mend_json(&["status", "--agent", &a.addr]);
        assert_eq!(code, 0, "{attack:?}: still serving");
        assert_eq!(
            st["ranges"][0]["entries"], 0,
            "{attack:?}: nothing written: {st}"
        );
    }
    let rss = peak_rss(a.child.id());
    eprintln!("peak RSS of the attacked agent: {} MiB", rss >> 20);
    assert!(rss < ATTACKED_RSS_MAX, "peak RSS {} MiB", rss >> 20);
    a.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_stop_reading_pin_no_threads_and_do_not_stall_writes() {
    // Proves that streams whose readers stop reading hold no blocking
    // thread: with three times more stalled Fetch streams than the blocking
    // pool has threads (512), writes still go through (before the fix,
    // they waited behind pinned threads until the readers left).
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("agent.toml");
    std::fs::write(&cfg, "[limits]\nstream_send_timeout_ms = 60000\n").unwrap();
    let a = AgentProc::start(
        "node-a",
        &d.path().join("a"),
        &["--config", cfg.to_str().unwrap()],
    );
    let big = "v".repeat(256 << 10);
    for half in [0..32, 32..64] {
        let w = half
            .map(|i| {
                put(
                    &format!("big-{i:02}"),
                    &big,
                    ver(now_ms() - 60_000, "node-a", i + 1),
                )
            })
            .collect();
        write(&a, w).await;
    }
    let keys: Vec<Vec<u8>> = (0..64)
        .map(|i| format!("big-{i:02}").into_bytes())
        .collect();
    // 1 500 streams opened at once (6 connections of 250), none ever read; each task holds its
    // stream until told to go.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each task says when its stream is open (its reply headers came).
    let (opened_tx, mut opened) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let p = PeerClient::new(channel_as(&a.addr, "node-x").await)
            .max_decoding_message_size(mend_rpc::MESSAGE_BYTES_MAX);
        for _ in 0..250 {
            let mut p = p.clone();
            let keys = keys.clone();
            let mut stop = stop_rx.clone();
            let opened = opened_tx.clone();
            stalled.push(tokio::spawn(async move {
                let s = p.fetch(pb::FetchRequest { keys }).await;
                if s.is_ok() {
                    let _ = opened.send(());
                }
                let _ = stop.wait_for(|s| *s).await;
                drop(s);
            }));
        }
    }
    // Wait until the agent's stream slots (server_streams_max = 32) are all
    // taken by readers that never read.
    for _ in 0..32 {
        tokio::time::timeout(Duration::from_secs(30), opened.recv())
            .await
            .expect("32 streams opened")
            .expect("stream tasks alive");
    }
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(20), async {
        let mut c = a.replica().await;
        c.put(pb::PutRequest {
            key: b"during".to_vec(),
            value: b"stall".to_vec(),
            version: None,
        })
        .await
    })
    .await;
    assert!(
        matches!(r, Ok(Ok(_))),
        "a write went through while 1 500 readers stall: {r:?}"
    );
    eprintln!("write during 1 500 stalled streams took {:?}", t.elapsed());
    // Health says what is true: the Peer service is overloaded (every reply
    // slot taken) while the Replica service still serves.
    let peer_health = async || {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;
        let mut h = HealthClient::new(channel(&a.addr).await);
        let st = |svc: &str| HealthCheckRequest {
            service: svc.into(),
        };
        let p = h
            .check(st("mend.v1.Peer"))
            .await
            .unwrap()
            .into_inner()
            .status;
        let r = h
            .check(st("mend.v1.Replica"))
            .await
            .unwrap()
            .into_inner()
            .status;
        (p, r)
    };
    until(Duration::from_secs(20), "Peer NOT_SERVING", async || {
        (peer_health().await == (2, 1)).then_some(())
    })
    .await;
    stop_tx.send(true).unwrap();
    for t in stalled {
        t.await.unwrap();
    }
    until(Duration::from_secs(20), "Peer SERVING again", async || {
        (peer_health().await == (1, 1)).then_some(())
    })
    .await;
    a.stop();
}
