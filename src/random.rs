//! The node's source of randomness: the thread-local generator normally,
//! or one seeded generator when the configuration gives a seed, so that a
//! test (or a reproduction) makes the same random choices every run: which
//! reads also repair every replica, where anti-entropy starts, the suffix of
//! a stand-in's single-use actor.

use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random choices; see the module doc.
#[derive(Debug)]
pub enum Random {
    /// The thread-local generator.
    Thread,
    /// One generator seeded from the configuration.
    Seeded(Box<Mutex<StdRng>>),
}

impl Random {
    /// Seeded when `seed` is given.
    pub fn new(seed: Option<u64>) -> Random {
        match seed {
            Some(s) => Random::Seeded(Box::new(Mutex::new(StdRng::seed_from_u64(s)))),
            None => Random::Thread,
        }
    }

    /// A random `u32`.
    pub fn next_u32(&self) -> u32 {
        match self {
            Random::Thread => rand::random(),
            Random::Seeded(r) => r.lock().unwrap_or_else(|e| e.into_inner()).random(),
        }
    }

    /// True with probability `p` (0 never, 1 always).
    pub fn chance(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        f64::from(self.next_u32()) < p * f64::from(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_choices_repeat() {
        let (a, b) = (Random::new(Some(7)), Random::new(Some(7)));
        let xs: Vec<u32> = (0..10).map(|_| a.next_u32()).collect();
        let ys: Vec<u32> = (0..10).map(|_| b.next_u32()).collect();
        assert_eq!(xs, ys);
        assert!(Random::Thread.chance(1.0));
        assert!(!Random::Thread.chance(0.0));
        let hits = (0..10_000).filter(|_| a.chance(0.1)).count();
        assert!((700..1300).contains(&hits), "{hits}");
    }
}
