//! Exchange slots: how many scheduled exchanges (with their playbook
//! repairs) this node takes part in at once, as initiator or responder
//! (`schedule.exchanges_max`). A slot taken for a peer (`Peer/Reserve`) has
//! a lease: an initiator that dies mid-exchange frees it when the lease
//! runs out. Bounded: at most `exchanges_max` slots exist.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// A taken slot.
#[derive(Debug, Clone)]
struct Held {
    holder: String,
    until: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    held: BTreeMap<u64, Held>,
    peak: u32,
}

/// The slots of this node.
#[derive(Debug)]
pub struct Slots {
    max: u32,
    inner: Mutex<Inner>,
}

impl Slots {
    /// `max` slots (at least 1).
    pub fn new(max: u32) -> Slots {
        Slots {
            max: max.max(1),
            inner: Mutex::default(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Takes a slot for `holder` for at most `lease`; its token, or `None`
    /// when every slot is taken. Expired leases are freed first.
    pub fn try_take(&self, holder: &str, lease: Duration, metrics: &Metrics) -> Option<u64> {
        let now = Instant::now();
        self.with(|i| {
            i.held.retain(|_, h| h.until > now);
            let taken = if i.held.len() < self.max as usize {
                let mut token = rand::random::<u64>();
                while token == 0 || i.held.contains_key(&token) {
                    token = rand::random::<u64>();
                }
                i.held.insert(
                    token,
                    Held {
                        holder: holder.to_string(),
                        until: now + lease,
                    },
                );
                i.peak = i.peak.max(i.held.len() as u32);
                Some(token)
            } else {
                None
            };
            publish(i, metrics);
            taken
        })
    }

    /// Frees the slot `token`; false if it was not held (released already,
    /// or its lease ran out).
    pub fn release(&self, token: u64, metrics: &Metrics) -> bool {
        self.with(|i| {
            let was = i.held.remove(&token).is_some();
            publish(i, metrics);
            was
        })
    }

    /// Slots taken now (expired leases not counted) and the configured most.
    pub fn in_use(&self) -> (u32, u32) {
        let now = Instant::now();
        self.with(|i| {
            (
                i.held.values().filter(|h| h.until > now).count() as u32,
                self.max,
            )
        })
    }

    /// Who holds the slots now.
    pub fn holders(&self) -> Vec<String> {
        let now = Instant::now();
        self.with(|i| {
            i.held
                .values()
                .filter(|h| h.until > now)
                .map(|h| h.holder.clone())
                .collect()
        })
    }
}

fn publish(i: &Inner, metrics: &Metrics) {
    metrics.exchange_slots_in_use.set(i.held.len() as i64);
    metrics.exchange_slots_in_use_max.set(i.peak as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_released_and_leased() {
        let m = Metrics::default();
        let s = Slots::new(2);
        let long = Duration::from_secs(600);
        let a = s.try_take("a", long, &m).expect("first slot");
        let _b = s.try_take("b", long, &m).expect("second slot");
        assert_eq!(s.try_take("c", long, &m), None, "only two");
        assert_eq!(s.in_use(), (2, 2));
        assert!(s.release(a, &m));
        assert!(!s.release(a, &m), "a slot is released once");
        assert!(s.try_take("c", long, &m).is_some());
        assert_eq!(m.exchange_slots_in_use_max.get(), 2);
        // A lease that ran out frees its slot for the next taker.
        let t = Slots::new(1);
        t.try_take("dead initiator", Duration::ZERO, &m)
            .expect("slot");
        assert!(
            t.try_take("next", long, &m).is_some(),
            "the expired lease was freed"
        );
        assert_eq!(t.holders(), ["next"]);
    }
}
