//! `cargo xtask bench unread`: `GET /api/rooms`' storage read for a user in
//! many big rooms (issue 15: 1,000 rooms of 10,000 messages each, the list
//! within 50 ms on SQLite and PostgreSQL).
//!
//! Seeding goes around the server on purpose: ten million messages through
//! the message writer would take minutes. Rooms and members come from
//! `seed_rooms`; messages are inserted in bulk with SQL (no event log rows:
//! the list never reads them), so the schema's triggers keep the counts as
//! they do for the writer. The reader then reads each room up to a
//! different point through `mark_read`, and every room's `unread` from the
//! list is checked against a count of the messages themselves, so a fast
//! but wrong list cannot pass.
//!
//! Measured: `ReadRepository::room_list` (the whole of the endpoint's
//! database work), after warm-up calls. What it reads: `participants_by_user`
//! for the user's rooms, then each room by primary key, its host by primary
//! key and its participant count from the participants primary key: one
//! row per room, never its messages. Results go to
//! the run's file under `bench/results/` (see bench/README.md).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use roomcast_domain::{RoomSlug, Username};
use roomcast_storage::postgres::TestDatabase;
use roomcast_storage::{RoomSeed, SeededRoom, Storage};
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

use super::report;

#[derive(Debug, Clone)]
struct Settings {
    rooms: usize,
    messages: u64,
    calls: usize,
    backends: Vec<String>,
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let settings = parse(args)?;
    super::multi_thread_runtime()?.block_on(bench(settings))
}

fn parse(args: &[String]) -> anyhow::Result<Settings> {
    let mut settings = Settings {
        rooms: 1000,
        messages: 10_000,
        calls: 30,
        backends: vec!["sqlite".into(), "postgres".into()],
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value"))
                .cloned()
        };
        match flag.as_str() {
            "--rooms" => settings.rooms = value()?.parse().context("--rooms")?,
            "--messages" => settings.messages = value()?.parse().context("--messages")?,
            "--calls" => settings.calls = value()?.parse().context("--calls")?,
            "--backend" => settings.backends = vec![value()?],
            other => bail!(
                "unknown option {other:?}; options: --rooms N --messages N --calls N --backend sqlite|postgres"
            ),
        }
    }
    if settings.rooms == 0 || settings.calls == 0 {
        bail!("--rooms and --calls must be at least 1");
    }
    Ok(settings)
}

async fn bench(settings: Settings) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for backend in &settings.backends {
        let outcome = match backend.as_str() {
            "sqlite" => {
                let dir = tempfile::tempdir().context("temp dir")?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                measure(&settings, "sqlite", &url).await?
            }
            "postgres" => {
                let admin = std::env::var("ROOMCAST_BENCH_PG_URL")
                    .unwrap_or_else(|_| TestDatabase::DEFAULT_ADMIN_URL.into());
                let db = TestDatabase::create(&admin)
                    .await
                    .context("creating a PostgreSQL database")?;
                measure(&settings, "postgres", db.url()).await?
            }
            other => bail!("unknown backend {other:?}"),
        };
        rows.push(vec![
            backend.clone(),
            settings.rooms.to_string(),
            settings.messages.to_string(),
            report::f1(outcome.seed.as_secs_f64()),
            format!("{:.2}", ms(outcome.p50)),
            format!("{:.2}", ms(outcome.p99)),
            format!("{:.2}", ms(outcome.max)),
            outcome.unread_total.to_string(),
        ]);
        results.push(json!({
            "backend": backend,
            "seed_seconds": outcome.seed.as_secs_f64(),
            "mark_read_p50_ms": ms(outcome.mark_read_p50),
            "list_p50_ms": ms(outcome.p50),
            "list_p99_ms": ms(outcome.p99),
            "list_max_ms": ms(outcome.max),
            "unread_total": outcome.unread_total,
        }));
    }
    report::table(
        &format!(
            "unread: GET /api/rooms' storage read, one user in {} rooms of {} messages, {} calls",
            settings.rooms, settings.messages, settings.calls
        ),
        &[
            "backend", "rooms", "messages", "seed s", "p50 ms", "p99 ms", "max ms", "unread",
        ],
        &rows,
    );
    report::write(
        "unread",
        "in-process storage",
        json!({"rooms": settings.rooms, "messages_per_room": settings.messages, "calls": settings.calls}),
        json!(results),
    )?;
    Ok(())
}

#[derive(Debug)]
struct Outcome {
    seed: Duration,
    mark_read_p50: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    unread_total: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pick(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

async fn measure(settings: &Settings, backend: &str, url: &str) -> anyhow::Result<Outcome> {
    eprintln!(
        "{backend}: seeding {} rooms of {} messages...",
        settings.rooms, settings.messages
    );
    let started = Instant::now();
    let store = roomcast_storage::connect(url)
        .await
        .with_context(|| format!("opening {backend}"))?;
    let reader = Username::parse("reader")?;
    let writer = Username::parse("writer")?;
    let seeds = (0..settings.rooms)
        .map(|i| -> anyhow::Result<RoomSeed> {
            Ok(RoomSeed {
                host: writer.clone(),
                slug: RoomSlug::parse(format!("room-{i}"))?,
                members: vec![writer.clone(), reader.clone()],
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rooms = store.seed_rooms(&seeds).await.context("seeding rooms")?;
    let member = |room: &SeededRoom, name: &Username| {
        room.members
            .iter()
            .find(|m| &m.username == name)
            .map(|m| m.id)
            .context("a seeded member")
    };
    let reader_id = member(&rooms[0], &reader)?;
    let writer_id = member(&rooms[0], &writer)?;
    let ids: Vec<Uuid> = rooms.iter().map(|r| Uuid::from(r.room.id)).collect();
    insert_messages(
        backend,
        url,
        &ids,
        settings.messages,
        writer_id.into(),
        reader_id.into(),
    )
    .await?;
    let seed = started.elapsed();

    // A different read position in each room, through the real path.
    let mut marks = Vec::with_capacity(rooms.len());
    for (i, room) in rooms.iter().enumerate() {
        let seq = (i as u64 * 997) % (settings.messages + 1);
        let sent = Instant::now();
        store
            .mark_read(room.room.id, reader_id, seq.into())
            .await
            .context("mark_read")?;
        marks.push(sent.elapsed());
    }
    marks.sort_unstable();
    eprintln!(
        "{backend}: seeded in {:.1} s; mark_read p50 {:.2} ms; measuring...",
        seed.as_secs_f64(),
        ms(pick(&marks, 0.5))
    );

    let unread_total = check(&store, backend, url, reader_id.into(), settings).await?;
    for _ in 0..3 {
        store.room_list(reader_id).await.context("warm-up")?;
    }
    let mut calls = Vec::with_capacity(settings.calls);
    for _ in 0..settings.calls {
        let sent = Instant::now();
        let list = store.room_list(reader_id).await.context("room_list")?;
        calls.push(sent.elapsed());
        if list.len() != settings.rooms {
            bail!("{} rooms listed, {} expected", list.len(), settings.rooms);
        }
    }
    calls.sort_unstable();
    Ok(Outcome {
        seed,
        mark_read_p50: pick(&marks, 0.5),
        p50: pick(&calls, 0.5),
        p99: pick(&calls, 0.99),
        max: calls.last().copied().unwrap_or_default(),
        unread_total,
    })
}

/// Every room's `unread` from the list against a count of its messages:
/// others' messages after the read position.
async fn check(
    store: &Storage,
    backend: &str,
    url: &str,
    reader: Uuid,
    settings: &Settings,
) -> anyhow::Result<u64> {
    let list = store
        .room_list(roomcast_domain::UserId::from_uuid(reader))
        .await?;
    let mut sqlite = None;
    let mut pg = None;
    match backend {
        "sqlite" => sqlite = Some(sqlx::SqliteConnection::connect(url).await?),
        _ => pg = Some(sqlx::PgConnection::connect(url).await?),
    }
    let mut total = 0;
    for listing in &list {
        let room = Uuid::from(listing.room.id);
        let read_seq = i64::try_from(listing.read.read_seq.get())?;
        let counted: i64 = match (&mut sqlite, &mut pg) {
            (Some(conn), _) => {
                sqlx::query_scalar(
                    "SELECT count(*) FROM messages WHERE room_id = ? AND seq > ? AND user_id <> ?",
                )
                .bind(room)
                .bind(read_seq)
                .bind(reader)
                .fetch_one(conn)
                .await?
            }
            (None, Some(conn)) => sqlx::query_scalar(
                "SELECT count(*) FROM messages WHERE room_id = $1 AND seq > $2 AND user_id <> $3",
            )
            .bind(room)
            .bind(read_seq)
            .bind(reader)
            .fetch_one(conn)
            .await?,
            (None, None) => bail!("no connection"),
        };
        if counted as u64 != listing.read.unread || listing.read.last_seq != settings.messages {
            bail!(
                "room {room}: listed unread {} (last_seq {}), counted {counted}",
                listing.read.unread,
                listing.read.last_seq
            );
        }
        total += listing.read.unread;
    }
    Ok(total)
}

/// `messages` messages per room, one in ten by the reader, seq 1..=N, and
/// each room's `last_seq` to match.
async fn insert_messages(
    backend: &str,
    url: &str,
    rooms: &[Uuid],
    messages: u64,
    writer: Uuid,
    reader: Uuid,
) -> anyhow::Result<()> {
    let now = 1_700_000_000_000_000i64;
    let n = i64::try_from(messages)?;
    match backend {
        "sqlite" => {
            let mut conn = sqlx::SqliteConnection::connect(url).await?;
            for room in rooms {
                let mut tx = conn.begin().await?;
                sqlx::query(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?2) \
                     INSERT INTO messages (id, room_id, user_id, seq, body, created_at, updated_at, edited) \
                     SELECT randomblob(16), ?1, CASE WHEN i % 10 = 0 THEN ?4 ELSE ?3 END, i, \
                         'a message of the unread bench', ?5, ?5, 0 FROM n",
                )
                .bind(room)
                .bind(n)
                .bind(writer)
                .bind(reader)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE rooms SET last_seq = ?2 WHERE id = ?1")
                    .bind(room)
                    .bind(n)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        _ => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            for chunk in rooms.chunks(50) {
                let mut tx = conn.begin().await?;
                sqlx::query(
                    "INSERT INTO messages (id, room_id, user_id, seq, body, created_at, updated_at, edited) \
                     SELECT gen_random_uuid(), r.id, CASE WHEN i % 10 = 0 THEN $4 ELSE $3 END, i, \
                         'a message of the unread bench', $5, $5, FALSE \
                     FROM unnest($1::uuid[]) AS r(id), generate_series(1, $2::int8) AS i",
                )
                .bind(chunk)
                .bind(n)
                .bind(writer)
                .bind(reader)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE rooms SET last_seq = $2 WHERE id = ANY($1)")
                    .bind(chunk)
                    .bind(n)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            sqlx::query("ANALYZE").execute(&mut conn).await?;
        }
    }
    Ok(())
}
