//! `n`/`last` pagination of sorted name lists (tags, catalog).

/// One page of a sorted list.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// Set when more items follow: the `last` of the next request.
    pub next_last: Option<String>,
}

/// Items after `last`, at most `n` of them (all when `n` is `None`).
pub fn paginate(sorted: Vec<String>, n: Option<usize>, last: Option<&str>) -> Page {
    let start = match last {
        Some(last) => sorted.partition_point(|x| x.as_str() <= last),
        None => 0,
    };
    let mut items = sorted;
    items.drain(..start);
    let next_last = match n {
        Some(n) if items.len() > n => {
            items.truncate(n);
            items.last().cloned()
        }
        _ => None,
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
        assert_eq!(paginate(all.clone(), None, None).items, all);
        let p = paginate(all.clone(), Some(2), None);
        assert_eq!(
            (p.items, p.next_last),
            (list(&["a", "b"]), Some("b".into()))
        );
        let p = paginate(all.clone(), Some(2), Some("b"));
        assert_eq!((p.items, p.next_last), (list(&["c", "d"]), None));
        let p = paginate(all.clone(), None, Some("bb"));
        assert_eq!(p.items, list(&["c", "d"]));
        let p = paginate(all.clone(), Some(0), None);
        assert!(p.items.is_empty());
        assert_eq!(p.next_last, None);
        assert!(paginate(all, Some(5), Some("z")).items.is_empty());
    }
}
