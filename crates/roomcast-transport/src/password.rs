//! Password hashing with argon2id, off the async runtime and bounded.
//!
//! Why bounded: one argon2 run takes ~19 MiB and tens of milliseconds of a
//! core. Unbounded, a storm of log-ins (valid or not) runs hundreds at once
//! on the blocking pool and takes gigabytes. The [`PasswordGate`] runs them
//! on a fixed set of worker threads (about the cores) fed by a short queue,
//! and answers everyone else 503 with `Retry-After` straight away.
//!
//! Why its own threads, each with its own argon2 memory reused by every
//! check: the crate's convenience calls allocate 19 MiB per check, and the
//! allocator does not hand those back promptly (measured: +19 MiB resident
//! per check on one thread, for the first ten or so). With memory allocated
//! once per worker, resident memory is `workers x 19 MiB`, flat under any
//! storm, and a worker idle for [`RELEASE_AFTER`] gives its memory back, so
//! the server returns to its baseline once a storm is over. Giving back
//! must reach the operating system, not just the allocator: glibc serves
//! a freed 19 MiB block's successor from its heap, where it stays resident
//! (it raises its mmap threshold to the size of each freed mapping, up to
//! 32 MiB). So a worker reserves at least [`SCRATCH_FLOOR_BLOCKS`] (33 MiB
//! of address space, of which only what a check touches is resident):
//! above that ceiling every reservation is a mapping of its own, unmapped
//! when freed.
//!
//! Why the workers run at a lower scheduling priority (nice
//! [`WORKER_NICE`] on Linux): a check is tens of milliseconds of a core,
//! and a storm from many addresses with made-up account names gets past
//! the per-address and per-account throttles, so the gate would keep every
//! core it allows busy with hashing and every socket would wait behind it.
//! At nice 10 a socket thread that wants the core gets about nine tenths
//! of it (the scheduler's weights are 1024 against 110): under a storm
//! log-ins slow down, chat does not.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use tokio::sync::oneshot;

use crate::ApiError;

/// Queued checks allowed per worker: a full queue drains within about this
/// many check durations.
const QUEUE_PER_WORKER: usize = 8;

/// A worker with no check for this long frees its argon2 memory.
const RELEASE_AFTER: Duration = Duration::from_secs(10);

/// The least a worker reserves for its argon2 memory, in 1 KiB blocks
/// (33 MiB, above glibc's largest mmap threshold; see the module doc).
const SCRATCH_FLOOR_BLOCKS: usize = 33 * 1024;

/// The workers' nice value (Linux), or their current one if already lower
/// in priority.
const WORKER_NICE: i32 = 10;

/// A worker's argon2 memory, grown once to the largest cost it has run.
type Scratch = Vec<Block>;

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// The largest memory cost a stored hash may ask for (4x today's default):
/// a corrupt or hostile row cannot make a worker allocate without bound.
const MAX_BLOCKS: usize = 4 * Params::DEFAULT_M_COST as usize;

/// At most `workers` argon2 runs at once, and a bounded queue.
#[derive(Debug)]
pub(crate) struct PasswordGate {
    jobs: flume::Sender<Job>,
    queue_timeout: Duration,
}

impl PasswordGate {
    /// Starts `workers` threads; they end when the gate is dropped.
    pub(crate) fn new(workers: usize, queue_timeout: Duration) -> Self {
        let workers = workers.max(1);
        let (jobs, queue) = flume::bounded::<Job>(workers * QUEUE_PER_WORKER);
        for i in 0..workers {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("roomcast-argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    let mut scratch = Scratch::new();
                    loop {
                        match queue.recv_timeout(RELEASE_AFTER) {
                            Ok(job) => job(&mut scratch),
                            Err(flume::RecvTimeoutError::Timeout) => scratch = Scratch::new(),
                            Err(flume::RecvTimeoutError::Disconnected) => return, // the gate is gone
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password worker");
            }
        }
        Self {
            jobs,
            queue_timeout,
        }
    }

    /// Runs `work` on a worker once one is free; refused at once when the
    /// queue is full, and skipped (503) when it waited past the timeout or
    /// its caller gave up (client gone).
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let busy = || {
            crate::metrics::password_check_refused();
            ApiError::unavailable("Too many sign-ins at once; try again shortly.")
                .with_retry_after(Duration::from_secs(1))
        };
        let (done, answer) = oneshot::channel();
        let queued = Instant::now();
        let timeout = self.queue_timeout;
        let job: Job = Box::new(move |scratch| {
            if done.is_closed() || queued.elapsed() > timeout {
                return; // dropping `done` answers 503
            }
            let _ = done.send(work(scratch));
        });
        if self.jobs.try_send(job).is_err() {
            return Err(busy());
        }
        answer.await.map_err(|_| busy())
    }

    /// Hashes a password (argon2id, the crate's recommended parameters).
    pub(crate) async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move |scratch| hash_with(scratch, &password))
            .await?
    }

    /// Whether `password` matches `stored`. With no stored hash (unknown
    /// user, or an account without a password) it still spends the time of
    /// a real check, so response times do not reveal which usernames exist.
    pub(crate) async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, ApiError> {
        self.run(move |scratch| {
            let decoy = dummy_hash(scratch);
            let (target, real) = match stored.as_deref() {
                Some(h) => (h, true),
                None => (decoy, false),
            };
            let matches = verify_with(scratch, password.as_bytes(), target);
            real && matches
        })
        .await
    }
}

/// Hashes with argon2id and the crate's recommended parameters, as a PHC
/// string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
fn hash_with(scratch: &mut Scratch, password: &str) -> Result<String, ApiError> {
    let failed = |_| ApiError::unavailable("Could not hash the password.");
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(failed)?;
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(failed)?;
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::default()
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt_bytes,
            &mut out,
            memory(scratch, params.block_count()),
        )
        .map_err(|_| ApiError::unavailable("Could not hash the password."))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(failed)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `stored` (any argon2 variant,
/// version and cost up to [`MAX_BLOCKS`]); the comparison is constant-time.
fn verify_with(scratch: &mut Scratch, password: &[u8], stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let Ok(version) = parsed.version.map(Version::try_from).transpose() else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    if params.block_count() > MAX_BLOCKS {
        return false;
    }
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    let blocks = params.block_count();
    Argon2::new(algorithm, version.unwrap_or_default(), params)
        .hash_password_into_with_memory(password, salt, out, memory(scratch, blocks))
        .is_ok()
        && Output::new(out).is_ok_and(|computed| computed == expected)
}

/// The worker's memory, at least `blocks` long.
fn memory(scratch: &mut Scratch, blocks: usize) -> &mut [Block] {
    if scratch.len() < blocks {
        let floor = blocks.max(SCRATCH_FLOOR_BLOCKS);
        scratch.reserve_exact(floor - scratch.len());
        scratch.resize(blocks, Block::default());
    }
    &mut scratch[..blocks]
}

/// Moves the calling worker thread to [`WORKER_NICE`] (see the module
/// doc); a failure only costs that protection, so it is logged.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let me = Some(rustix::thread::gettid());
        let nice = getpriority_process(me).unwrap_or(0).max(WORKER_NICE);
        if let Err(e) = setpriority_process(me, nice) {
            tracing::warn!(error = %e, "cannot lower the password workers' priority");
        }
    }
}

/// A hash of nothing anyone knows, computed once per process.
fn dummy_hash(scratch: &mut Scratch) -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_with(scratch, "roomcast timing decoy").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let gate = PasswordGate::new(2, Duration::from_secs(30));
        let h = gate.hash("correct horse".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert_eq!(
            gate.verify("correct horse".into(), Some(h.clone())).await,
            Ok(true)
        );
        assert_eq!(gate.verify("wrong horse".into(), Some(h)).await, Ok(false));
        assert_eq!(
            gate.verify("roomcast timing decoy".into(), None).await,
            Ok(false)
        );
        assert_eq!(
            gate.verify("x".into(), Some("not a phc string".into()))
                .await,
            Ok(false)
        );
    }

    #[test]
    fn hashes_agree_with_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut scratch = Scratch::new();
        let ours = hash_with(&mut scratch, "correct horse").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        let salt = SaltString::encode_b64(b"sixteen byte sal").expect("salt");
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_with(&mut scratch, b"battery staple", &theirs));
        assert!(!verify_with(&mut scratch, b"battery stapler", &theirs));
        // A stored hash asking for absurd memory is refused, not run.
        let greedy = ours.replace("m=19456", "m=4000000");
        assert!(!verify_with(&mut scratch, b"correct horse", &greedy));
        assert_eq!(
            scratch.len(),
            Params::DEFAULT_M_COST as usize,
            "memory allocated once"
        );
        assert!(
            scratch.capacity() >= SCRATCH_FLOOR_BLOCKS,
            "reserved above glibc's largest mmap threshold, so freeing it unmaps it"
        );
    }

    /// The workers' nice value, read from `/proc` by thread name (`None`
    /// when no such thread runs yet).
    #[cfg(target_os = "linux")]
    fn argon2_workers_nice() -> Vec<i32> {
        let mut nice = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").expect("/proc") {
            let stat = std::fs::read_to_string(task.expect("task").path().join("stat"));
            let Ok(stat) = stat else { continue };
            // "tid (comm) state ..."; nice is the 19th field, the 17th after comm.
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            if head.contains("(roomcast-argon2") {
                let field = rest.split_whitespace().nth(16).expect("nice field");
                nice.push(field.parse().expect("a number"));
            }
        }
        nice
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_workers_run_at_a_lower_priority() {
        let gate = PasswordGate::new(2, Duration::from_secs(30));
        // A check has run, so both threads have started and set theirs.
        assert_eq!(gate.verify("pw".into(), None).await, Ok(false));
        assert_eq!(gate.verify("pw".into(), None).await, Ok(false));
        // Other tests' gates may have a worker that has not run yet.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let nice = argon2_workers_nice();
            assert!(!nice.is_empty(), "no worker thread found");
            if nice.iter().all(|&n| n >= WORKER_NICE) {
                break;
            }
            assert!(Instant::now() < deadline, "{nice:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn beyond_the_slots_and_the_queue_checks_are_refused_at_once() {
        let gate = Arc::new(PasswordGate::new(1, Duration::from_secs(30)));
        let checks: Vec<_> = (0..40)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.verify("pw".into(), None).await })
            })
            .collect();
        let mut refused = 0;
        for check in checks {
            match check.await.expect("task") {
                Ok(false) => {}
                Ok(true) => panic!("no password matches the decoy"),
                Err(e) => {
                    assert_eq!(e.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
                    assert!(e.retry_after.is_some());
                    refused += 1;
                }
            }
        }
        // One runs, eight wait: the rest are turned away.
        assert!((30..=32).contains(&refused), "{refused}");
    }
}
