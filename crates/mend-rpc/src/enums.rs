//! The wire enums (`Category`, `Side`, `Decision`, `SkipReason`,
//! `PlaybookAction` in `mend.proto`) to and from their mend-core enums.
//!
//! Protobuf keeps an enum field as an `i32`, so a peer or client can send
//! any number: every `*_from_pb` here refuses a value outside the enum,
//! and `UNSPECIFIED` where a value is required, with `INVALID_ARGUMENT`
//! naming the field. The `*_to_pb` direction cannot fail and returns the
//! `i32` the generated message field holds.

use tonic::Status;

use mend_core::Decision;
use mend_core::classify::{Category, Side};
use mend_core::playbook::{PlaybookAction, SkipReason};

use crate::pb;

/// A known, specified value of wire enum `E` in `field`.
fn known<E: TryFrom<i32> + PartialEq + Default>(v: i32, field: &str) -> Result<E, Status> {
    match E::try_from(v) {
        Ok(e) if e != E::default() => Ok(e),
        Ok(_) => Err(Status::invalid_argument(format!("{field}: required"))),
        Err(_) => Err(Status::invalid_argument(format!(
            "{field}: unknown value {v}"
        ))),
    }
}

/// A known value of wire enum `E` in `field`, `None` for `UNSPECIFIED`.
fn known_opt<E: TryFrom<i32> + PartialEq + Default>(
    v: i32,
    field: &str,
) -> Result<Option<E>, Status> {
    if v == 0 {
        return Ok(None);
    }
    known(v, field).map(Some)
}

/// A category as its wire value.
pub fn category_to_pb(c: Category) -> i32 {
    (match c {
        Category::FutureVersion => pb::Category::FutureVersion,
        Category::InFlight => pb::Category::InFlight,
        Category::Conflict => pb::Category::Conflict,
        Category::UnpropagatedDelete => pb::Category::UnpropagatedDelete,
        Category::Missing => pb::Category::Missing,
        Category::Stale => pb::Category::Stale,
        Category::Differs => pb::Category::Differs,
        Category::Deleted => pb::Category::Deleted,
    }) as i32
}

/// A wire category (required).
pub fn category_from_pb(v: i32, field: &str) -> Result<Category, Status> {
    Ok(match known::<pb::Category>(v, field)? {
        pb::Category::FutureVersion => Category::FutureVersion,
        pb::Category::InFlight => Category::InFlight,
        pb::Category::Conflict => Category::Conflict,
        pb::Category::UnpropagatedDelete => Category::UnpropagatedDelete,
        pb::Category::Missing => Category::Missing,
        pb::Category::Stale => Category::Stale,
        pb::Category::Differs => Category::Differs,
        pb::Category::Deleted => Category::Deleted,
        pb::Category::Unspecified => {
            return Err(Status::invalid_argument(format!("{field}: required")));
        }
    })
}

/// A side as its wire value; `None` is `SIDE_UNSPECIFIED`.
pub fn side_to_pb(s: Option<Side>) -> i32 {
    (match s {
        None => pb::Side::Unspecified,
        Some(Side::Local) => pb::Side::Local,
        Some(Side::Peer) => pb::Side::Peer,
    }) as i32
}

/// A wire side; `SIDE_UNSPECIFIED` is `None`.
pub fn side_from_pb(v: i32, field: &str) -> Result<Option<Side>, Status> {
    Ok(match known_opt::<pb::Side>(v, field)? {
        None | Some(pb::Side::Unspecified) => None,
        Some(pb::Side::Local) => Some(Side::Local),
        Some(pb::Side::Peer) => Some(Side::Peer),
    })
}

/// A wire side that must be named.
pub fn required_side_from_pb(v: i32, field: &str) -> Result<Side, Status> {
    side_from_pb(v, field)?.ok_or_else(|| Status::invalid_argument(format!("{field}: required")))
}

/// An apply decision as its wire value.
pub fn decision_to_pb(d: Decision) -> i32 {
    (match d {
        Decision::Apply => pb::Decision::Apply,
        Decision::Stale => pb::Decision::Stale,
        Decision::Duplicate => pb::Decision::Duplicate,
        Decision::Conflict => pb::Decision::Conflict,
    }) as i32
}

/// A wire apply decision (required).
pub fn decision_from_pb(v: i32, field: &str) -> Result<Decision, Status> {
    Ok(match known::<pb::Decision>(v, field)? {
        pb::Decision::Apply => Decision::Apply,
        pb::Decision::Stale => Decision::Stale,
        pb::Decision::Duplicate => Decision::Duplicate,
        pb::Decision::Conflict => Decision::Conflict,
        pb::Decision::Unspecified => {
            return Err(Status::invalid_argument(format!("{field}: required")));
        }
    })
}

/// The wire enum of each [`SkipReason`], in the order of [`SkipReason::ALL`].
const SKIP_REASONS_PB: [pb::SkipReason; 17] = [
    pb::SkipReason::NotSelected,
    pb::SkipReason::Conflict,
    pb::SkipReason::FutureVersion,
    pb::SkipReason::InFlight,
    pb::SkipReason::NoSideBehind,
    pb::SkipReason::Purged,
    pb::SkipReason::AuthorityElsewhere,
    pb::SkipReason::Versionless,
    pb::SkipReason::DigestOnly,
    pb::SkipReason::DigestOnlyAuthority,
    pb::SkipReason::ChangedSinceDiff,
    pb::SkipReason::Kept,
    pb::SkipReason::Gone,
    pb::SkipReason::ChangedSinceRepair,
    pb::SkipReason::RepairedDelete,
    pb::SkipReason::FeedPending,
    pb::SkipReason::NotPredicted,
];

/// A skip reason as its wire value.
pub fn skip_reason_to_pb(r: SkipReason) -> i32 {
    let i = SkipReason::ALL.iter().position(|x| *x == r).unwrap_or(0);
    SKIP_REASONS_PB[i] as i32
}

/// A wire skip reason (required).
pub fn skip_reason_from_pb(v: i32, field: &str) -> Result<SkipReason, Status> {
    let p = known::<pb::SkipReason>(v, field)?;
    SKIP_REASONS_PB
        .iter()
        .position(|x| *x == p)
        .map(|i| SkipReason::ALL[i])
        .ok_or_else(|| Status::invalid_argument(format!("{field}: unknown value {v}")))
}

/// The wire enum of each [`PlaybookAction`], in the order of
/// [`PlaybookAction::ALL`].
const PLAYBOOK_ACTIONS_PB: [pb::PlaybookAction; 9] = [
    pb::PlaybookAction::OnDemand,
    pb::PlaybookAction::Report,
    pb::PlaybookAction::Repaired,
    pb::PlaybookAction::RefusedBlastRadius,
    pb::PlaybookAction::RefusedUnhealthyPeer,
    pb::PlaybookAction::NotAttempted,
    pb::PlaybookAction::RepairFailed,
    pb::PlaybookAction::PostconditionFailed,
    pb::PlaybookAction::NotVerified,
];

/// A playbook action as its wire value; `None` (a record kept from before
/// protocol 4) is `PLAYBOOK_ACTION_UNSPECIFIED`.
pub fn playbook_action_to_pb(a: Option<PlaybookAction>) -> i32 {
    match a.and_then(|a| PlaybookAction::ALL.iter().position(|x| *x == a)) {
        Some(i) => PLAYBOOK_ACTIONS_PB[i] as i32,
        None => pb::PlaybookAction::Unspecified as i32,
    }
}

/// A wire playbook action; `PLAYBOOK_ACTION_UNSPECIFIED` is `None`.
pub fn playbook_action_from_pb(v: i32, field: &str) -> Result<Option<PlaybookAction>, Status> {
    Ok(known_opt::<pb::PlaybookAction>(v, field)?.and_then(|p| {
        PLAYBOOK_ACTIONS_PB
            .iter()
            .position(|x| *x == p)
            .map(|i| PlaybookAction::ALL[i])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every domain value survives the wire, and a value outside each
    /// wire enum is refused with INVALID_ARGUMENT naming the field.
    #[test]
    fn round_trip_and_unknown_values() {
        for c in Category::ALL {
            assert_eq!(category_from_pb(category_to_pb(c), "f").ok(), Some(c));
        }
        for s in [None, Some(Side::Local), Some(Side::Peer)] {
            assert_eq!(side_from_pb(side_to_pb(s), "f").ok(), Some(s));
        }
        for d in [
            Decision::Apply,
            Decision::Stale,
            Decision::Duplicate,
            Decision::Conflict,
        ] {
            assert_eq!(decision_from_pb(decision_to_pb(d), "f").ok(), Some(d));
        }
        for r in SkipReason::ALL {
            assert_eq!(skip_reason_from_pb(skip_reason_to_pb(r), "f").ok(), Some(r));
        }
        for a in PlaybookAction::ALL.map(Some).into_iter().chain([None]) {
            assert_eq!(
                playbook_action_from_pb(playbook_action_to_pb(a), "f").ok(),
                Some(a)
            );
        }
        let refused = |r: Result<(), Status>, field: &str| {
            let e = r.expect_err("an unknown value is refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().starts_with(field), "{}", e.message());
            assert!(e.message().contains("unknown value 99"), "{}", e.message());
        };
        refused(
            category_from_pb(99, "key.category").map(drop),
            "key.category",
        );
        refused(side_from_pb(99, "key.behind").map(drop), "key.behind");
        refused(
            decision_from_pb(99, "not_applied.decision").map(drop),
            "not_applied.decision",
        );
        refused(
            skip_reason_from_pb(99, "skipped.kind").map(drop),
            "skipped.kind",
        );
        refused(
            playbook_action_from_pb(99, "record.action_kind").map(drop),
            "record.action_kind",
        );
        // Unspecified where a value is required.
        assert_eq!(
            category_from_pb(0, "c").map(drop).map_err(|e| e.code()),
            Err(tonic::Code::InvalidArgument)
        );
        assert_eq!(
            decision_from_pb(0, "d").map(drop).map_err(|e| e.code()),
            Err(tonic::Code::InvalidArgument)
        );
    }
}
