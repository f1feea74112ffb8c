//! Per-user rate limits, shared by all of a user's sockets and the HTTP
//! API: one abusive member gets the same budget with one socket or fifty.
//!
//! Why governor's keyed limiters: GCRA keeps one atomic cell per user in a
//! sharded map, so a check is a lock-free compare-and-swap on that user's
//! cell, never a lock every socket of the node takes. A check answers at
//! once: over the limit, the caller refuses the frame or request (nothing is
//! stored) and says how long to wait.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use roomcast_domain::UserId;

use crate::config::RateLimitConfig;

/// Checks between two sweeps of idle users' cells: bounds the maps' memory
/// without a task of its own.
const SWEEP_EVERY: u32 = 4096;

/// The node's per-user limiters (shared by every socket and handler).
#[derive(Debug)]
pub(crate) struct UserLimits {
    /// Stored writes (posts, edits, deletes) and bad frames, per user.
    messages: Option<DefaultKeyedRateLimiter<UserId>>,
    /// Typing events relayed, per user.
    typing: Option<DefaultKeyedRateLimiter<UserId>>,
    checks: AtomicU32,
    clock: DefaultClock,
}

impl UserLimits {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        let messages = NonZeroU32::new(config.per_second).map(|rate| {
            let burst = NonZeroU32::new(config.burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let typing = (config.per_second > 0)
            .then(|| Quota::with_period(config.typing_interval))
            .flatten()
            .map(RateLimiter::keyed);
        Self {
            messages,
            typing,
            checks: AtomicU32::new(0),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one message from the user's budget, or says how long until the
    /// next one is allowed.
    pub(crate) fn message(&self, user: UserId) -> Result<(), Duration> {
        let Some(limiter) = &self.messages else {
            return Ok(());
        };
        self.sweep_now_and_then();
        limiter
            .check_key(&user)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Whether a typing event of the user may be relayed now.
    pub(crate) fn typing(&self, user: UserId) -> bool {
        let Some(limiter) = &self.typing else {
            return true;
        };
        self.sweep_now_and_then();
        limiter.check_key(&user).is_ok()
    }

    fn sweep_now_and_then(&self) {
        if !self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(SWEEP_EVERY)
        {
            return;
        }
        for limiter in [&self.messages, &self.typing].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// One socket's record of refused frames, to tell a client that hit the
/// limit once from one that keeps flooding (closed with 1008).
///
/// A streak is refusals with no pause longer than [`Abuse::PAUSE`] between
/// them; one lasting `window` at a rate of at least `min_rate` refusals per
/// second is sustained abuse. A burst answered `rate_limited` in one go
/// (thousands of frames in a fraction of a second) is not, nor is a person
/// typing faster than typing events are relayed.
#[derive(Debug)]
pub(crate) struct Abuse {
    window: Duration,
    min_rate: u32,
    streak: Option<Streak>,
}

#[derive(Debug, Clone, Copy)]
struct Streak {
    started: Instant,
    last: Instant,
    refused: u32,
}

impl Abuse {
    /// A pause this long ends a streak.
    const PAUSE: Duration = Duration::from_secs(1);

    /// `window` zero: never closes.
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        Self {
            window: config.abuse_after,
            min_rate: config.per_second.saturating_mul(2).max(1),
            streak: None,
        }
    }

    /// Records a refused frame; true when the socket should be closed.
    pub(crate) fn refused(&mut self, now: Instant) -> bool {
        let streak = match self.streak {
            Some(s) if now.saturating_duration_since(s.last) <= Self::PAUSE => Streak {
                last: now,
                refused: s.refused.saturating_add(1),
                ..s
            },
            _ => Streak {
                started: now,
                last: now,
                refused: 1,
            },
        };
        self.streak = Some(streak);
        let lasted = now.saturating_duration_since(streak.started);
        !self.window.is_zero()
            && lasted >= self.window
            && f64::from(streak.refused) >= f64::from(self.min_rate) * lasted.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_second: u32, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            per_second,
            burst,
            typing_interval: Duration::from_secs(2),
            abuse_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_user_gets_the_burst_then_waits_whatever_socket_asks() {
        let limits = UserLimits::new(&config(10, 20));
        let (alice, bob) = (UserId::new(), UserId::new());
        let allowed = (0..100).filter(|_| limits.message(alice).is_ok()).count();
        assert_eq!(allowed, 20);
        let wait = limits.message(alice).expect_err("over the limit");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        assert!(
            limits.message(bob).is_ok(),
            "another user has their own budget"
        );
    }

    #[test]
    fn typing_passes_once_per_interval_and_zero_turns_everything_off() {
        let limits = UserLimits::new(&config(10, 20));
        let alice = UserId::new();
        assert!(limits.typing(alice));
        assert!(!limits.typing(alice));
        let off = UserLimits::new(&config(0, 20));
        assert!((0..1000).all(|_| off.message(alice).is_ok() && off.typing(alice)));
    }

    #[test]
    fn only_a_sustained_flood_is_abuse() {
        let start = Instant::now();
        let mut abuse = Abuse::new(&config(10, 20));
        // 3,000 refusals in half a second: a burst, not abuse.
        for i in 0..3000u64 {
            assert!(!abuse.refused(start + Duration::from_micros(i * 166)));
        }
        // A person typing at 8 keys a second for a minute is never closed.
        let mut typist = Abuse::new(&config(10, 20));
        for i in 0..480u64 {
            assert!(!typist.refused(start + Duration::from_millis(i * 125)));
        }
        // 100 refusals a second for 10 s is.
        let mut flood = Abuse::new(&config(10, 20));
        let closed =
            (0..2000u64).position(|i| flood.refused(start + Duration::from_millis(i * 10)));
        assert_eq!(closed, Some(1000));
        // A pause ends the streak.
        let mut paused = Abuse::new(&config(10, 20));
        for i in 0..900u64 {
            assert!(!paused.refused(start + Duration::from_millis(i * 10)));
        }
        let later = start + Duration::from_secs(11);
        assert!(!paused.refused(later));
    }
}
