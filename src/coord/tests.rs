//! What the lock scenarios in tests/suite/coord.rs (run on both backends) cannot
//! see: how repositories share local locks, keys, URLs and errors.

use super::*;

#[test]
fn guards_and_coordinators_travel() {
    fn travels<T: Send + Sync + 'static>() {}
    travels::<Guard>();
    travels::<Coordinator>();
}

#[tokio::test]
async fn repositories_lock_apart() {
    let c = Coordinator::local();
    let repo = |name: &str| Lock::Repo(name.to_string());
    let free = |name: &str| {
        let c = c.clone();
        let lock = repo(name);
        async move { c.try_lock(lock, Mode::Exclusive).await.unwrap().is_some() }
    };
    // Two names on different stripes, and a third on the first's stripe.
    let names: Vec<String> = (0..1000).map(|i| format!("team/app{i}")).collect();
    let stripe = |n: &str| local::Locks::stripe(key(&c.store, &repo(n)));
    let a = &names[0];
    let b = names.iter().find(|n| stripe(n) != stripe(a)).unwrap();
    let same = names[1..].iter().find(|n| stripe(n) == stripe(a)).unwrap();
    let held = c.lock(repo(a), Mode::Exclusive).await.unwrap();
    assert!(!free(a).await);
    assert!(free(b).await);
    // A shared stripe only makes two repositories wait for each other.
    assert!(!free(same).await);
    drop(held);
    assert!(free(a).await);
}

#[test]
fn keys_differ_by_store_and_lock() {
    let repo = |name: &str| Lock::Repo(name.to_string());
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
