//! The Peer service: what other agents call during an exchange and a repair.
//! Every request is validated (shapes, limits, keys, versions) before it
//! touches the store; protocol violations are `INVALID_ARGUMENT`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use mend_core::exchange::{LeafProbe, check_probe_request, respond_leaves, respond_probe};
use mend_rpc::convert::{
    key_from_pb, leaf_probe_from_pb, leaf_reply_to_pb, probe_from_pb, probe_reply_to_pb,
    version_to_pb,
};
use mend_rpc::{PROTOCOL_VERSION, pb};
use mend_store::RangeView;

use crate::error::AgentError;
use crate::journal::{self, RepairHeader};
use crate::link::Inbound;
use crate::state::{AgentBackend, AgentState, AgentStore};
use crate::wire::write_from_pb;

pub use crate::wire::PUSH_ENTRIES_MAX;

/// Most entries one shadow push may carry (they are held in memory).
pub const SHADOW_ENTRIES_MAX: usize = 100_000;

/// Keys read per blocking task of a `Fetch` stream (one MultiGet): with
/// the channel depth, bounds the values one stream holds in memory,
/// (16 + 2) × the value size.
const FETCH_CHUNK_KEYS: usize = 16;

/// Depth of the channel between a streamed reply's producer and tonic.
const SERVER_STREAM_DEPTH: usize = 2;

/// Buckets listed per blocking task of a `Leaves` stream: bounds the tree
/// lock's hold and the listing held before it is sent.
const LEAVES_CHUNK_BUCKETS: u64 = 256;

/// Splits a leaf probe's queries into consecutive chunks of at most
/// `LEAVES_CHUNK_BUCKETS` buckets (at least one query each).
fn leaf_chunks(lp: &LeafProbe) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut load) = (0, 0u64);
    for (i, q) in lp.queries.iter().enumerate() {
        if i > start && load + u64::from(q.count) > LEAVES_CHUNK_BUCKETS {
            out.push(start..i);
            (start, load) = (i, 0);
        }
        load += u64::from(q.count);
    }
    if start < lp.queries.len() {
        out.push(start..lp.queries.len());
    }
    out
}

/// Sends `msg` on a server stream's channel, waiting at most `timeout` for
/// a slow reader. False when the stream is gone or the reader stalled: the
/// producer stops, releasing what it holds.
async fn send_within<T>(
    tx: &mpsc::Sender<Result<T, Status>>,
    msg: Result<T, Status>,
    timeout: Duration,
) -> bool {
    matches!(
        tokio::time::timeout(timeout, tx.send(msg)).await,
        Ok(Ok(()))
    )
}

/// Implementation of `mend.v1.Peer`. The `on_*` methods are the service
/// without its transport: the gRPC trait impl below calls them with the
/// caller's certificate identity, the in-memory link of `link::mem` with
/// the identity it was made for.
pub struct PeerService<B: AgentBackend = mend_rocks::RocksBackend> {
    state: Arc<AgentState<B>>,
}

impl<B: AgentBackend> PeerService<B> {
    /// A service over `state`.
    pub fn new(state: Arc<AgentState<B>>) -> PeerService<B> {
        PeerService { state }
    }

    /// The agent this service answers for.
    pub fn state(&self) -> &Arc<AgentState<B>> {
        &self.state
    }

    /// A slot among the `limits.server_streams_max` streamed replies
    /// (Leaves, Fetch) produced at once, waited for at most `wait`: a flood
    /// of streams whose readers stall queues here, holding neither threads
    /// nor listings.
    async fn stream_permit(
        &self,
        wait: Duration,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        match tokio::time::timeout(wait, self.state.streams.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Status::unavailable(format!(
                "all {} reply streams are busy (limits.server_streams_max); retry later",
                self.state.config.limits.server_streams_max
            ))),
        }
    }

    /// The shape range `id` is compared at when a request names `depth`:
    /// 1..=its tree's depth now (depths only grow, so a depth valid at the
    /// handshake stays valid). Anything else is `INVALID_ARGUMENT`.
    fn compared_shape(&self, id: u16, depth: u32) -> Result<mend_core::TreeShape, Status> {
        self.state.store.shape_at(id, depth).map_err(|e| {
            Status::invalid_argument(format!(
                "compared depth: {e} (protocol 5 names it on every request)"
            ))
        })
    }

    fn range_id(&self, name: &str) -> Result<u16, Status> {
        self.state.store.ranges().by_name(name).ok_or_else(|| {
            Status::not_found(format!("no range named {name:?} on {}", self.state.node_id))
        })
    }
}

/// Wall-clock ms (challenge expiry; not the store's HLC).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The root of the range `want` names, if this store serves it with the
/// same fan-out and bounds; a range of the same name with another fan-out
/// or other bounds is `FAILED_PRECONDITION` (comparing it would report
/// false divergence forever). Depths may differ (protocol 5): the answer
/// carries this tree's depth, and the initiator compares at the smaller.
fn shared_range<B: AgentBackend>(
    store: &AgentStore<B>,
    want: &pb::RangeShape,
    from: &str,
) -> Result<Result<Option<pb::RangeRoot>, Status>, mend_store::StoreError> {
    let Some(id) = store.ranges().by_name(&want.name) else {
        return Ok(Ok(None));
    };
    let spec = &store.ranges().specs()[usize::from(id)];
    let shape = store.shape(id)?;
    if shape.fanout != want.fanout {
        return Ok(Err(Status::failed_precondition(format!(
            "range {:?}: tree fan-out mismatch: {} here, {} at {from} (trees of different \
             fan-outs cannot be compared; depths may differ)",
            want.name, shape.fanout, want.fanout
        ))));
    }
    let want_end = want.has_end.then_some(want.end.as_slice());
    if spec.start != want.start || spec.end.as_deref() != want_end {
        return Ok(Err(Status::failed_precondition(format!(
            "range {:?}: bounds differ: [{}, {}) here, [{}, {}) at {from}",
            want.name,
            mend_rpc::convert::bound_str(&spec.start),
            spec.end
                .as_deref()
                .map(mend_rpc::convert::bound_str)
                .unwrap_or_else(|| "∞".into()),
            mend_rpc::convert::bound_str(&want.start),
            want_end
                .map(mend_rpc::convert::bound_str)
                .unwrap_or_else(|| "∞".into()),
        ))));
    }
    if spec.versionless != want.versionless {
        let says = |v: bool| if v { "versionless" } else { "versioned" };
        return Ok(Err(Status::failed_precondition(format!(
            "range {:?}: {} here, {} at {from}: a range without versions cannot be compared \
             with one whose entries carry them (every key would differ)",
            want.name,
            says(spec.versionless),
            says(want.versionless)
        ))));
    }
    let root = store.root(id)?;
    Ok(Ok(Some(pb::RangeRoot {
        name: want.name.clone(),
        root: mend_core::exchange::node_hash(&root),
        entries: root.count,
        depth: shape.depth,
    })))
}

impl<B: AgentBackend> PeerService<B> {
    /// `Challenge`.
    pub fn on_challenge(&self) -> pb::ChallengeResponse {
        let c = self.state.challenges.issue(wall_ms());
        pb::ChallengeResponse {
            protocol_version: PROTOCOL_VERSION,
            challenge: c.to_vec(),
        }
    }

    /// `Handshake`, from the caller with certificate identity `who`.
    pub async fn on_handshake(
        &self,
        who: Option<Arc<mend_tls::Identity>>,
        r: pb::HandshakeRequest,
    ) -> Result<pb::HandshakeResponse, Status> {
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version {} is not supported (this agent speaks {PROTOCOL_VERSION})",
                r.protocol_version
            )));
        }
        // The node id a peer claims must be a name of its certificate, so
        // metrics, journals and reports name who really called.
        if let Some(id) = &who
            && !id.has(&r.node_id)
        {
            self.state.metrics.auth_denied("Peer", "identity_mismatch");
            return Err(Status::permission_denied(format!(
                "node id {:?} is not a name of the caller's certificate ({id})",
                r.node_id
            )));
        }
        if r.nonce.len() != crate::auth::NONCE_BYTES {
            return Err(Status::invalid_argument(format!(
                "nonce: {} bytes, expected {}",
                r.nonce.len(),
                crate::auth::NONCE_BYTES
            )));
        }
        if !self.state.challenges.take(&r.challenge, wall_ms()) {
            return Err(Status::failed_precondition(
                "handshake challenge unknown, used or expired: call Challenge again",
            ));
        }
        let want =
            crate::auth::initiator_proof(&self.state.secret, &r.challenge, &r.nonce, &r.node_id);
        if !crate::auth::proof_eq(&r.proof, &want) {
            self.state.metrics.auth_denied("Peer", "secret_mismatch");
            return Err(Status::permission_denied(
                "cluster secret mismatch: both agents must use the same secret",
            ));
        }
        let proof = crate::auth::responder_proof(
            &self.state.secret,
            &r.challenge,
            &r.nonce,
            self.state.node_id.as_str(),
        );
        let only_shared = r.only_shared;
        let from = r.node_id.clone();
        let wanted = r.ranges;
        let ranges = self
            .state
            .blocking(move |store| {
                let mut out = Vec::new();
                for want in wanted {
                    match shared_range(store, &want, &from)? {
                        Err(e) => return Ok(Err(e)),
                        Ok(Some(rr)) => out.push(rr),
                        Ok(None) if only_shared => {}
                        Ok(None) => {
                            return Ok(Err(Status::not_found(format!(
                                "no range named {:?} on {}",
                                want.name,
                                store.node_id()
                            ))));
                        }
                    }
                }
                Ok(Ok(out))
            })
            .await??;
        Ok(pb::HandshakeResponse {
            protocol_version: PROTOCOL_VERSION,
            node_id: self.state.node_id.to_string(),
            ranges,
            now_ms: self.state.store.now_ms(),
            proof: proof.to_vec(),
            incarnation: self.state.incarnation,
        })
    }

    /// `Probe`.
    pub async fn on_probe(&self, r: pb::ProbeRequest) -> Result<pb::ProbeResponse, Status> {
        let id = self.range_id(&r.range)?;
        let depth = r.depth;
        let probes: Vec<_> = r.probes.into_iter().map(probe_from_pb).collect();
        let shape = self.compared_shape(id, depth)?;
        check_probe_request(shape, &probes).map_err(AgentError::from)?;
        let store = self.state.store.clone();
        let replies = self
            .state
            .run(move || {
                let view = RangeView::at_depth(&store, id, depth).map_err(AgentError::from)?;
                probes
                    .iter()
                    .map(|p| respond_probe(&view, p).map(|rep| probe_reply_to_pb(&rep)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(AgentError::from)
            })
            .await?;
        Ok(pb::ProbeResponse { replies })
    }

    /// `Leaves`.
    pub async fn on_leaves(&self, r: pb::LeavesRequest) -> Result<Inbound<pb::LeafReply>, Status> {
        let id = self.range_id(&r.range)?;
        let depth = r.depth;
        self.compared_shape(id, depth)?;
        let lp = leaf_probe_from_pb(r);
        // The whole probe is checked first (limits, bounds, total span);
        // then it is answered a few queries at a time, each chunk listed on
        // the blocking pool (the tree lock held for that chunk only) and
        // sent before the next is listed.
        let store = self.state.store.clone();
        let check = lp.clone();
        self.state
            .run(move || {
                let view = RangeView::at_depth(&store, id, depth).map_err(AgentError::from)?;
                mend_core::exchange::check_leaf_probe(&view, &check).map_err(AgentError::from)
            })
            .await?;
        let send_timeout = Duration::from_millis(self.state.config.limits.stream_send_timeout_ms);
        let permit = self.stream_permit(send_timeout).await?;
        let (tx, rx) = mpsc::channel(SERVER_STREAM_DEPTH);
        let state = self.state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            for chunk in leaf_chunks(&lp) {
                let sub = LeafProbe {
                    queries: lp.queries[chunk.clone()].to_vec(),
                };
                let store = state.store.clone();
                let listed = state
                    .run(move || {
                        let view =
                            RangeView::at_depth(&store, id, depth).map_err(AgentError::from)?;
                        respond_leaves(&view, &sub).map_err(AgentError::from)
                    })
                    .await;
                let replies = match listed {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                for mut rep in replies {
                    rep.query += chunk.start as u32;
                    if !send_within(&tx, Ok(leaf_reply_to_pb(&rep)), send_timeout).await {
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// The keys of a `Fetch` or `Lookup`: at most `limits.fetch_keys_max`,
    /// each a valid key.
    fn fetch_keys(&self, r: pb::FetchRequest) -> Result<Vec<Vec<u8>>, Status> {
        let max = self.state.config.limits.fetch_keys_max;
        if r.keys.len() > max {
            return Err(Status::invalid_argument(format!(
                "{} keys exceed fetch_keys_max = {max}",
                r.keys.len()
            )));
        }
        for k in &r.keys {
            key_from_pb(k)?;
        }
        Ok(r.keys)
    }

    /// `Fetch`.
    pub async fn on_fetch(&self, r: pb::FetchRequest) -> Result<Inbound<pb::FetchedEntry>, Status> {
        let keys = self.fetch_keys(r)?;
        let send_timeout = Duration::from_millis(self.state.config.limits.stream_send_timeout_ms);
        let permit = self.stream_permit(send_timeout).await?;
        let (tx, rx) = mpsc::channel(SERVER_STREAM_DEPTH);
        let state = self.state.clone();
        // A few keys at a time: each chunk read on the blocking pool (one
        // MultiGet), then sent with a deadline, so a reader that stops
        // reading holds no thread and at most one chunk of values.
        tokio::spawn(async move {
            let _permit = permit;
            for chunk in keys.chunks(FETCH_CHUNK_KEYS) {
                let got = crate::repair::rows::read_records(&state, chunk.to_vec()).await;
                let got = match got {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                for (key, rec) in chunk.iter().cloned().zip(got) {
                    let msg = match rec {
                        Some(r) => pb::FetchedEntry {
                            key: key.clone(),
                            found: true,
                            entry: Some(pb::Entry {
                                key,
                                version: Some(version_to_pb(&r.meta.version)),
                                tombstone: r.meta.tombstone,
                                value: r.value,
                            }),
                        },
                        None => pb::FetchedEntry {
                            key,
                            found: false,
                            entry: None,
                        },
                    };
                    if !send_within(&tx, Ok(msg), send_timeout).await {
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// `Push`, from `owner` (the pusher's certificate identity; empty on a
    /// plaintext agent): the repair belongs to it, and only it may add to
    /// it or undo it.
    pub async fn on_push(
        &self,
        owner: String,
        mut stream: Inbound<pb::PushRequest>,
    ) -> Result<pb::PushResponse, Status> {
        use futures::StreamExt;
        let mut id: Option<String> = None;
        let mut applied = 0u64;
        let mut not_applied = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            if msg.entries.len() > PUSH_ENTRIES_MAX {
                return Err(Status::invalid_argument(format!(
                    "{} entries in one push message exceed {PUSH_ENTRIES_MAX}",
                    msg.entries.len()
                )));
            }
            let rid = match &id {
                Some(i) => {
                    if !msg.repair_id.is_empty() && msg.repair_id != *i {
                        return Err(Status::invalid_argument(
                            "repair_id changed within one push",
                        ));
                    }
                    i.clone()
                }
                None => {
                    if !journal::valid_id(&msg.repair_id) {
                        return Err(Status::invalid_argument(
                            "repair_id must be 1..=128 printable ASCII bytes (journal::REPAIR_ID_BYTES_MAX)",
                        ));
                    }
                    let h = RepairHeader::new(
                        msg.repair_id.clone(),
                        owner.clone(),
                        false,
                        self.state.store.now_ms(),
                    );
                    let hh = h.clone();
                    let mine = self
                        .state
                        .blocking(move |store| match journal::get_header(store, &hh.id)? {
                            Some(old) => Ok(old.peer == hh.peer && !old.initiator),
                            None => journal::put_header(store, &hh).map(|()| true),
                        })
                        .await?;
                    if !mine {
                        self.state.metrics.auth_denied("Peer", "not_owner");
                        return Err(Status::permission_denied(format!(
                            "repair {} belongs to another identity",
                            h.id
                        )));
                    }
                    id = Some(h.id.clone());
                    h.id
                }
            };
            let mut writes = Vec::with_capacity(msg.entries.len());
            for e in msg.entries {
                writes.push(write_from_pb(e)?);
            }
            self.state.check_future(&writes)?;
            for (key, a) in crate::repair::rows::apply_writes(&self.state, &rid, writes).await? {
                match a {
                    crate::repair::rows::Applied::Applied => applied += 1,
                    crate::repair::rows::Applied::Kept(decision) => {
                        not_applied.push(pb::KeyOutcome {
                            key,
                            decision: mend_rpc::enums::decision_to_pb(decision),
                        })
                    }
                }
            }
        }
        if let Some(rid) = id {
            self.state
                .blocking(move |store| {
                    if let Some(mut h) = journal::get_header(store, &rid)? {
                        h.keys_here += applied;
                        journal::put_header(store, &h)?;
                    }
                    Ok(())
                })
                .await?;
        }
        Ok(pb::PushResponse {
            applied,
            not_applied,
        })
    }

    /// `Sample`.
    pub async fn on_sample(&self, r: pb::PeerSampleRequest) -> Result<pb::EntrySummaries, Status> {
        let id = self.range_id(&r.range)?;
        if r.count == 0 || r.count > crate::sample::SAMPLE_KEYS_MAX {
            return Err(Status::invalid_argument(format!(
                "count must be in 1..={}",
                crate::sample::SAMPLE_KEYS_MAX
            )));
        }
        let drawn = self
            .state
            .blocking(move |s| s.sample_entries(id, r.count as usize, r.seed))
            .await?;
        Ok(pb::EntrySummaries {
            entries: drawn
                .into_iter()
                .map(|e| pb::EntrySummary {
                    hash: mend_core::exchange::entry_hash(&e.digest),
                    key: e.key,
                    version: Some(version_to_pb(&e.meta.version)),
                    tombstone: e.meta.tombstone,
                })
                .collect(),
        })
    }

    /// `Lookup`.
    pub async fn on_lookup(&self, r: pb::FetchRequest) -> Result<pb::LookupResponse, Status> {
        let keys = self.fetch_keys(r)?;
        let results = self
            .state
            .blocking(move |s| {
                keys.into_iter()
                    .map(|key| {
                        Ok(match s.summary(&key)? {
                            Some(e) => pb::LookupResult {
                                found: true,
                                entry: Some(mend_rpc::convert::summary_to_pb(&e)),
                                key,
                            },
                            None => pb::LookupResult {
                                key,
                                found: false,
                                entry: None,
                            },
                        })
                    })
                    .collect::<Result<Vec<_>, mend_store::StoreError>>()
            })
            .await?;
        Ok(pb::LookupResponse { results })
    }

    /// `ShadowPush`.
    pub async fn on_shadow_push(
        &self,
        mut stream: Inbound<pb::PushRequest>,
    ) -> Result<pb::LookupResponse, Status> {
        use futures::StreamExt;
        let mut writes = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            if writes.len() + msg.entries.len() > SHADOW_ENTRIES_MAX {
                return Err(Status::invalid_argument(format!(
                    "a shadow push carries at most {SHADOW_ENTRIES_MAX} entries"
                )));
            }
            for e in msg.entries {
                writes.push(write_from_pb(e)?);
            }
        }
        let state = self.state.clone();
        let after = self
            .state
            .run(move || {
                B::shadow_apply(&state.store, &state.config.data_dir, "peer", writes)
                    .map_err(AgentError::from)
            })
            .await?;
        Ok(pb::LookupResponse {
            results: after
                .into_iter()
                .map(|(key, e)| match e {
                    Some(e) => pb::LookupResult {
                        key,
                        found: true,
                        entry: Some(mend_rpc::convert::summary_to_pb(&e)),
                    },
                    None => pb::LookupResult {
                        key,
                        found: false,
                        entry: None,
                    },
                })
                .collect(),
        })
    }

    /// `UndoPush`, from `owner` (`None` on a plaintext agent).
    pub async fn on_undo_push(
        &self,
        owner: Option<String>,
        r: pb::UndoPushRequest,
    ) -> Result<pb::UndoResponse, Status> {
        let id = r.repair_id;
        if !journal::valid_id(&id) {
            return Err(Status::invalid_argument(
                "repair_id must be 1..=128 printable ASCII bytes (journal::REPAIR_ID_BYTES_MAX)",
            ));
        }
        let metrics = self.state.metrics.clone();
        let hold_until = self
            .state
            .store
            .now_ms()
            .saturating_add(self.state.config.journal.undo_hold_ms);
        let keep_deletes = self.state.config.gc.enabled;
        let st = self.state.clone();
        let found = self
            .state
            .blocking(move |s| {
                let Some(h) = journal::get_header(s, &id)? else {
                    return Ok(None);
                };
                // Only the identity that pushed the repair may undo it (on a
                // plaintext agent there are no identities to compare).
                if let Some(o) = &owner
                    && (h.initiator || h.peer != *o)
                {
                    metrics.auth_denied("Peer", "not_owner");
                    return Ok(Some(Err(Status::permission_denied(format!(
                        "repair {id} was not pushed by {o}"
                    )))));
                }
                // Idempotent: the initiator resumes an undo that crashed
                // after this side finished by asking again.
                if h.undone {
                    return Ok(Some(Ok(None)));
                }
                let (o, images) = journal::undo_here(s, &id, keep_deletes, &|k| {
                    crate::repair::rows::digest_range(&st, k).is_some()
                })?;
                Ok(Some(Ok(Some((h, o, images)))))
            })
            .await?;
        let out = match found {
            None => None,
            Some(Err(s)) => Some(Err(s)),
            Some(Ok(None)) => Some(Ok(journal::UndoOutcome::default())),
            Some(Ok(Some((mut h, mut o, images)))) => {
                // Rows behind an adapter go back before the repair is
                // marked undone: a crash in between leaves it to a second
                // undo, which finds the restored rows restored.
                let rows = crate::repair::rows::undo(&self.state, images).await?;
                o.restored += rows.restored;
                o.skipped.extend(rows.skipped);
                h.undone = true;
                h.hold_until_ms = hold_until;
                self.state
                    .blocking(move |s| journal::put_header(s, &h))
                    .await?;
                Some(Ok(o))
            }
        };
        match out {
            None => Ok(pb::UndoResponse::default()),
            Some(Err(s)) => Err(s),
            Some(Ok(o)) => Ok(pb::UndoResponse {
                restored: o.restored,
                skipped: o
                    .skipped
                    .into_iter()
                    .map(|(key, note)| crate::wire::skipped_pb(key, note, None))
                    .collect(),
            }),
        }
    }
}

impl<B: AgentBackend> PeerService<B> {
    /// `Reserve`: one of this node's exchange slots for `holder`'s scheduled
    /// exchange, leased for at most `schedule.lease_ms`.
    pub fn on_reserve(&self, holder: &str, r: pb::ReserveRequest) -> pb::ReserveResponse {
        let cap = self.state.config.schedule.lease_ms;
        let lease = std::time::Duration::from_millis(r.lease_ms.clamp(1, cap));
        let token = self.state.slots.try_take(
            &format!("{holder} (as initiator)"),
            lease,
            &self.state.metrics,
        );
        let (in_use, max) = self.state.slots.in_use();
        pb::ReserveResponse {
            granted: token.is_some(),
            token: token.map(|t| format!("{t:016x}")).unwrap_or_default(),
            in_use,
            max,
        }
    }

    /// `Release`: frees a slot `Reserve` granted. A token that names no
    /// held slot (its lease ran out) is not an error: the slot is free.
    pub fn on_release(&self, r: pb::ReleaseRequest) -> Result<pb::ReleaseResponse, Status> {
        let token = u64::from_str_radix(&r.token, 16)
            .ok()
            .filter(|_| r.token.len() == 16)
            .ok_or_else(|| Status::invalid_argument("token: 16 hex digits from Reserve"))?;
        self.state.slots.release(token, &self.state.metrics);
        Ok(pb::ReleaseResponse {})
    }
}

fn owner_of<T>(req: &Request<T>) -> Option<String> {
    crate::auth::caller(req).map(|i| i.primary().to_string())
}

/// The tonic impl of `mend.v1.Peer`: the calls in `forward:` hand the
/// request's message to `on_NAME` and wrap its answer; the rest need the
/// caller's identity or are not async.
macro_rules! peer_service {
    (forward: [$($name:ident($req:ty) -> $resp:ty => $on:ident),* $(,)?], $($rest:tt)*) => {
        #[tonic::async_trait]
        impl<B: AgentBackend> pb::peer_server::Peer for PeerService<B> {
            $(
                async fn $name(&self, req: Request<$req>) -> Result<Response<$resp>, Status> {
                    self.$on(req.into_inner()).await.map(Response::new)
                }
            )*
            $($rest)*
        }
    };
}

peer_service! {
    forward: [
        probe(pb::ProbeRequest) -> pb::ProbeResponse => on_probe,
        leaves(pb::LeavesRequest) -> Self::LeavesStream => on_leaves,
        fetch(pb::FetchRequest) -> Self::FetchStream => on_fetch,
        sample(pb::PeerSampleRequest) -> pb::EntrySummaries => on_sample,
        lookup(pb::FetchRequest) -> pb::LookupResponse => on_lookup,
    ],
    async fn challenge(
        &self,
        _req: Request<pb::ChallengeRequest>,
    ) -> Result<Response<pb::ChallengeResponse>, Status> {
        Ok(Response::new(self.on_challenge()))
    }

    async fn handshake(
        &self,
        req: Request<pb::HandshakeRequest>,
    ) -> Result<Response<pb::HandshakeResponse>, Status> {
        let who = crate::auth::caller(&req);
        self.on_handshake(who, req.into_inner())
            .await
            .map(Response::new)
    }

    type LeavesStream = Inbound<pb::LeafReply>;

    type FetchStream = Inbound<pb::FetchedEntry>;

    async fn push(
        &self,
        req: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        let owner = owner_of(&req).unwrap_or_default();
        self.on_push(owner, Box::pin(req.into_inner()))
            .await
            .map(Response::new)
    }

    async fn shadow_push(
        &self,
        req: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        self.on_shadow_push(Box::pin(req.into_inner()))
            .await
            .map(Response::new)
    }

    async fn undo_push(
        &self,
        req: Request<pb::UndoPushRequest>,
    ) -> Result<Response<pb::UndoResponse>, Status> {
        let owner = owner_of(&req);
        self.on_undo_push(owner, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn reserve(
        &self,
        req: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let holder = owner_of(&req).unwrap_or_else(|| "a plaintext caller".into());
        Ok(Response::new(self.on_reserve(&holder, req.into_inner())))
    }

    async fn release(
        &self,
        req: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.on_release(req.into_inner()).map(Response::new)
    }
}
