//! The lock semantics on the local backend (the PostgreSQL backend gets
//! the same checks against a real server in tests/coord.rs), keys and URLs.

use std::time::Duration;

use super::*;

/// How long a lock that should not be granted is given to be granted anyway.
const BLOCKED: Duration = Duration::from_millis(200);
/// Bound for what should happen at once.
const SOON: Duration = Duration::from_secs(10);

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

#[test]
fn guards_and_coordinators_travel() {
    fn travels<T: Send + Sync + 'static>() {}
    travels::<Guard>();
    travels::<Coordinator>();
}

#[tokio::test]
async fn shared_holders_coexist_and_exclusive_excludes() {
    let c = Coordinator::local();
    assert_eq!(c.describe(), "local");
    let a = take(&c, Lock::Gc, Mode::Shared).await;
    let b = take(&c, Lock::Gc, Mode::Shared).await;
    assert!(!free(&c, Lock::Gc, Mode::Exclusive).await);
    drop(a);
    assert!(!free(&c, Lock::Gc, Mode::Exclusive).await);
    drop(b);
    let x = take(&c, Lock::Gc, Mode::Exclusive).await;
    assert!(!free(&c, Lock::Gc, Mode::Shared).await);
    assert!(!free(&c, Lock::Gc, Mode::Exclusive).await);
    // A waiting shared lock is granted once the exclusive one goes.
    let waiter = tokio::spawn({
        let c = c.clone();
        async move { c.lock(Lock::Gc, Mode::Shared).await.unwrap() }
    });
    tokio::time::sleep(BLOCKED).await;
    assert!(
        !waiter.is_finished(),
        "a shared lock passed an exclusive one"
    );
    drop(x);
    let shared = tokio::time::timeout(SOON, waiter).await.unwrap().unwrap();
    assert_eq!(
        (shared.lock_name(), shared.mode()),
        (&Lock::Gc, Mode::Shared)
    );
    // And the other way round: an exclusive waiter waits for the shared holder.
    let waiter = tokio::spawn({
        let c = c.clone();
        async move { c.lock(Lock::Gc, Mode::Exclusive).await.unwrap() }
    });
    tokio::time::sleep(BLOCKED).await;
    assert!(
        !waiter.is_finished(),
        "an exclusive lock passed a shared one"
    );
    drop(shared);
    drop(tokio::time::timeout(SOON, waiter).await.unwrap().unwrap());
    assert!(free(&c, Lock::Gc, Mode::Exclusive).await);
}

#[tokio::test]
async fn a_waiting_collection_holds_new_writers_back() {
    let c = Coordinator::local();
    let writer = take(&c, Lock::Gc, Mode::Shared).await;
    let gc = tokio::spawn({
        let c = c.clone();
        async move { c.lock(Lock::Gc, Mode::Exclusive).await.unwrap() }
    });
    tokio::time::sleep(BLOCKED).await;
    assert!(!gc.is_finished());
    // A new writer waits behind the collection, not beside the old writer.
    assert!(!free(&c, Lock::Gc, Mode::Shared).await);
    let next = tokio::spawn({
        let c = c.clone();
        async move { c.lock(Lock::Gc, Mode::Shared).await.unwrap() }
    });
    tokio::time::sleep(BLOCKED).await;
    drop(writer);
    let gc = tokio::time::timeout(SOON, gc).await.unwrap().unwrap();
    tokio::time::sleep(BLOCKED).await;
    assert!(!next.is_finished());
    drop(gc);
    drop(tokio::time::timeout(SOON, next).await.unwrap().unwrap());
}

#[tokio::test]
async fn one_collection_at_a_time() {
    let c = Coordinator::local();
    let run = take(&c, Lock::GcRun, Mode::Exclusive).await;
    assert!(c
        .try_lock(Lock::GcRun, Mode::Exclusive)
        .await
        .unwrap()
        .is_none());
    // Other locks are not affected.
    assert!(free(&c, Lock::Gc, Mode::Exclusive).await);
    run.release().await;
    assert!(free(&c, Lock::GcRun, Mode::Exclusive).await);
}

#[tokio::test]
async fn repositories_lock_apart() {
    let c = Coordinator::local();
    // Two names on different stripes, and a third on the first's stripe.
    let names: Vec<String> = (0..1000).map(|i| format!("team/app{i}")).collect();
    let stripe = |n: &str| local::Locks::stripe(key(&c.store, &repo(n)));
    let a = &names[0];
    let b = names.iter().find(|n| stripe(n) != stripe(a)).unwrap();
    let same = names[1..].iter().find(|n| stripe(n) == stripe(a)).unwrap();
    let held = take(&c, repo(a), Mode::Exclusive).await;
    assert!(!free(&c, repo(a), Mode::Exclusive).await);
    assert!(!free(&c, repo(a), Mode::Shared).await);
    assert!(free(&c, repo(b), Mode::Exclusive).await);
    // A shared stripe only makes two repositories wait for each other.
    assert!(!free(&c, repo(same), Mode::Exclusive).await);
    drop(held);
    assert!(free(&c, repo(a), Mode::Exclusive).await);
}

#[tokio::test]
async fn nested_locks_follow_the_order() {
    let c = Coordinator::local();
    let run = take(&c, Lock::GcRun, Mode::Exclusive).await;
    let gc = run.lock(Lock::Gc, Mode::Exclusive).await.unwrap();
    let r = gc.lock(repo("a"), Mode::Exclusive).await.unwrap();
    // Another repository, or an earlier lock, would risk a deadlock.
    for (lock, held) in [(repo("b"), "repository"), (Lock::Gc, "repository")] {
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
    drop(r);
    drop(gc);
    // The collection takes the gc lock again later in its run.
    let gc = run.lock(Lock::Gc, Mode::Exclusive).await.unwrap();
    assert!(!free(&c, Lock::Gc, Mode::Shared).await);
    drop(gc);
    assert!(free(&c, Lock::Gc, Mode::Shared).await);
    // Dropping the first guard leaves the later one held.
    let writer = take(&c, Lock::Gc, Mode::Shared).await;
    let r = writer.lock(repo("a"), Mode::Exclusive).await.unwrap();
    drop(writer);
    assert!(free(&c, Lock::Gc, Mode::Exclusive).await);
    assert!(!free(&c, repo("a"), Mode::Exclusive).await);
    drop(r);
}

#[tokio::test]
async fn guards_drop_in_blocking_threads() {
    let c = Coordinator::local();
    let gc = take(&c, Lock::Gc, Mode::Shared).await;
    let r = gc.lock(repo("a"), Mode::Exclusive).await.unwrap();
    assert!(r.held());
    tokio::task::spawn_blocking(move || {
        let _hold = (gc, r);
    })
    .await
    .unwrap();
    assert!(free(&c, Lock::Gc, Mode::Exclusive).await);
    assert!(free(&c, repo("a"), Mode::Exclusive).await);
}

#[tokio::test]
async fn stores_are_apart() {
    let one = Coordinator::local();
    let two = one.for_store("two");
    let _x = take(&one, Lock::Gc, Mode::Exclusive).await;
    let _r = take(&one, repo("a"), Mode::Exclusive).await;
    assert!(free(&two, Lock::Gc, Mode::Exclusive).await);
    assert!(free(&two, repo("a"), Mode::Exclusive).await);
}

#[test]
fn keys_differ_by_store_and_lock() {
    let locks = [Lock::GcRun, Lock::Gc, repo("a"), repo("b"), repo("gc")];
    let mut keys = std::collections::HashSet::new();
    for store in ["", "/srv/data/ci", "s3://bucket/ci", "s3://bucket/cache"] {
        for lock in &locks {
            assert!(keys.insert(key(store, lock)), "{store} {lock}");
            assert_eq!(key(store, lock), key(store, lock));
        }
    }
    // The store's name cannot run into the lock's.
    assert_ne!(key("a", &Lock::Gc), key("", &repo("a")));
}

#[test]
fn urls() {
    let u = PostgresUrl::parse("postgres://berth:hunter2@db.example.com/registry").unwrap();
    assert_eq!(u.server(), "db.example.com:5432/registry");
    assert_eq!(
        format!("{u:?}"),
        "PostgresUrl(\"db.example.com:5432/registry\")"
    );
    let u = PostgresUrl::parse("postgresql://berth@[::1]:6432").unwrap();
    assert_eq!(u.server(), "[::1]:6432/berth");
    let u = PostgresUrl::parse("postgres://u@a:1,b:2/d?connect_timeout=2").unwrap();
    assert_eq!(u.server(), "a:1,b:2/d");
    for (url, error) in [
        (
            "host=db user=berth",
            "invalid PostgreSQL URL: expected a URL such as postgres://",
        ),
        (
            "postgres://berth:hunter2@db:port/x",
            "invalid PostgreSQL URL: invalid connection string: invalid value for option `port`",
        ),
        (
            "postgres://berth:hunter2@db/x?bogus=1",
            "invalid PostgreSQL URL: invalid connection string: unknown option `bogus`",
        ),
        ("postgres:///x", "invalid PostgreSQL URL: no host"),
        (
            "postgres://db/x?sslmode=require",
            "invalid PostgreSQL URL: sslmode=require: TLS",
        ),
    ] {
        let e = PostgresUrl::parse(url).unwrap_err().to_string();
        assert!(e.starts_with(error), "{url}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}

#[test]
fn errors_become_internal_with_their_cause() {
    let e = RegistryError::from(CoordError::Connect {
        server: "db:5432/berth".to_string(),
        cause: "connection refused".to_string(),
    });
    assert_eq!(e.status(), 500);
    assert_eq!(
        e.to_string(),
        "internal error: coordination: cannot connect to PostgreSQL at db:5432/berth: connection refused"
    );
}
