//! A hybrid logical clock. It is sans-I/O: the caller passes the current wall
//! time, so tests and the simulator can drive it with any clock.

/// Hybrid logical clock state: the last timestamp handed out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hlc {
    /// Milliseconds of the last timestamp.
    pub ms: u64,
    /// Logical counter of the last timestamp.
    pub logical: u32,
}

impl Hlc {
    /// Returns a timestamp strictly greater than every one handed out or
    /// observed before, and at least `wall_ms`.
    pub fn tick(&mut self, wall_ms: u64) -> (u64, u32) {
        if wall_ms > self.ms {
            self.ms = wall_ms;
            self.logical = 0;
        } else if self.logical == u32::MAX {
            self.ms += 1;
            self.logical = 0;
        } else {
            self.logical += 1;
        }
        (self.ms, self.logical)
    }

    /// Folds in a timestamp seen on a replicated write, so later local writes
    /// order after it. Timestamps far in the future are the caller's to
    /// reject before observing (clock skew is a diagnosis, not a clock input).
    pub fn observe(&mut self, ms: u64, logical: u32) {
        if (ms, logical) > (self.ms, self.logical) {
            self.ms = ms;
            self.logical = logical;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_strictly_increasing_even_when_wall_time_stalls_or_jumps_back() {
        let mut h = Hlc::default();
        let a = h.tick(100);
        let b = h.tick(100);
        let c = h.tick(90);
        let d = h.tick(101);
        assert!(a < b && b < c && c < d, "{a:?} {b:?} {c:?} {d:?}");
        h.observe(500, 3);
        assert_eq!(h.tick(200), (500, 4));
    }
}
