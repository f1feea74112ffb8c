//! `roomcast fixture`: seed M rooms of K members straight into storage and
//! describe them as `docs/fixture.md` says, with signed tokens.

use anyhow::Context;
use roomcast_domain::{RoomSlug, Username};
use roomcast_storage::RoomSeed;
use roomcast_transport::JwtKeys;
use serde::Serialize;

use crate::cli::CommonArgs;
use crate::secret;
use crate::server::{open_storage, public_addr};

/// Tokens in a fixture are valid this long (FIXTURE.md: 24 hours).
const TOKEN_TTL: time::Duration = time::Duration::hours(24);

#[derive(Debug, Serialize)]
pub struct Fixture {
    pub name: String,
    pub ws_base: String,
    pub cookie_name: String,
    pub origin: String,
    pub rooms: Vec<FixtureRoom>,
}

#[derive(Debug, Serialize)]
pub struct FixtureRoom {
    pub host: String,
    pub slug: String,
    pub members: Vec<FixtureMember>,
}

#[derive(Debug, Serialize)]
pub struct FixtureMember {
    pub username: String,
    pub user_id: String,
    pub token: String,
}

/// Room `r` is `user-{r*K}/room-{r}` with members `user-{r*K}` to
/// `user-{r*K+K-1}`. Existing users, rooms and participants are kept, so a
/// second run with other numbers only adds.
pub async fn fixture(common: &CommonArgs, rooms: usize, members: usize) -> anyhow::Result<Fixture> {
    anyhow::ensure!(
        rooms > 0 && members > 0,
        "--rooms and --members must be at least 1"
    );
    let storage = open_storage(common).await?;
    let keys = JwtKeys::new(&secret::load_or_create(
        common.jwt_secret.as_deref(),
        &common.data_dir,
    )?);
    let seeds = (0..rooms)
        .map(|r| -> anyhow::Result<RoomSeed> {
            let names = (0..members)
                .map(|k| Username::parse(format!("user-{}", r * members + k)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(RoomSeed {
                host: names[0].clone(),
                slug: RoomSlug::parse(format!("room-{r}"))?,
                members: names,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let seeded = storage.seed_rooms(&seeds).await.context("seeding rooms")?;
    let addr = public_addr(common.bind);
    let mut out = Vec::with_capacity(seeded.len());
    for room in seeded {
        let mut list = Vec::with_capacity(room.members.len());
        for user in &room.members {
            list.push(FixtureMember {
                username: user.username.to_string(),
                user_id: user.id.to_string(),
                token: keys.sign(user, TOKEN_TTL)?,
            });
        }
        out.push(FixtureRoom {
            host: room.room.host.to_string(),
            slug: room.room.slug.to_string(),
            members: list,
        });
    }
    Ok(Fixture {
        name: "roomcast".into(),
        ws_base: format!("ws://{addr}/ws/chat"),
        cookie_name: "JWT".into(),
        origin: format!("http://{addr}"),
        rooms: out,
    })
}
