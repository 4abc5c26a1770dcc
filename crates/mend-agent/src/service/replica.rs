//! The Replica service: the data path of the replica this agent sits beside.
//! Every write goes through the store's apply rule; a batch is atomic. A
//! digest-only range takes no writes or reads here (`FAILED_PRECONDITION`):
//! its entries come from the Ingest service.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use mend_rpc::convert::{key_from_pb, opt_version_from_pb, value_from_pb, version_to_pb};
use mend_rpc::pb;
use mend_store::{Applied, Write};

use crate::state::AgentState;

/// Implementation of `mend.v1.Replica`.
pub struct ReplicaService {
    state: Arc<AgentState>,
}

impl ReplicaService {
    /// A service over `state`.
    pub fn new(state: Arc<AgentState>) -> ReplicaService {
        ReplicaService { state }
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<Applied>, Status> {
        self.state.check_future(&writes)?;
        let n = writes.len() as u64;
        let out = self.state.blocking(move |s| s.write(writes)).await?;
        self.state.metrics.writes.inc_by(n);
        let applied = out
            .iter()
            .filter(|a| a.decision == mend_core::Decision::Apply)
            .count() as u64;
        self.state.metrics.tree_updates.inc_by(applied);
        Ok(out)
    }
}

fn result(a: &Applied) -> pb::WriteResult {
    pb::WriteResult {
        decision: mend_rpc::enums::decision_to_pb(a.decision),
        version: Some(version_to_pb(&a.version)),
    }
}

fn one(mut v: Vec<Applied>) -> Result<pb::WriteResult, Status> {
    v.pop()
        .map(|a| result(&a))
        .ok_or_else(|| Status::internal("store returned no result"))
}

#[tonic::async_trait]
impl pb::replica_server::Replica for ReplicaService {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::WriteResult>, Status> {
        let r = req.into_inner();
        key_from_pb(&r.key)?;
        value_from_pb(&r.value)?;
        let version = opt_version_from_pb(r.version)?;
        let w = Write {
            key: r.key,
            value: Some(r.value),
            version,
        };
        Ok(Response::new(one(self.apply(vec![w]).await?)?))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::WriteResult>, Status> {
        let r = req.into_inner();
        key_from_pb(&r.key)?;
        let version = opt_version_from_pb(r.version)?;
        let w = Write {
            key: r.key,
            value: None,
            version,
        };
        Ok(Response::new(one(self.apply(vec![w]).await?)?))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let key = req.into_inner().key;
        key_from_pb(&key)?;
        // `get_many` refuses a key of a digest-only range
        // (`FAILED_PRECONDITION`): its record holds no value to return.
        let rec = self
            .state
            .blocking(move |s| Ok(s.get_many(std::slice::from_ref(&key))?.pop().flatten()))
            .await?;
        Ok(Response::new(match rec {
            None => pb::GetResponse::default(),
            Some(r) => pb::GetResponse {
                found: true,
                tombstone: r.meta.tombstone,
                version: Some(version_to_pb(&r.meta.version)),
                value: r.value,
            },
        }))
    }

    async fn write_batch(
        &self,
        req: Request<pb::WriteBatchRequest>,
    ) -> Result<Response<pb::WriteBatchResponse>, Status> {
        let r = req.into_inner();
        let max = self.state.config.limits.batch_writes_max;
        if r.writes.len() > max {
            return Err(Status::invalid_argument(format!(
                "batch of {} writes exceeds batch_writes_max = {max}",
                r.writes.len()
            )));
        }
        let mut writes = Vec::with_capacity(r.writes.len());
        for w in r.writes {
            key_from_pb(&w.key)?;
            if !w.delete {
                value_from_pb(&w.value)?;
            }
            writes.push(Write {
                key: w.key,
                value: (!w.delete).then_some(w.value),
                version: opt_version_from_pb(w.version)?,
            });
        }
        let out = self.apply(writes).await?;
        Ok(Response::new(pb::WriteBatchResponse {
            results: out.iter().map(result).collect(),
        }))
    }
}
