//! Pacing to byte and key rates (repair streams, tombstone purges).

use std::time::Duration;

use tokio::time::Instant;

/// Paces a stream of work to byte and key rates: each call waits until the
/// cumulative totals are within the rates since the start.
#[derive(Debug)]
pub struct Pacer {
    start: Instant,
    bytes_per_s: u64,
    keys_per_s: u64,
    bytes: u64,
    keys: u64,
}

impl Pacer {
    /// A pacer for the given rates (0 = unlimited).
    pub fn new(bytes_per_s: u64, keys_per_s: u64) -> Pacer {
        Pacer {
            start: Instant::now(),
            bytes_per_s,
            keys_per_s,
            bytes: 0,
            keys: 0,
        }
    }

    /// Accounts for `bytes` and `keys` about to be sent, waiting first if
    /// sending them now would exceed a rate.
    pub async fn take(&mut self, bytes: u64, keys: u64) {
        let mut due = Duration::ZERO;
        if self.bytes_per_s > 0 {
            due = due.max(Duration::from_secs_f64(
                self.bytes as f64 / self.bytes_per_s as f64,
            ));
        }
        if self.keys_per_s > 0 {
            due = due.max(Duration::from_secs_f64(
                self.keys as f64 / self.keys_per_s as f64,
            ));
        }
        self.bytes += bytes;
        self.keys += keys;
        let at = self.start + due;
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Waits until everything accounted for is within the rates.
    pub async fn finish(&mut self) {
        self.take(0, 0).await;
    }
}
