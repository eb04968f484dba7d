#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Databases created before the migrations' comments were reworded keep opening; any other change
//! to an applied migration still stops the server.

use sqlx::Connection as _;

const OLD_SQLITE_0001: &str = "e410e18266296fe286fdeccafe4339b162570639c06f7b08ac2a93f68eefa3f2d107299577d0af5bf5f613c69006e31c";
const OLD_POSTGRES_0001: &str = "93e435f3839760250266e759626b8e3957c9331140b361c927c98564a200f858cbd61974980bbfe1d954863b2dc5f41e";

async fn set_checksum(url: &str, checksum: Vec<u8>) {
    let query = "update _sqlx_migrations set checksum = $1 where version = 1";
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(query).bind(checksum).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(query).bind(checksum).execute(&mut conn).await.unwrap();
    }
}

async fn reworded_comments_are_adopted_other_changes_are_refused(url: String, old: &str) {
    drop(nixflex_store::open(&url, 2).await.unwrap());
    // As a database migrated by the earlier wording of 0001 records it.
    set_checksum(&url, hex::decode(old).unwrap()).await;
    let store = nixflex_store::open(&url, 2).await.expect("an earlier wording is adopted");
    store.ping().await.unwrap();
    drop(store);
    // Any other checksum means the migration really changed: refuse to start.
    set_checksum(&url, vec![0; 48]).await;
    assert!(nixflex_store::open(&url, 2).await.is_err());
}

#[tokio::test]
async fn sqlite_databases_from_the_earlier_wording_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    reworded_comments_are_adopted_other_changes_are_refused(url, OLD_SQLITE_0001).await;
}

#[tokio::test]
async fn postgres_databases_from_the_earlier_wording_still_open() {
    let url = nixflex_store::testing::fresh_postgres_url().await;
    reworded_comments_are_adopted_other_changes_are_refused(url, OLD_POSTGRES_0001).await;
}
