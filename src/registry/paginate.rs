//! `n`/`last` pagination of sorted name lists (tags, catalog).

/// One page of a sorted list.
#[derive(Debug, PartialEq, Eq)]
pub struct Page<'a> {
    pub items: Vec<&'a str>,
    /// Set when more items follow: the `last` of the next request.
    pub next_last: Option<&'a str>,
}

/// Items after `last` that `keep` accepts, at most `n` of them (all when `n`
/// is `None`): the same page as filtering the whole list first, but only
/// the items up to the end of the page are looked at.
pub fn paginate<'a>(
    sorted: &'a [String],
    n: Option<usize>,
    last: Option<&str>,
    keep: impl Fn(&str) -> bool,
) -> Page<'a> {
    let start = match last {
        Some(last) => sorted.partition_point(|x| x.as_str() <= last),
        None => 0,
    };
    let mut rest = sorted[start..]
        .iter()
        .map(String::as_str)
        .filter(|x| keep(x));
    let items: Vec<&str> = match n {
        Some(n) => rest.by_ref().take(n).collect(),
        None => rest.by_ref().collect(),
    };
    let next_last = match rest.next() {
        Some(_) => items.last().copied(),
        None => None,
    };
    Page { items, next_last }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pages() {
        let all = list(&["a", "b", "c", "d"]);
        let every = |_: &str| true;
        assert_eq!(paginate(&all, None, None, every).items, all);
        let p = paginate(&all, Some(2), None, every);
        assert_eq!((p.items, p.next_last), (vec!["a", "b"], Some("b")));
        let p = paginate(&all, Some(2), Some("b"), every);
        assert_eq!((p.items, p.next_last), (vec!["c", "d"], None));
        let p = paginate(&all, None, Some("bb"), every);
        assert_eq!(p.items, ["c", "d"]);
        let p = paginate(&all, Some(0), None, every);
        assert!(p.items.is_empty());
        assert_eq!(p.next_last, None);
        assert!(paginate(&all, Some(5), Some("z"), every).items.is_empty());
    }

    #[test]
    fn filtered_pages_match_filtering_first() {
        let all = list(&["a", "b", "c", "d", "e", "f"]);
        let keep = |x: &str| x != "b" && x != "e" && x != "f";
        let kept: Vec<String> = all.iter().filter(|x| keep(x)).cloned().collect();
        for n in [None, Some(0), Some(1), Some(2), Some(3), Some(4)] {
            for last in [None, Some("a"), Some("b"), Some("c"), Some("d"), Some("f")] {
                assert_eq!(
                    paginate(&all, n, last, keep),
                    paginate(&kept, n, last, |_| true),
                    "n={n:?} last={last:?}"
                );
            }
        }
        // Nothing the filter accepts follows: no next page.
        let p = paginate(&all, Some(3), None, keep);
        assert_eq!((p.items, p.next_last), (vec!["a", "c", "d"], None));
    }
}
