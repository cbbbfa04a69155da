//! An instance's retention policy ([`Retention`], set by `[retention]`) and
//! which tags it deletes: pure functions over tag facts and a given time,
//! so every rule can be tested without a clock or a disk.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::oci::Pattern;

/// What happens to manifests that no tag and no index references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Untagged {
    #[default]
    Delete,
    Keep,
}

/// An instance's retention policy.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Keep tags pushed within this long.
    pub max_age: Option<Duration>,
    /// Keep tags pulled within this long.
    pub unpulled_for: Option<Duration>,
    /// Keep the most recently pushed tags of each repository.
    pub keep_last: Option<usize>,
    /// Tags always kept.
    pub protect: Vec<Pattern>,
    /// Repositories the policy applies to; others are untouched.
    pub repositories: Vec<Pattern>,
    pub untagged: Untagged,
    /// Evict least recently used tags until the instance is below this.
    pub max_size: Option<u64>,
    /// How often the policy runs; `None`: only by `berth gc`.
    pub interval: Option<Duration>,
    /// Upload sessions older than this are purged.
    pub upload_ttl: Duration,
    /// Blobs and manifests younger than this are never swept.
    pub gc_grace: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: None,
            unpulled_for: None,
            keep_last: None,
            protect: Vec::new(),
            repositories: vec![Pattern::parse("**").expect("valid glob")],
            untagged: Untagged::Delete,
            max_size: None,
            interval: None,
            upload_ttl: Duration::from_secs(24 * 3600),
            gc_grace: Duration::from_secs(3600),
        }
    }
}

impl Retention {
    /// Whether any rule selects tags for deletion.
    pub fn has_tag_rules(&self) -> bool {
        self.max_age.is_some() || self.unpulled_for.is_some() || self.keep_last.is_some()
    }
}

/// What is known of one tag.
#[derive(Debug, Clone)]
pub struct TagFacts {
    pub repo: String,
    pub tag: String,
    pub pushed: SystemTime,
    pub pulled: Option<SystemTime>,
}

impl TagFacts {
    /// When it was last used: pulled, else pushed.
    fn last_used(&self) -> SystemTime {
        self.pulled.map_or(self.pushed, |p| p.max(self.pushed))
    }
}

fn within(t: SystemTime, span: Duration, now: SystemTime) -> bool {
    now.duration_since(t).map_or(true, |age| age < span)
}

fn in_scope(policy: &Retention, tag: &TagFacts) -> bool {
    policy.repositories.iter().any(|p| p.matches(&tag.repo))
}

fn protected(policy: &Retention, tag: &TagFacts) -> bool {
    policy.protect.iter().any(|p| p.matches(&tag.tag))
}

/// What the tag rules decide for one tag, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No rule deletes tags (no `max_age`, `unpulled_for` or `keep_last`).
    NoRules,
    /// The repository is outside `repositories`.
    OutOfScope,
    /// The tag matches a `protect` pattern (this one).
    Protected(String),
    /// Among the `keep_last` most recently pushed of its repository.
    KeepLast(usize),
    /// Pushed within `max_age`: kept until then.
    MaxAge(SystemTime),
    /// Pulled within `unpulled_for`: kept until then.
    UnpulledFor(SystemTime),
    /// Deleted by the next run: no rule keeps it.
    Expired,
}

impl Verdict {
    /// Whether the next run deletes the tag.
    pub fn deletes(&self) -> bool {
        *self == Verdict::Expired
    }
}

/// What the rules decide for each tag. A tag is kept when any rule keeps
/// it; protected tags and tags outside `repositories` are always kept; with
/// no rule (`max_age`, `unpulled_for`, `keep_last`) nothing is deleted.
pub fn verdicts(policy: &Retention, tags: &[TagFacts], now: SystemTime) -> Vec<Verdict> {
    if !policy.has_tag_rules() {
        return vec![Verdict::NoRules; tags.len()];
    }
    let mut by_repo: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in tags.iter().enumerate() {
        by_repo.entry(t.repo.as_str()).or_default().push(i);
    }
    let mut recent = vec![false; tags.len()];
    if let Some(n) = policy.keep_last {
        for idx in by_repo.values_mut() {
            idx.sort_by(|a, b| {
                tags[*b]
                    .pushed
                    .cmp(&tags[*a].pushed)
                    .then(tags[*a].tag.cmp(&tags[*b].tag))
            });
            for &i in idx.iter().take(n) {
                recent[i] = true;
            }
        }
    }
    let until =
        |t: SystemTime, span: Option<Duration>| span.filter(|&s| within(t, s, now)).map(|s| t + s);
    tags.iter()
        .enumerate()
        .map(|(i, t)| {
            if !in_scope(policy, t) {
                return Verdict::OutOfScope;
            }
            if let Some(p) = policy.protect.iter().find(|p| p.matches(&t.tag)) {
                return Verdict::Protected(p.text.clone());
            }
            if recent[i] {
                return Verdict::KeepLast(policy.keep_last.unwrap_or_default());
            }
            if let Some(at) = until(t.pushed, policy.max_age) {
                return Verdict::MaxAge(at);
            }
            match t.pulled.and_then(|p| until(p, policy.unpulled_for)) {
                Some(at) => Verdict::UnpulledFor(at),
                None => Verdict::Expired,
            }
        })
        .collect()
}

/// Indexes of the tags the rules delete ([`verdicts`]).
pub fn expired(policy: &Retention, tags: &[TagFacts], now: SystemTime) -> Vec<usize> {
    verdicts(policy, tags, now)
        .iter()
        .enumerate()
        .filter(|(_, v)| v.deletes())
        .map(|(i, _)| i)
        .collect()
}

/// Indexes of further tags to evict, least recently used first, until the
/// content reachable from the remaining tags fits in `max_size`. `blobs[i]`
/// are the blobs (digest, size) tag `i` keeps alive; `base` is what stays
/// whatever happens to the tags (untagged content that is kept).
pub fn evict_for_quota(
    policy: &Retention,
    tags: &[TagFacts],
    blobs: &[Vec<(String, u64)>],
    base: &HashMap<String, u64>,
    gone: &[usize],
) -> Vec<usize> {
    let Some(max) = policy.max_size else {
        return Vec::new();
    };
    let mut refs: HashMap<&str, (u64, usize)> = HashMap::new();
    for (d, size) in base {
        refs.entry(d).or_insert((*size, 0)).1 += 1;
    }
    let alive: Vec<usize> = (0..tags.len()).filter(|i| !gone.contains(i)).collect();
    for &i in &alive {
        for (d, size) in &blobs[i] {
            refs.entry(d).or_insert((*size, 0)).1 += 1;
        }
    }
    let mut usage: u64 = refs.values().map(|(s, _)| s).sum();
    let mut candidates: Vec<usize> = alive
        .into_iter()
        .filter(|&i| in_scope(policy, &tags[i]) && !protected(policy, &tags[i]))
        .collect();
    candidates.sort_by_key(|&i| {
        (
            tags[i].last_used(),
            tags[i].repo.clone(),
            tags[i].tag.clone(),
        )
    });
    let mut evicted = Vec::new();
    for i in candidates {
        if usage <= max {
            break;
        }
        for (d, _) in &blobs[i] {
            let e = refs.get_mut(d.as_str()).expect("counted above");
            e.1 -= 1;
            if e.1 == 0 {
                usage -= e.0;
            }
        }
        evicted.push(i);
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + DAY * 1000
    }

    fn tag(repo: &str, tag: &str, pushed_days_ago: u64, pulled_days_ago: Option<u64>) -> TagFacts {
        TagFacts {
            repo: repo.into(),
            tag: tag.into(),
            pushed: now() - DAY * pushed_days_ago as u32,
            pulled: pulled_days_ago.map(|d| now() - DAY * d as u32),
        }
    }

    fn names(tags: &[TagFacts], idx: &[usize]) -> Vec<String> {
        let mut v: Vec<String> = idx
            .iter()
            .map(|&i| format!("{}:{}", tags[i].repo, tags[i].tag))
            .collect();
        v.sort();
        v
    }

    fn globs(g: &[&str]) -> Vec<Pattern> {
        g.iter().map(|p| Pattern::parse(p).unwrap()).collect()
    }

    fn tags() -> Vec<TagFacts> {
        vec![
            tag("app", "v1", 30, None),
            tag("app", "v2", 20, Some(1)),
            tag("app", "v3", 10, None),
            tag("app", "v4", 3, None),
            tag("app", "latest", 40, None),
            tag("lib", "r1", 50, None),
        ]
    }

    #[test]
    fn without_rules_nothing_goes() {
        assert!(expired(&Retention::default(), &tags(), now()).is_empty());
    }

    #[test]
    fn max_age() {
        let p = Retention {
            max_age: Some(DAY * 15),
            ..Retention::default()
        };
        let t = tags();
        assert_eq!(
            names(&t, &expired(&p, &t, now())),
            ["app:latest", "app:v1", "app:v2", "lib:r1"]
        );
    }

    #[test]
    fn unpulled_for_keeps_recently_pulled() {
        let p = Retention {
            unpulled_for: Some(DAY * 7),
            ..Retention::default()
        };
        let t = tags();
        assert_eq!(
            names(&t, &expired(&p, &t, now())),
            ["app:latest", "app:v1", "app:v3", "app:v4", "lib:r1"]
        );
    }

    #[test]
    fn keep_last_per_repository_beats_max_age() {
        let p = Retention {
            keep_last: Some(2),
            max_age: Some(DAY * 5),
            ..Retention::default()
        };
        let t = tags();
        // app keeps v4 (newest, also young) and v3; lib keeps its only tag.
        assert_eq!(
            names(&t, &expired(&p, &t, now())),
            ["app:latest", "app:v1", "app:v2"]
        );
    }

    #[test]
    fn protect_beats_everything_and_scope_limits() {
        let p = Retention {
            keep_last: Some(1),
            protect: globs(&["latest", "release-*"]),
            repositories: globs(&["app"]),
            ..Retention::default()
        };
        let t = tags();
        assert_eq!(
            names(&t, &expired(&p, &t, now())),
            ["app:v1", "app:v2", "app:v3"]
        );
        let mut with_release = t.clone();
        with_release.push(tag("app", "release-1", 99, None));
        assert!(!names(&with_release, &expired(&p, &with_release, now()))
            .contains(&"app:release-1".to_string()));
    }

    #[test]
    fn quota_evicts_least_recently_used_shared_blobs_last() {
        let p = Retention {
            max_size: Some(250),
            protect: globs(&["latest"]),
            ..Retention::default()
        };
        let t = tags();
        let b = |d: &[(&str, u64)]| {
            d.iter()
                .map(|(d, s)| (d.to_string(), *s))
                .collect::<Vec<_>>()
        };
        let blobs = vec![
            b(&[("base", 100), ("v1", 50)]),
            b(&[("base", 100), ("v2", 50)]),
            b(&[("base", 100), ("v3", 50)]),
            b(&[("base", 100), ("v4", 50)]),
            b(&[("latest", 50)]),
            b(&[("r1", 50)]),
        ];
        // 400 in use: lib:r1 (oldest), then app:v1, then app:v3 (v2 was pulled a day ago).
        let evicted = evict_for_quota(&p, &t, &blobs, &HashMap::new(), &[]);
        assert_eq!(names(&t, &evicted), ["app:v1", "app:v3", "lib:r1"]);
        // Tags already deleted by rules count as gone.
        let evicted = evict_for_quota(&p, &t, &blobs, &HashMap::new(), &[5, 0]);
        assert_eq!(names(&t, &evicted), ["app:v3"]);
        assert!(
            evict_for_quota(&Retention::default(), &t, &blobs, &HashMap::new(), &[]).is_empty()
        );
    }
}
