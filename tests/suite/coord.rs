//! `berth::coord` through its API. Each lock scenario is written once and
//! runs on every backend: on `local` (one coordinator playing both
//! processes), on lock files (two coordinators on one root) and on a real
//! PostgreSQL, where two coordinators on one
//! database stand for two berth processes sharing a store. On PostgreSQL,
//! blocking is proven by the server itself (`pg_locks` shows the waiter);
//! locally, by a waiter not granted within a bounded wait. No test asserts
//! speed, and every wait is bounded.

use std::time::Duration;

use crate::common::postgres::Postgres;
use berth::coord::{CoordError, Coordinator, Guard, Lock, Mode, PostgresUrl};
use tokio::task::JoinHandle;

/// Bound for what should happen at once.
const SOON: Duration = Duration::from_secs(10);
/// How long a local waiter is given to be granted when it should not be.
const BLOCKED: Duration = Duration::from_millis(200);

const WAITING: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
const HELD: &str = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted";

/// How a scenario sees lock requests wait.
enum Watch {
    Local,
    Postgres(tokio_postgres::Client),
}

impl Watch {
    /// Returns once `n` lock requests wait (locally: after giving the
    /// waiters time to be granted wrongly).
    async fn waiting(&self, n: i64) {
        match self {
            Watch::Local => tokio::time::sleep(BLOCKED).await,
            Watch::Postgres(admin) => until(admin, WAITING, n).await,
        }
    }

    fn admin(&self) -> &tokio_postgres::Client {
        match self {
            Watch::Postgres(admin) => admin,
            Watch::Local => panic!("no server to look at"),
        }
    }

    /// Returns once no lock is held.
    async fn nothing_held(&self) {
        if let Watch::Postgres(admin) = self {
            until(admin, HELD, 0).await;
        }
    }
}

/// Two "processes" on one PostgreSQL database, each with its own pool,
/// their sessions named `berth-a` and `berth-b` on the server.
async fn two_processes(pg: &Postgres) -> (Coordinator, Coordinator, Watch) {
    let a = process(pg, "store", "berth-a").await;
    let b = process(pg, "store", "berth-b").await;
    (a, b, Watch::Postgres(admin(pg).await))
}

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

/// Waits until `held` turns false.
async fn until_lost(guard: &Guard) {
    let deadline = tokio::time::Instant::now() + SOON;
    while guard.held() {
        assert!(tokio::time::Instant::now() < deadline, "still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn repo(name: &str) -> Lock {
    Lock::Repo(name.to_string())
}

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

/// Runs `scenario` on `local` and on PostgreSQL.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let c = berth::coord::Coordinator::local();
                    super::$scenario(&c, &c, &super::Watch::Local).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let pg = super::Postgres::start();
                    let (a, b, watch) = super::two_processes(&pg).await;
                    super::$scenario(&a, &b, &watch).await;
                }
            )*
        }
    };
}

/// Runs `scenario` on lock files in one root, opened twice (`flock` locks
/// of two opens conflict as those of two processes do).
macro_rules! on_lock_files {
    ($($scenario:ident),* $(,)?) => {
        mod files {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let root = tempfile::tempdir().unwrap();
                    let a = berth::coord::Coordinator::files(root.path());
                    let b = berth::coord::Coordinator::files(root.path());
                    super::$scenario(&a, &b, &super::Watch::Local).await;
                }
            )*
        }
    };
}

// A root is one store: lock files have no other stores to keep apart.
on_lock_files!(
    shared_and_exclusive,
    a_waiting_collection_holds_new_writers_back,
    one_collection_at_a_time,
    nested_locks_follow_the_order,
    dropped_guards_release,
    a_wait_cut_off_leaves_nothing_behind,
);

on_both_backends!(
    shared_and_exclusive,
    a_waiting_collection_holds_new_writers_back,
    one_collection_at_a_time,
    nested_locks_follow_the_order,
    dropped_guards_release,
    a_wait_cut_off_leaves_nothing_behind,
    stores_do_not_meet,
);

async fn shared_and_exclusive(a: &Coordinator, b: &Coordinator, watch: &Watch) {
    // Shared holders coexist; an exclusive lock waits for all of them.
    let sa = take(a, Lock::Gc, Mode::Shared).await;
    let sb = take(b, Lock::Gc, Mode::Shared).await;
    assert!(!free(b, Lock::Gc, Mode::Exclusive).await);
    let x = waiter(b, Lock::Gc, Mode::Exclusive);
    watch.waiting(1).await;
    sa.release().await;
    watch.waiting(1).await;
    assert!(!x.is_finished(), "an exclusive lock passed a shared one");
    drop(sb);
    let x = granted(x).await;
    assert_eq!((x.lock_name(), x.mode()), (&Lock::Gc, Mode::Exclusive));

    // An exclusive holder keeps shared and exclusive lockers out.
    assert!(!free(a, Lock::Gc, Mode::Shared).await);
    assert!(!free(a, Lock::Gc, Mode::Exclusive).await);
    let s = waiter(a, Lock::Gc, Mode::Shared);
    watch.waiting(1).await;
    assert!(!s.is_finished(), "a shared lock passed an exclusive one");
    drop(x);
    drop(granted(s).await);
    watch.nothing_held().await;
}

async fn a_waiting_collection_holds_new_writers_back(
    a: &Coordinator,
    b: &Coordinator,
    watch: &Watch,
) {
    let writer = take(a, Lock::Gc, Mode::Shared).await;
    let gc = waiter(b, Lock::Gc, Mode::Exclusive);
    watch.waiting(1).await;
    // A new writer waits behind the collection, not beside the old writer.
    assert!(!free(a, Lock::Gc, Mode::Shared).await);
    let next = waiter(a, Lock::Gc, Mode::Shared);
    watch.waiting(2).await;
    writer.release().await;
    let gc = granted(gc).await;
    watch.waiting(1).await;
    assert!(!next.is_finished());
    drop(gc);
    drop(granted(next).await);
}

async fn one_collection_at_a_time(a: &Coordinator, b: &Coordinator, _: &Watch) {
    let run = take(a, Lock::GcRun, Mode::Exclusive).await;
    assert!(b
        .try_lock(Lock::GcRun, Mode::Exclusive)
        .await
        .unwrap()
        .is_none());
    // Other locks are not affected.
    assert!(free(b, Lock::Gc, Mode::Exclusive).await);
    // The collection's gc lock, taken through its run, keeps writers out,
    // and it takes it again later in its run.
    for _ in 0..2 {
        let gc = run.lock(Lock::Gc, Mode::Exclusive).await.unwrap();
        assert!(!free(b, Lock::Gc, Mode::Shared).await);
        gc.release().await;
        assert!(free(b, Lock::Gc, Mode::Shared).await);
    }
    drop(run);
    drop(take(b, Lock::GcRun, Mode::Exclusive).await);
}

async fn nested_locks_follow_the_order(a: &Coordinator, b: &Coordinator, _: &Watch) {
    let run = take(a, Lock::GcRun, Mode::Exclusive).await;
    let gc = run.lock(Lock::Gc, Mode::Exclusive).await.unwrap();
    let r = gc.lock(repo("team/app"), Mode::Exclusive).await.unwrap();
    assert!(!free(b, repo("team/app"), Mode::Shared).await);
    assert!(free(b, repo("team/other"), Mode::Exclusive).await);
    // Another repository, or an earlier lock, would risk a deadlock.
    for (lock, held) in [(repo("team/other"), "repository"), (Lock::Gc, "repository")] {
        match r.lock(lock.clone(), Mode::Exclusive).await {
            Err(CoordError::Order { held: h, .. }) => assert_eq!(h, held),
            other => panic!("{lock}: {other:?}"),
        }
    }
    let e = gc.try_lock(Lock::GcRun, Mode::Exclusive).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot take the gc-run lock while holding a repository lock"),
        "{e}"
    );
    // Dropping the first guard leaves the later ones held.
    drop(run);
    assert!(!free(b, Lock::Gc, Mode::Shared).await);
    assert!(!free(b, repo("team/app"), Mode::Shared).await);
    gc.release().await;
    assert!(free(b, Lock::Gc, Mode::Exclusive).await);
    assert!(!free(b, repo("team/app"), Mode::Shared).await);
    r.release().await;
    assert!(free(b, repo("team/app"), Mode::Exclusive).await);
}

async fn dropped_guards_release(a: &Coordinator, b: &Coordinator, watch: &Watch) {
    let writer = take(a, Lock::Gc, Mode::Shared).await;
    let r = writer
        .lock(repo("team/app"), Mode::Exclusive)
        .await
        .unwrap();
    assert!(writer.held() && r.held());
    // Held across a blocking task, and dropped there.
    tokio::task::spawn_blocking(move || drop((writer, r)))
        .await
        .unwrap();
    drop(take(b, Lock::Gc, Mode::Exclusive).await);
    drop(take(b, repo("team/app"), Mode::Exclusive).await);
    watch.nothing_held().await;
}

async fn a_wait_cut_off_leaves_nothing_behind(a: &Coordinator, b: &Coordinator, watch: &Watch) {
    let x = take(a, Lock::Gc, Mode::Exclusive).await;
    let cut = tokio::time::timeout(BLOCKED, b.lock(Lock::Gc, Mode::Exclusive)).await;
    assert!(cut.is_err(), "granted while held elsewhere");
    watch.waiting(0).await;
    x.release().await;
    // Nobody got the lock the cut-off wait asked for.
    assert!(free(b, Lock::Gc, Mode::Exclusive).await);
}

async fn stores_do_not_meet(one: &Coordinator, _: &Coordinator, _: &Watch) {
    let two = one.for_store("s3://bucket/two");
    let run = take(one, Lock::GcRun, Mode::Exclusive).await;
    let gc = run.lock(Lock::Gc, Mode::Exclusive).await.unwrap();
    let _repo = gc.lock(repo("a"), Mode::Exclusive).await.unwrap();
    let _gc = take(&two, Lock::Gc, Mode::Exclusive).await;
    assert!(free(&two, Lock::GcRun, Mode::Exclusive).await);
    assert!(free(&two, repo("a"), Mode::Exclusive).await);
    // Another coordinator for a store's name takes the same locks.
    let two_again = one.for_store("s3://bucket/two");
    assert!(!free(&two_again, Lock::Gc, Mode::Shared).await);
}

#[tokio::test]
async fn postgres_describes_itself_without_the_password() {
    let pg = Postgres::start();
    let url = format!("postgres://berth:hunter2@127.0.0.1:{}/postgres", pg.port());
    let c = Coordinator::postgres(&url, "store", 2).await.unwrap();
    assert_eq!(
        c.describe(),
        format!("postgres 127.0.0.1:{}/postgres", pg.port())
    );
    assert!(!format!("{c:?}").contains("hunter2"));
    assert_eq!(Coordinator::local().describe(), "local");
}

#[tokio::test]
async fn postgres_the_same_store_meets_across_pools() {
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
    let gc = take(&two, Lock::Gc, Mode::Exclusive).await;
    assert!(!free(&two_elsewhere, Lock::Gc, Mode::Shared).await);
    assert!(free(&one, Lock::Gc, Mode::Shared).await);
    drop(gc);
    drop(take(&two_elsewhere, Lock::Gc, Mode::Shared).await);
}

#[tokio::test]
async fn postgres_connections_go_back_to_the_pool() {
    let pg = Postgres::start();
    let (a, _, watch) = two_processes(&pg).await;
    let admin = watch.admin();
    // Every connection that ever served berth-a: a pool of 4 that closed
    // connections instead of reusing them would show new ones each round.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let gc = take(&a, Lock::Gc, Mode::Shared).await;
        let r = gc
            .lock(repo(&format!("r{i}")), Mode::Exclusive)
            .await
            .unwrap();
        assert!(free(&a, Lock::GcRun, Mode::Exclusive).await);
        drop((gc, r));
        watch.nothing_held().await;
        let pids = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'berth-a'",
                &[],
            )
            .await
            .unwrap();
        assert!(
            !pids.is_empty(),
            "round {i}: no connection left in the pool"
        );
        seen.extend(pids.iter().map(|row| row.get::<_, i32>(0)));
    }
    assert!(
        seen.len() <= 4,
        "{} connections for a pool of 4",
        seen.len()
    );
}

#[tokio::test]
async fn postgres_killed_connections_release_their_locks() {
    let pg = Postgres::start();
    let (a, b, watch) = two_processes(&pg).await;
    let admin = watch.admin();
    let run = take(&a, Lock::GcRun, Mode::Exclusive).await;
    let gc = run.lock(Lock::Gc, Mode::Exclusive).await.unwrap();
    let w = waiter(&b, Lock::Gc, Mode::Shared);
    watch.waiting(1).await;
    count(
        admin,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'berth-a'",
    )
    .await;
    let shared = granted(w).await;
    assert!(free(&b, Lock::GcRun, Mode::Exclusive).await);
    // The holder learns that its locks are gone.
    until_lost(&run).await;
    until_lost(&gc).await;
    drop(gc);
    drop(run);
    // Its pool recovers: the dead connections are replaced.
    drop(shared);
    drop(take(&a, Lock::Gc, Mode::Exclusive).await);
    assert!(free(&a, Lock::GcRun, Mode::Exclusive).await);
}

#[tokio::test]
async fn postgres_stopped_server_ends_waits_and_holds() {
    let mut pg = Postgres::start();
    let (a, b, watch) = two_processes(&pg).await;
    let x = take(&a, Lock::Gc, Mode::Exclusive).await;
    let w = waiter(&b, Lock::Gc, Mode::Exclusive);
    watch.waiting(1).await;
    pg.stop();
    let e = tokio::time::timeout(SOON, w)
        .await
        .expect("the wait ends")
        .unwrap()
        .unwrap_err();
    let server = format!("127.0.0.1:{}/postgres", pg.port());
    assert!(e.to_string().contains(&server), "{e}");
    until_lost(&x).await;
}

/// The error of connecting to `url`, which must come in time.
async fn connect_error(url: &str) -> String {
    let e = tokio::time::timeout(SOON, Coordinator::postgres(url, "s", 4))
        .await
        .expect("fails in time")
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2"), "{e}");
    e
}

#[tokio::test]
async fn postgres_unreachable_fails_clearly_and_in_time() {
    // Nothing listens.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = connect_error(&format!("postgres://berth:hunter2@127.0.0.1:{port}/berth")).await;
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
    let e = connect_error(&format!(
        "postgres://berth:hunter2@127.0.0.1:{port}/berth?connect_timeout=1"
    ))
    .await;
    assert_eq!(
        e,
        format!("cannot connect to PostgreSQL at 127.0.0.1:{port}/berth: no answer within 1s")
    );
}

#[tokio::test]
async fn postgres_wrong_database_fails_clearly() {
    let pg = Postgres::start();
    let e = connect_error(&format!(
        "postgres://berth:hunter2@127.0.0.1:{}/nope",
        pg.port()
    ))
    .await;
    assert!(e.contains("database \"nope\" does not exist"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}
