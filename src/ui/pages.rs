//! Each page and form action of the UI: what it reads from the registry,
//! who may see or do it, and which template shows it.

use std::cmp::Reverse;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};

use super::views::{
    clock, maybe_when, short_digest, size, when, Column, DeletePage, HomePage, HomeRow, ImagePage,
    LoginPage, Pager, RepoPage, TagLine, UsagePage,
};
use super::{html, who, Asked, Page};
use crate::api::RequestId;
use crate::audit::ByUser;
use crate::auth::{Action, Refused};
use crate::notify;
use crate::oci::{Digest, Reference, RegistryError, RepoName, Tag};
use crate::registry::browse::TagRow;
use crate::registry::retention::{Retention, Untagged, Verdict};

/// Repositories on a page of the home page.
const REPOS_PER_PAGE: usize = 50;
/// Tags on a page of a repository.
const TAGS_PER_PAGE: usize = 100;

pub(super) async fn serve(a: &Asked<'_>, page: Page, post: bool) -> Response<Body> {
    let result = match (page, post) {
        (Page::Login, false) => Ok(login_form(a, None, StatusCode::OK)),
        (Page::Login, true) => Ok(login(a).await),
        (Page::Logout, true) => Ok(logout(a)),
        (Page::Home, false) => home(a).await,
        (Page::Repo(repo), false) => repository(a, &repo).await,
        (Page::Image(repo, digest), false) => image(a, &repo, &digest).await,
        (Page::Delete(repo), false) => delete_form(a, &repo).await,
        (Page::Delete(repo), true) => delete(a, &repo).await,
        (Page::Usage, false) => usage(a, None).await,
        (Page::Gc, true) => collect(a).await,
        _ => Ok(a.message(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not here",
            "This address takes another method.",
        )),
    };
    result.unwrap_or_else(|e| match e {
        RegistryError::NameUnknown(_)
        | RegistryError::ManifestUnknown(_)
        | RegistryError::BlobUnknown(_) => a.not_found(),
        RegistryError::Internal(cause) => {
            tracing::error!("{cause}");
            a.message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The registry could not read what this page shows; the server's log says why.",
            )
        }
        other => a.message(
            StatusCode::from_u16(other.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "Not done",
            &other.public_message(),
        ),
    })
}

fn login_form(a: &Asked<'_>, error: Option<String>, status: StatusCode) -> Response<Body> {
    let next = match a.form.get("next") {
        Some(n) => n.clone(),
        None => a.query_value("next").to_string(),
    };
    html(
        status,
        LoginPage {
            page: a.page(),
            error,
            next: who::safe_next(&next).to_string(),
            user: a.form_value("user").to_string(),
        },
    )
}

async fn login(a: &Asked<'_>) -> Response<Body> {
    let (user, password) = (a.form_value("user"), a.form_value("password"));
    match a.ui.auth.authenticate(a.peer, user, password).await {
        Ok(()) => {
            // A session already open in this browser ends with the new one.
            if let Some((id, _)) = &a.who.session {
                a.ui.auth.sessions().close(id);
            }
            let (id, _) = a.ui.auth.sessions().open(user);
            tracing::info!(user, "logged in to the web UI");
            let mut resp = who::see_other(who::safe_next(a.form_value("next")));
            resp.headers_mut().insert(
                header::SET_COOKIE,
                who::set_cookie(Some(&id), a.ui.tls, a.ui.sessions),
            );
            resp
        }
        Err(Refused::Invalid) => {
            tracing::warn!(user, peer = %a.peer, "failed web UI login");
            login_form(
                a,
                Some("Wrong user name or password.".into()),
                StatusCode::UNAUTHORIZED,
            )
        }
        Err(Refused::Throttled(wait)) => {
            let mut resp = login_form(
                a,
                Some(format!(
                    "Too many failed logins; try again in {} s.",
                    wait.as_secs().max(1)
                )),
                StatusCode::TOO_MANY_REQUESTS,
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
            resp
        }
    }
}

fn logout(a: &Asked<'_>) -> Response<Body> {
    if let Some((id, _)) = &a.who.session {
        a.ui.auth.sessions().close(id);
    }
    let mut resp = who::see_other("/-/login");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        who::set_cookie(None, a.ui.tls, a.ui.sessions),
    );
    resp
}

/// Page `page` (1-based, from `?page=`) of `len` items, `per` a page: the
/// range shown and the pager, whose links keep `keep` (other query
/// parameters, encoded).
fn paginate(
    a: &Asked<'_>,
    base: &str,
    keep: &str,
    len: usize,
    per: usize,
) -> (std::ops::Range<usize>, Pager) {
    let pages = len.div_ceil(per).max(1);
    let page = a.query_value("page").parse().unwrap_or(1).clamp(1, pages);
    let link = |p: usize| format!("{base}?{keep}page={p}");
    let range = (page - 1) * per..(page * per).min(len);
    let pager = Pager {
        page,
        pages,
        prev: (page > 1).then(|| link(page - 1)),
        next: (page < pages).then(|| link(page + 1)),
    };
    (range, pager)
}

/// `text` percent-encoded for a query parameter.
pub(super) fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn home(a: &Asked<'_>) -> Result<Response<Body>, RegistryError> {
    let filter = a.query_value("q").trim().to_string();
    let names = a.ui.registry.catalog().await?;
    let visible: Vec<&String> = names
        .iter()
        .filter(|n| filter.is_empty() || n.contains(filter.as_str()))
        .filter(|n| a.ui.access.permits(a.user(), n, Action::Pull))
        .collect();
    let keep = match filter.is_empty() {
        true => String::new(),
        false => format!("q={}&", encode(&filter)),
    };
    let (range, pager) = paginate(a, "/", &keep, visible.len(), REPOS_PER_PAGE);
    let shown: Vec<String> = visible[range].iter().map(|n| n.to_string()).collect();
    let rows =
        a.ui.registry
            .summaries(&shown)
            .await?
            .into_iter()
            .map(|s| HomeRow {
                name: s.name,
                tags: s.tags,
                size: size(s.size),
                last_push: maybe_when(s.last_push),
                last_pull: maybe_when(s.last_pull),
            })
            .collect();
    Ok(html(
        StatusCode::OK,
        HomePage {
            page: a.page(),
            filter,
            total: visible.len(),
            rows,
            pager,
        },
    ))
}

/// What the retention policy does, in a sentence.
fn policy_text(p: &Retention) -> String {
    let mut rules = Vec::new();
    if let Some(n) = p.keep_last {
        rules.push(format!("keeps the last {n} pushed tags of each repository"));
    }
    if let Some(d) = p.max_age {
        rules.push(format!(
            "keeps tags pushed within {}",
            humantime::format_duration(d)
        ));
    }
    if let Some(d) = p.unpulled_for {
        rules.push(format!(
            "keeps tags pulled within {}",
            humantime::format_duration(d)
        ));
    }
    if !p.protect.is_empty() {
        let pats: Vec<&str> = p.protect.iter().map(|x| x.text.as_str()).collect();
        rules.push(format!("always keeps tags matching {}", pats.join(", ")));
    }
    match p.has_tag_rules() {
        false => "Retention deletes no tags here.".to_string(),
        true => format!("Retention {}; it deletes the other tags.", rules.join(", ")),
    }
}

/// Why the next collection deletes a tag: the rules that could have kept
/// it and did not.
fn expiry_reason(p: &Retention, t: &TagRow) -> String {
    let mut why = Vec::new();
    if let Some(d) = p.max_age {
        why.push(format!(
            "pushed more than {} ago",
            humantime::format_duration(d)
        ));
    }
    if let Some(n) = p.keep_last {
        why.push(format!("not among the last {n} pushed"));
    }
    if let Some(d) = p.unpulled_for {
        why.push(match t.pulled {
            Some(_) => format!("not pulled within {}", humantime::format_duration(d)),
            None => "never pulled".to_string(),
        });
    }
    why.join(", ")
}

fn verdict_text(a: &Asked<'_>, t: &TagRow) -> String {
    match &t.verdict {
        Verdict::NoRules => "kept (no rule deletes tags)".into(),
        Verdict::OutOfScope => "kept (outside retention's repositories)".into(),
        Verdict::Protected(p) => format!("kept by protect ({p})"),
        Verdict::KeepLast(n) => format!("kept by keep_last (one of the last {n} pushed)"),
        Verdict::MaxAge(until) => format!("kept by max_age until {}", when(*until)),
        Verdict::UnpulledFor(until) => format!("kept by unpulled_for until {}", when(*until)),
        Verdict::Expired => {
            let at = match a.ui.next_gc {
                Some(t) => format!("by the next GC at {} UTC", clock(t)),
                None => "by the next GC (berth gc; none is scheduled)".to_string(),
            };
            format!(
                "deleted {at} because it was {}",
                expiry_reason(a.ui.retention, t)
            )
        }
    }
}

async fn repository(a: &Asked<'_>, repo: &RepoName) -> Result<Response<Body>, RegistryError> {
    let allowed = a.ui.access.allowed(a.user(), repo.as_str());
    if allowed < Action::Pull {
        return Ok(a.not_found());
    }
    let now = SystemTime::now();
    let mut rows = a.ui.registry.tag_rows(repo, a.ui.retention, now).await?;
    if rows.is_empty() {
        return Ok(a.not_found());
    }
    let sort = match a.query_value("sort") {
        s @ ("pushed" | "pulled" | "size" | "verdict") => s,
        _ => "tag",
    };
    let descending = a.query_value("order") == "desc";
    match sort {
        "pushed" => rows.sort_by_key(|t| t.pushed),
        "pulled" => rows.sort_by_key(|t| t.pulled),
        "size" => rows.sort_by_key(|t| t.manifest.size),
        "verdict" => rows.sort_by_key(|t| Reverse(t.verdict.deletes())),
        _ => {}
    }
    if descending {
        rows.reverse();
    }
    let base = format!("/r/{repo}");
    let columns = [
        ("Tag", "tag", false),
        ("Digest", "", false),
        ("Size", "size", true),
        ("Platforms", "", false),
        ("Pushed", "pushed", false),
        ("Last pulled", "pulled", false),
        ("Retention", "verdict", false),
    ]
    .into_iter()
    .map(|(label, key, numeric)| {
        let current = !key.is_empty() && key == sort;
        let order = if current && !descending {
            "desc"
        } else {
            "asc"
        };
        Column {
            label,
            numeric,
            href: (!key.is_empty()).then(|| format!("{base}?sort={key}&order={order}")),
            sorted: current.then_some(if descending {
                "descending"
            } else {
                "ascending"
            }),
        }
    })
    .collect();
    let keep = format!(
        "sort={sort}&order={}&",
        if descending { "desc" } else { "asc" }
    );
    let total = rows.len();
    let (range, pager) = paginate(a, &base, &keep, total, TAGS_PER_PAGE);
    let lines = rows[range]
        .iter()
        .map(|t| TagLine {
            tag: t.tag.to_string(),
            digest: t.digest.to_string(),
            short_digest: short_digest(&t.digest.to_string()),
            size: size(t.manifest.size),
            platforms: t.manifest.platforms.join(", "),
            pushed: when(t.pushed),
            pulled: maybe_when(t.pulled),
            verdict: verdict_text(a, t),
            expires: t.verdict.deletes(),
        })
        .collect();
    let mut page = a.page();
    if let Some(done) = a.query.get("deleted") {
        if Tag::parse(done).is_ok() || Digest::parse(done).is_ok() {
            page.notices.push(format!("Deleted {done}."));
        }
    }
    Ok(html(
        StatusCode::OK,
        RepoPage {
            page,
            repo: repo.to_string(),
            first_tag: rows.first().map(|t| t.tag.to_string()).unwrap_or_default(),
            total,
            policy: policy_text(a.ui.retention),
            columns,
            rows: lines,
            may_delete: allowed >= Action::Delete,
            pager,
        },
    ))
}

async fn image(
    a: &Asked<'_>,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Response<Body>, RegistryError> {
    let allowed = a.ui.access.allowed(a.user(), repo.as_str());
    if allowed < Action::Pull {
        return Ok(a.not_found());
    }
    let view = a.ui.registry.image(repo, digest).await?;
    let children = view
        .children
        .iter()
        .map(|(d, platform, media, bytes)| {
            (
                platform.clone(),
                d.clone(),
                short_digest(d),
                media.clone(),
                size(*bytes),
            )
        })
        .collect();
    let layers = view
        .layers
        .iter()
        .map(|(d, media, bytes)| (d.clone(), short_digest(d), media.clone(), size(*bytes)))
        .collect();
    Ok(html(
        StatusCode::OK,
        ImagePage {
            page: a.page(),
            repo: repo.to_string(),
            size: size(view.facts.size),
            view,
            children,
            layers,
            may_delete: allowed >= Action::Delete,
        },
    ))
}

/// The tag or manifest a delete form names: from the form of a post,
/// else from the query.
fn delete_target(a: &Asked<'_>, post: bool) -> Option<(Reference, &'static str, String)> {
    let value = |name: &str| match post {
        true => a.form_value(name).to_string(),
        false => a.query_value(name).to_string(),
    };
    if let Ok(tag) = Tag::parse(&value("tag")) {
        return Some((Reference::Tag(tag), "tag", value("tag")));
    }
    let digest = Digest::parse(&value("digest")).ok()?;
    Some((Reference::Digest(digest), "digest", value("digest")))
}

async fn delete_form(a: &Asked<'_>, repo: &RepoName) -> Result<Response<Body>, RegistryError> {
    let allowed = a.ui.access.allowed(a.user(), repo.as_str());
    if allowed < Action::Pull {
        return Ok(a.not_found());
    }
    if allowed < Action::Delete {
        return Ok(a.forbidden("You may not delete in this repository."));
    }
    let Some((reference, field, value)) = delete_target(a, false) else {
        return Ok(a.not_found());
    };
    let preview = a.ui.registry.delete_preview(repo, &reference).await?;
    let what = match field {
        "tag" => format!("the tag {repo}:{value}"),
        _ => format!("the manifest {}", short_digest(&value)),
    };
    Ok(html(
        StatusCode::OK,
        DeletePage {
            page: a.page(),
            repo: repo.to_string(),
            what,
            field,
            value,
            preview,
            untagged_kept: a.ui.retention.untagged == Untagged::Keep,
        },
    ))
}

async fn delete(a: &Asked<'_>, repo: &RepoName) -> Result<Response<Body>, RegistryError> {
    if !a.ui.access.permits(a.user(), repo.as_str(), Action::Delete) {
        return Ok(a.forbidden("You may not delete in this repository."));
    }
    let Some((reference, _, value)) = delete_target(a, true) else {
        return Ok(a.not_found());
    };
    if a.ui.read_only {
        return Err(RegistryError::read_only());
    }
    let tags = a.ui.registry.delete_manifest(repo, &reference).await?;
    let by = ByUser {
        instance: a.ui.name,
        user: a.user(),
        through: "the web UI",
    };
    by.manifest(repo, &reference, &tags);
    if a.ui.notify.active() {
        let target = notify::Target::of_reference(repo, &reference);
        let request = notify::Request::of(a.parts, RequestId::of(a.parts));
        let user = a.user().unwrap_or("");
        let event = notify::Event::new(notify::Action::Delete, target, request, user);
        a.ui.notify.emit(event);
    }
    let left = a.ui.registry.tags(repo).await.map(|t| !t.is_empty());
    Ok(match left {
        Ok(true) => who::see_other(&format!("/r/{repo}?deleted={}", encode(&value))),
        _ => who::see_other("/"),
    })
}

async fn usage(
    a: &Asked<'_>,
    report: Option<(String, String)>,
) -> Result<Response<Body>, RegistryError> {
    if a.user().is_none() {
        return Ok(a.forbidden("Log in to see the usage of this registry."));
    }
    let history = a.ui.registry.gc_history().await?;
    let usage = history.first().map(|h| {
        let u = &h.usage;
        (
            size(u.bytes),
            u.blobs,
            u.repositories,
            u.tags,
            when(h.finished_at()),
        )
    });
    let schedule = match (a.ui.retention.interval, a.ui.next_gc) {
        (Some(every), Some(next)) => format!(
            "Retention and garbage collection run every {}; the next run is at {}.",
            humantime::format_duration(every),
            when(next)
        ),
        _ => "No collection is scheduled ([retention] interval); `berth gc` or the button below runs one.".into(),
    };
    let mut page = a.page();
    if a.query_value("gc") == "started" {
        page.notices
            .push("A garbage collection started; its report appears below when it is done.".into());
    }
    let (report_title, report) = match report {
        Some((title, text)) => (title, Some(text)),
        None => (String::new(), None),
    };
    Ok(html(
        StatusCode::OK,
        UsagePage {
            page,
            usage,
            schedule,
            report_title,
            report,
            may_collect: a.ui.access.everywhere(a.user(), Action::Delete),
            history: history
                .iter()
                .map(|h| {
                    (
                        when(h.finished_at()),
                        h.tags,
                        h.manifests,
                        h.blobs,
                        size(h.bytes),
                        h.uploads,
                    )
                })
                .collect(),
        },
    ))
}

async fn collect(a: &Asked<'_>) -> Result<Response<Body>, RegistryError> {
    if !a.ui.access.everywhere(a.user(), Action::Delete) {
        return Ok(
            a.forbidden("Only users who may delete in every repository may collect garbage.")
        );
    }
    let policy = a.ui.retention.clone();
    if a.form_value("run") == "dry" {
        let report =
            a.ui.registry
                .collect_garbage(&policy, SystemTime::now(), true)
                .await?;
        let text = report.render(a.ui.name);
        return usage(a, Some(("What a run would delete now".into(), text))).await;
    }
    if a.ui.read_only {
        return Err(RegistryError::read_only());
    }
    let registry = a.ui.registry.clone();
    let notifier = a.ui.notify.clone();
    let name = a.ui.name.to_string();
    let user = a.user().unwrap_or_default().to_string();
    tokio::spawn(async move {
        match registry
            .collect_garbage(&policy, SystemTime::now(), false)
            .await
        {
            Ok(report) => {
                notifier.collection(&report);
                let run = format!("started by {user} in the web UI");
                crate::audit::collection(&name, &report, &run);
                tracing::info!(instance = %name, user, "retention (web UI): {}", report.render(&name).trim_end())
            }
            Err(e) => tracing::error!(instance = %name, user, "retention (web UI) failed: {e}"),
        }
    });
    Ok(who::see_other("/-/usage?gc=started"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn policies_in_words() {
        assert_eq!(
            policy_text(&Retention::default()),
            "Retention deletes no tags here."
        );
        let p = Retention {
            keep_last: Some(3),
            max_age: Some(Duration::from_secs(86_400)),
            ..Retention::default()
        };
        assert_eq!(
            policy_text(&p),
            "Retention keeps the last 3 pushed tags of each repository, keeps tags pushed within 1day; it deletes the other tags."
        );
    }
}
