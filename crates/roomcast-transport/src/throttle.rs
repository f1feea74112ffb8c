//! Log-in and sign-up throttling: guessing passwords gets slower with
//! every miss, and one address cannot mint accounts in bulk.
//!
//! Failed log-ins are counted per client address and per account name.
//! After a few free misses, each further miss doubles the wait before the
//! next attempt is even checked (429 with `Retry-After`), up to
//! [`MAX_DELAY`]; a success clears the account's count. The check happens
//! before any password hashing, so a throttled attempt costs nothing.
//! Sign-ups are a plain per-address rate (governor, as for messages).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Misses an account may have before waits start.
const FREE_ACCOUNT_MISSES: u32 = 5;
/// Misses one address may have (across accounts) before waits start.
const FREE_ADDRESS_MISSES: u32 = 20;
/// The first wait; each further miss doubles it.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// A record with no miss for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Records kept at most (each a few dozen bytes); beyond, idle ones are
/// swept, and new accounts are not tracked until there is room (their
/// address still is).
const MAX_RECORDS: usize = 100_000;
/// Sign-ups one address may make at once, then one per [`SIGNUP_PERIOD`].
const SIGNUP_BURST: u32 = 20;
const SIGNUP_PERIOD: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Account(String),
}

#[derive(Debug, Clone, Copy)]
struct Misses {
    count: u32,
    last: Instant,
}

impl Misses {
    /// When the next attempt may be checked.
    fn open_at(&self, free: u32) -> Instant {
        let over = self.count.saturating_sub(free);
        if over == 0 {
            return self.last;
        }
        let factor = 1u32.checked_shl(over - 1).unwrap_or(u32::MAX);
        self.last + FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY)
    }
}

/// The node's log-in and sign-up throttle.
#[derive(Debug)]
pub(crate) struct Throttle {
    misses: DashMap<Key, Misses>,
    signups: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Default for Throttle {
    fn default() -> Self {
        let quota = Quota::with_period(SIGNUP_PERIOD)
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(SIGNUP_BURST).unwrap_or(NonZeroU32::MIN));
        Self {
            misses: DashMap::new(),
            signups: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }
}

impl Throttle {
    /// Whether a log-in for `account` from `address` may be checked now, or
    /// how long to wait.
    pub(crate) fn login_allowed(
        &self,
        address: Option<IpAddr>,
        account: &str,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        let keys = [
            address.map(|a| (Key::Address(a), FREE_ADDRESS_MISSES)),
            Some((Key::Account(account_key(account)), FREE_ACCOUNT_MISSES)),
        ];
        let open_at = keys
            .into_iter()
            .flatten()
            .filter_map(|(key, free)| self.misses.get(&key).map(|m| m.open_at(free)))
            .max();
        match open_at {
            Some(at) if at > now => Err(at - now),
            _ => Ok(()),
        }
    }

    /// Records a failed log-in.
    pub(crate) fn login_failed(&self, address: Option<IpAddr>, account: &str) {
        let now = Instant::now();
        if self.misses.len() >= MAX_RECORDS {
            self.misses
                .retain(|_, m| now.saturating_duration_since(m.last) < FORGET_AFTER);
        }
        let room = self.misses.len() < MAX_RECORDS;
        let keys = [
            address.map(Key::Address),
            room.then(|| Key::Account(account_key(account))),
        ];
        for key in keys.into_iter().flatten() {
            self.misses
                .entry(key)
                .and_modify(|m| {
                    let fresh = now.saturating_duration_since(m.last) < FORGET_AFTER;
                    m.count = if fresh { m.count.saturating_add(1) } else { 1 };
                    m.last = now;
                })
                .or_insert(Misses {
                    count: 1,
                    last: now,
                });
        }
    }

    /// A successful log-in clears its account's misses (not its address's:
    /// one right password must not reset a guessing campaign's count).
    pub(crate) fn login_succeeded(&self, account: &str) {
        self.misses.remove(&Key::Account(account_key(account)));
    }

    /// Takes one sign-up from the address's budget, or says how long to wait.
    pub(crate) fn signup_allowed(&self, address: Option<IpAddr>) -> Result<(), Duration> {
        let Some(address) = address else {
            return Ok(());
        };
        if self.signups.len() >= MAX_RECORDS {
            self.signups.retain_recent();
        }
        self.signups
            .check_key(&address)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Usernames and emails are matched case-insensitively at log-in, so their
/// misses are counted that way too.
fn account_key(account: &str) -> String {
    account.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_after_the_free_misses_and_double() {
        let throttle = Throttle::default();
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..FREE_ACCOUNT_MISSES {
            assert!(throttle.login_allowed(ip, "Alice").is_ok());
            throttle.login_failed(ip, "alice");
        }
        assert!(
            throttle.login_allowed(ip, "alice").is_ok(),
            "free misses only"
        );
        throttle.login_failed(ip, "alice");
        let first = throttle.login_allowed(ip, "ALICE").expect_err("waits");
        assert!(first <= FIRST_DELAY && first > FIRST_DELAY / 2, "{first:?}");
        throttle.login_failed(ip, "alice");
        let second = throttle.login_allowed(ip, "alice").expect_err("waits");
        assert!(second > FIRST_DELAY, "doubled: {second:?}");
        // Another account from another address is not affected...
        assert!(
            throttle
                .login_allowed(Some(IpAddr::from([10, 0, 0, 2])), "bob")
                .is_ok()
        );
        // ...and a success clears the account.
        throttle.login_succeeded("alice");
        assert!(throttle.login_allowed(None, "alice").is_ok());
    }

    #[test]
    fn an_address_guessing_many_accounts_is_slowed_too() {
        let throttle = Throttle::default();
        let ip = Some(IpAddr::from([10, 0, 0, 9]));
        for i in 0..=FREE_ADDRESS_MISSES {
            throttle.login_failed(ip, &format!("user{i}"));
        }
        assert!(throttle.login_allowed(ip, "someone-new").is_err());
        assert!(throttle.login_allowed(None, "someone-new").is_ok());
    }

    #[test]
    fn sign_ups_are_a_per_address_rate() {
        let throttle = Throttle::default();
        let ip = Some(IpAddr::from([10, 0, 0, 3]));
        let allowed = (0..100)
            .filter(|_| throttle.signup_allowed(ip).is_ok())
            .count();
        assert_eq!(allowed, SIGNUP_BURST as usize);
        assert!(
            throttle
                .signup_allowed(Some(IpAddr::from([10, 0, 0, 4])))
                .is_ok()
        );
    }

    #[test]
    fn waits_never_exceed_the_cap() {
        let misses = Misses {
            count: 200,
            last: Instant::now(),
        };
        assert_eq!(misses.open_at(5) - misses.last, MAX_DELAY);
    }
}
