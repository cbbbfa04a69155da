//! The pages as askama templates (`src/ui/templates/`, checked and compiled
//! into the binary; every value is HTML-escaped unless a template says
//! otherwise, and none does), and how sizes, times and digests are written
//! on them.

use std::time::SystemTime;

use askama::Template;

use crate::registry::browse::{DeletePreview, ImageView};

/// What every page shows around its content.
pub struct PageCtx {
    pub instance: String,
    pub user: Option<String>,
    /// Whether the user logged in through the form (and may log out).
    pub session: bool,
    /// What the page's forms carry.
    pub csrf: String,
    /// The registry's name as the client reached it (for `docker pull`).
    pub host: String,
    pub notices: Vec<String>,
}

/// Links to the neighbouring pages of a list.
pub struct Pager {
    pub page: usize,
    pub pages: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub page: PageCtx,
    pub error: Option<String>,
    pub next: String,
    pub user: String,
}

pub struct HomeRow {
    pub name: String,
    pub tags: usize,
    pub size: String,
    pub last_push: String,
    pub last_pull: String,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub page: PageCtx,
    pub filter: String,
    pub total: usize,
    pub rows: Vec<HomeRow>,
    pub pager: Pager,
}

/// A column of the tags table, a link that sorts by it.
pub struct Column {
    pub label: &'static str,
    pub numeric: bool,
    pub href: Option<String>,
    /// `ascending` or `descending` when the table is sorted by it.
    pub sorted: Option<&'static str>,
}

pub struct TagLine {
    pub tag: String,
    pub digest: String,
    pub short_digest: String,
    pub size: String,
    pub platforms: String,
    pub pushed: String,
    pub pulled: String,
    pub verdict: String,
    pub expires: bool,
}

#[derive(Template)]
#[template(path = "repo.html")]
pub struct RepoPage {
    pub page: PageCtx,
    pub repo: String,
    pub first_tag: String,
    pub total: usize,
    /// What the retention policy is, in a sentence.
    pub policy: String,
    pub columns: Vec<Column>,
    pub rows: Vec<TagLine>,
    pub may_delete: bool,
    pub pager: Pager,
}

#[derive(Template)]
#[template(path = "image.html")]
pub struct ImagePage {
    pub page: PageCtx,
    pub repo: String,
    pub view: ImageView,
    pub size: String,
    /// Platform, digest, short digest, media type, size.
    pub children: Vec<(String, String, String, String, String)>,
    /// Digest, short digest, media type, size.
    pub layers: Vec<(String, String, String, String)>,
    pub may_delete: bool,
}

#[derive(Template)]
#[template(path = "delete.html")]
pub struct DeletePage {
    pub page: PageCtx,
    pub repo: String,
    /// "the tag …" or "the manifest …".
    pub what: String,
    /// The form field (`tag` or `digest`) and its value.
    pub field: &'static str,
    pub value: String,
    pub preview: DeletePreview,
    pub untagged_kept: bool,
}

#[derive(Template)]
#[template(path = "usage.html")]
pub struct UsagePage {
    pub page: PageCtx,
    /// Bytes, blobs, repositories, tags, as of.
    pub usage: Option<(String, usize, usize, usize, String)>,
    /// When collections run.
    pub schedule: String,
    pub report_title: String,
    pub report: Option<String>,
    pub may_collect: bool,
    /// Finished, tags, manifests, blobs, bytes freed, uploads.
    pub history: Vec<(String, usize, usize, usize, String, usize)>,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub page: PageCtx,
    pub title: String,
    pub text: String,
}

/// `1.5 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{v:.1} {}", UNITS[unit]),
    }
}

/// `2026-12-01 23:40 UTC`.
pub fn when(t: SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} {} UTC", &text[..10], &text[11..16])
}

/// `HH:MM` (UTC) of `t`.
pub fn clock(t: SystemTime) -> String {
    when(t)[11..16].to_string()
}

/// A time or `never`.
pub fn maybe_when(t: Option<SystemTime>) -> String {
    t.map_or_else(|| "never".to_string(), when)
}

/// `sha256:0123456789ab`: enough to tell digests apart on a page.
pub fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => digest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sizes_times_and_digests_as_shown() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_632_400);
        assert_eq!(when(t), "2025-12-01 23:40 UTC");
        assert_eq!(clock(t), "23:40");
        assert_eq!(maybe_when(None), "never");
        assert_eq!(
            short_digest("sha256:0123456789abcdef"),
            "sha256:0123456789ab"
        );
    }
}
