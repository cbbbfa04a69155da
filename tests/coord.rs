//! `berth::coord` on a real PostgreSQL: two coordinators on one database
//! stand for two berth processes sharing a store. Blocking is proven by
//! PostgreSQL itself (`pg_locks` shows the waiter), never by timing; every
//! wait is bounded.

mod common;

use std::time::Duration;

use berth::coord::{CoordError, Coordinator, Guard, Lock, Mode, PostgresUrl};
use common::postgres::Postgres;
use tokio::task::JoinHandle;

/// Bound for what should happen at once.
const SOON: Duration = Duration::from_secs(10);

/// A "process": its own pool, its sessions named `app` on the server.
async fn process(pg: &Postgres, store: &str, app: &str) -> Coordinator {
    let url = format!("{}?application_name={app}", pg.url());
    Coordinator::postgres(&url, store, 4).await.unwrap()
}

/// A plain connection for looking at the server.
async fn admin(pg: &Postgres) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn count(admin: &tokio_postgres::Client, sql: &str) -> i64 {
    admin.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until `sql` counts `n`.
async fn until(admin: &tokio_postgres::Client, sql: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let now = count(admin, sql).await;
        if now == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql}: {now}, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WAITING: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
const HELD: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted";

async fn take(c: &Coordinator, lock: Lock, mode: Mode) -> Guard {
    tokio::time::timeout(SOON, c.lock(lock, mode))
        .await
        .expect("lock in time")
        .expect("lock")
}

async fn free(c: &Coordinator, lock: Lock, mode: Mode) -> bool {
    c.try_lock(lock, mode).await.unwrap().is_some()
}

fn waiter(c: &Coordinator, lock: Lock, mode: Mode) -> JoinHandle<Result<Guard, CoordError>> {
    let c = c.clone();
    tokio::spawn(async move { c.lock(lock, mode).await })
}

async fn granted(w: JoinHandle<Result<Guard, CoordError>>) -> Guard {
    tokio::time::timeout(SOON, w)
        .await
        .expect("granted in time")
        .unwrap()
        .expect("lock")
}

#[tokio::test]
async fn shared_and_exclusive_between_processes() {
    let pg = Postgres::start();
    let admin = admin(&pg).await;
    let a = process(&pg, "store", "berth-a").await;
    let b = process(&pg, "store", "berth-b").await;
    assert_eq!(
        a.describe(),
        format!("postgres 127.0.0.1:{}/postgres", pg.port())
    );

    // Shared holders coexist; an exclusive lock waits for all of them.
    let sa = take(&a, Lock::Gc, Mode::Shared).await;
    let sb = take(&b, Lock::Gc, Mode::Shared).await;
    assert!(!free(&b, Lock::Gc, Mode::Exclusive).await);
    let x = waiter(&b, Lock::Gc, Mode::Exclusive);
    until(&admin, WAITING, 1).await;
    sa.release().await;
    until(&admin, WAITING, 1).await;
    assert!(!x.is_finished());
    drop(sb);
    let x = granted(x).await;

    // An exclusive holder keeps shared lockers out.
    assert!(!free(&a, Lock::Gc, Mode::Shared).await);
    let s = waiter(&a, Lock::Gc, Mode::Shared);
    until(&admin, WAITING, 1).await;
    assert!(!s.is_finished());
    drop(x);
    let s = granted(s).await;
    drop(s);
    until(&admin, HELD, 0).await;
}

#[tokio::test]
async fn a_waiting_collection_holds_new_writers_back() {
    let pg = Postgres::start();
    let admin = admin(&pg).await;
    let a = process(&pg, "store", "berth-a").await;
    let b = process(&pg, "store", "berth-b").await;
    let writer = take(&a, Lock::Gc, Mode::Shared).await;
    let gc = waiter(&b, Lock::Gc, Mode::Exclusive);
    until(&admin, WAITING, 1).await;
    // A new writer waits behind the collection, not beside the old writer.
    assert!(!free(&a, Lock::Gc, Mode::Shared).await);
    let next = waiter(&a, Lock::Gc, Mode::Shared);
    until(&admin, WAITING, 2).await;
    writer.release().await;
    let gc = granted(gc).await;
    until(&admin, WAITING, 1).await;
    assert!(!next.is_finished());
    drop(gc);
    drop(granted(next).await);
}

#[tokio::test]
async fn one_collection_at_a_time_and_drop_releases() {
    let pg = Postgres::start();
    let admin = admin(&pg).await;
    let a = process(&pg, "store", "berth-a").await;
    let b = process(&pg, "store", "berth-b").await;
    let run = take(&a, Lock::GcRun, Mode::Exclusive).await;
    assert!(b
        .try_lock(Lock::GcRun, Mode::Exclusive)
        .await
        .unwrap()
        .is_none());
    // The collection's gc lock, taken through its run, keeps writers out.
    let gc = run.lock(Lock::Gc, Mode::Exclusive).await.unwrap();
    assert!(!free(&b, Lock::Gc, Mode::Shared).await);
    drop(gc);
    let writer = take(&b, Lock::Gc, Mode::Shared).await;
    let repo = writer
        .lock(Lock::Repo("team/app".to_string()), Mode::Exclusive)
        .await
        .unwrap();
    assert!(!free(&a, Lock::Repo("team/app".to_string()), Mode::Shared).await);
    assert!(free(&a, Lock::Repo("team/other".to_string()), Mode::Exclusive).await);
    // Guards dropped in a blocking thread release their locks too.
    tokio::task::spawn_blocking(move || drop((writer, repo)))
        .await
        .unwrap();
    drop(run);
    drop(take(&b, Lock::GcRun, Mode::Exclusive).await);
    drop(take(&a, Lock::Repo("team/app".to_string()), Mode::Exclusive).await);
    until(&admin, HELD, 0).await;
    // Released connections went back to the pools: none was closed.
    let sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'berth-_'";
    let open = count(&admin, sessions).await;
    assert!((2..=8).contains(&open), "{open} sessions");
}

#[tokio::test]
async fn killed_connections_release_their_locks() {
    let pg = Postgres::start();
    let admin = admin(&pg).await;
    let a = process(&pg, "store", "berth-a").await;
    let b = process(&pg, "store", "berth-b").await;
    let run = take(&a, Lock::GcRun, Mode::Exclusive).await;
    let gc = run.lock(Lock::Gc, Mode::Exclusive).await.unwrap();
    let w = waiter(&b, Lock::Gc, Mode::Shared);
    until(&admin, WAITING, 1).await;
    count(
        &admin,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'berth-a'",
    )
    .await;
    let shared = granted(w).await;
    assert!(free(&b, Lock::GcRun, Mode::Exclusive).await);
    // The holder learns that its locks are gone.
    let deadline = tokio::time::Instant::now() + SOON;
    while run.held() || gc.held() {
        assert!(tokio::time::Instant::now() < deadline, "still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(gc);
    drop(run);
    // Its pool recovers: the dead connections are replaced.
    drop(shared);
    drop(take(&a, Lock::Gc, Mode::Exclusive).await);
    assert!(free(&a, Lock::GcRun, Mode::Exclusive).await);
}

#[tokio::test]
async fn a_wait_cut_off_leaves_nothing_behind() {
    let pg = Postgres::start();
    let admin = admin(&pg).await;
    let a = process(&pg, "store", "berth-a").await;
    let b = process(&pg, "store", "berth-b").await;
    let x = take(&a, Lock::Gc, Mode::Exclusive).await;
    let cut = tokio::time::timeout(
        Duration::from_millis(300),
        b.lock(Lock::Gc, Mode::Exclusive),
    )
    .await;
    assert!(cut.is_err(), "granted while held elsewhere");
    until(&admin, WAITING, 0).await;
    x.release().await;
    // Nobody got the lock the cut-off wait asked for.
    let again = b.try_lock(Lock::Gc, Mode::Exclusive).await.unwrap();
    assert!(again.is_some());
}

#[tokio::test]
async fn stores_do_not_meet() {
    let pg = Postgres::start();
    let one = process(&pg, "s3://bucket/one", "berth-a").await;
    let two = one.for_store("s3://bucket/two");
    // As the server will: with the URL the config parsed.
    let url = PostgresUrl::parse(&pg.url()).unwrap();
    let e = Coordinator::connect(&url, "s3://bucket/two", 0)
        .await
        .unwrap_err();
    assert!(matches!(e, CoordError::Setting(_)), "{e}");
    let two_elsewhere = Coordinator::connect(&url, "s3://bucket/two", 2)
        .await
        .unwrap();
    // (A holder takes further locks through its guard, on one connection.)
    let run = take(&one, Lock::GcRun, Mode::Exclusive).await;
    let gc = run.lock(Lock::Gc, Mode::Exclusive).await.unwrap();
    let _repo = gc
        .lock(Lock::Repo("a".to_string()), Mode::Exclusive)
        .await
        .unwrap();
    let gc2 = take(&two, Lock::Gc, Mode::Exclusive).await;
    assert!(free(&two, Lock::GcRun, Mode::Exclusive).await);
    assert!(free(&two, Lock::Repo("a".to_string()), Mode::Exclusive).await);
    // The same store through another pool does meet.
    assert!(!free(&two_elsewhere, Lock::Gc, Mode::Shared).await);
    drop(gc2);
    drop(take(&two_elsewhere, Lock::Gc, Mode::Shared).await);
}

#[tokio::test]
async fn a_stopped_server_ends_waits_and_holds() {
    let mut pg = Postgres::start();
    let admin = admin(&pg).await;
    let a = process(&pg, "store", "berth-a").await;
    let b = process(&pg, "store", "berth-b").await;
    let x = take(&a, Lock::Gc, Mode::Exclusive).await;
    let w = waiter(&b, Lock::Gc, Mode::Exclusive);
    until(&admin, WAITING, 1).await;
    pg.stop();
    let e = tokio::time::timeout(SOON, w)
        .await
        .expect("the wait ends")
        .unwrap()
        .unwrap_err();
    let server = format!("127.0.0.1:{}/postgres", pg.port());
    assert!(e.to_string().contains(&server), "{e}");
    let deadline = tokio::time::Instant::now() + SOON;
    while x.held() {
        assert!(tokio::time::Instant::now() < deadline, "still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn unreachable_servers_fail_clearly_and_in_time() {
    // Nothing listens.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://berth:hunter2@127.0.0.1:{port}/berth");
    let e = tokio::time::timeout(SOON, Coordinator::postgres(&url, "s", 4))
        .await
        .expect("fails in time")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port}/berth: error connecting to server"
        )),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");

    // Something accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("postgres://berth:hunter2@127.0.0.1:{port}/berth?connect_timeout=1");
    let e = tokio::time::timeout(SOON, Coordinator::postgres(&url, "s", 4))
        .await
        .expect("fails in time")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!("cannot connect to PostgreSQL at 127.0.0.1:{port}/berth: no answer within 1s")
    );
}

#[tokio::test]
async fn a_wrong_database_fails_clearly() {
    let pg = Postgres::start();
    let url = format!("postgres://berth:hunter2@127.0.0.1:{}/nope", pg.port());
    let e = Coordinator::postgres(&url, "s", 4)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("database \"nope\" does not exist"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}
