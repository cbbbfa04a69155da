//! Whether two storage roots overlap on disk, not only as written: a root
//! that is a symbolic link to another instance's root, lies under a linked
//! parent, or reaches into another root through a link, gives two instances
//! one store just as a root written twice does. Roots need not exist yet.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Links followed at most while resolving one path (as Linux's ELOOP).
const MAX_LINKS: usize = 40;

/// A storage root as configured and as it is on disk.
pub(super) struct Root {
    /// Absolute, with `.` and `..` folded away (what the server opens).
    written: PathBuf,
    /// `written` with every symbolic link resolved (see [`real_path`]).
    real: PathBuf,
    /// Device and inode of the root, when it exists as a directory.
    id: Option<(u64, u64)>,
    /// Device and inode of the root's nearest existing directory and of
    /// each directory above it: a root lies within another exactly when
    /// the other's `id` is among them (bind mounts included).
    within: Vec<(u64, u64)>,
}

impl Root {
    pub(super) fn new(written: &Path) -> Root {
        let real = real_path(written);
        let dir_id = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .filter(|m| m.is_dir())
                .map(|m| (m.dev(), m.ino()))
        };
        Root {
            written: written.to_path_buf(),
            id: dir_id(&real),
            within: real.ancestors().filter_map(dir_id).collect(),
            real,
        }
    }

    pub(super) fn written(&self) -> &Path {
        &self.written
    }

    /// Whether one root lies within the other (or both are one): `None`
    /// when they are apart, else how it shows beyond the paths as written
    /// (empty when those already overlap).
    pub(super) fn overlap(&self, other: &Root) -> Option<String> {
        let nested = |a: &Path, b: &Path| a.starts_with(b) || b.starts_with(a);
        if nested(&self.written, &other.written) {
            return Some(String::new());
        }
        if nested(&self.real, &other.real) {
            let linked: Vec<String> = [self, other]
                .iter()
                .filter(|r| r.real != r.written)
                .map(|r| format!("{} leads to {}", r.written.display(), r.real.display()))
                .collect();
            return Some(format!(" (through symbolic links: {})", linked.join(", ")));
        }
        let inside = |a: &Root, b: &Root| b.id.is_some_and(|id| a.within.contains(&id));
        if inside(self, other) || inside(other, self) {
            return Some(" (on disk one directory lies within the other: same device and inode, e.g. a bind mount)".to_string());
        }
        None
    }
}

/// Where an absolute `path` leads: every component that exists resolved
/// through symbolic links (dangling ones too, whose target may just not
/// exist yet), the rest appended as written.
fn real_path(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    // Components still to walk, the next one last.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, path);
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            out.pop();
            continue;
        }
        let next = out.join(&c);
        let is_link = std::fs::symlink_metadata(&next).is_ok_and(|m| m.file_type().is_symlink());
        let target = match is_link && links < MAX_LINKS {
            true => std::fs::read_link(&next).ok(),
            false => None,
        };
        match target {
            Some(target) => {
                links += 1;
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                push_components(&mut todo, &target);
            }
            None => out = next,
        }
    }
    out
}

/// Puts the components of `path` on `todo` so that the first is popped
/// next; `.` is dropped, `..` kept (it applies after links are resolved).
fn push_components(todo: &mut Vec<OsString>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(n) => todo.push(n.to_os_string()),
            Component::ParentDir => todo.push("..".into()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn real_paths() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("data/a")).unwrap();
        symlink(base.join("data/a"), base.join("data/abs")).unwrap();
        symlink("a", base.join("data/rel")).unwrap();
        symlink("sub/../data", base.join("up")).unwrap();
        std::fs::create_dir_all(base.join("sub")).unwrap();
        symlink("missing/x", base.join("data/dangling")).unwrap();
        symlink("loop", base.join("loop")).unwrap();
        for (path, real) in [
            ("data/a", "data/a"),
            ("data/abs", "data/a"),
            ("data/rel/sub/new", "data/a/sub/new"),
            ("up/a", "data/a"),
            ("up/rel", "data/a"),
            ("data/dangling/y", "data/missing/x/y"),
            ("not/yet", "not/yet"),
        ] {
            assert_eq!(real_path(&base.join(path)), base.join(real), "{path}");
        }
        // A link loop ends; what it yields does not matter.
        real_path(&base.join("loop/x"));
    }

    #[test]
    fn overlaps() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path();
        std::fs::create_dir_all(base.join("data/a")).unwrap();
        std::fs::create_dir_all(base.join("elsewhere")).unwrap();
        symlink(base.join("data/a"), base.join("data/b")).unwrap();
        symlink(base.join("data/later"), base.join("data/dangling")).unwrap();
        symlink(base.join("data"), base.join("parent")).unwrap();
        symlink(base.join("elsewhere"), base.join("data/a/into")).unwrap();
        let root = |p: &str| Root::new(&base.join(p));
        let apart = [
            ("data/a", "data/c"),
            ("data/a", "elsewhere/x"),
            ("data/ab", "data/a"),
        ];
        for (x, y) in apart {
            assert_eq!(root(x).overlap(&root(y)), None, "{x} {y}");
        }
        let overlapping = [
            ("data/a", "data/a/sub"),
            ("data/a", "data/b"),
            ("data/b/sub", "data/a"),
            ("data/later", "data/dangling"),
            ("parent/a", "data/a"),
            ("parent/c", "data/c"),
            ("data/a/into/x", "elsewhere"),
        ];
        for (x, y) in overlapping {
            assert!(root(x).overlap(&root(y)).is_some(), "{x} {y}");
            assert!(root(y).overlap(&root(x)).is_some(), "{y} {x}");
        }
        assert_eq!(
            root("data/a").overlap(&root("data/a/x")).as_deref(),
            Some("")
        );
        let via_link = root("data/b").overlap(&root("data/a")).unwrap();
        assert!(via_link.contains("symbolic links"), "{via_link}");
    }

    #[test]
    fn same_inode_overlaps_whatever_the_paths() {
        // As a bind mount shows: other paths, one directory.
        let at = |p: &str, id: Option<(u64, u64)>, within: &[(u64, u64)]| Root {
            written: PathBuf::from(p),
            real: PathBuf::from(p),
            id,
            within: within.to_vec(),
        };
        let outer = at("/srv/a", Some((1, 10)), &[(1, 10), (1, 2)]);
        let inner = at("/mnt/b/sub", None, &[(1, 10), (1, 3), (1, 2)]);
        let other = at("/mnt/c", Some((1, 11)), &[(1, 11), (1, 3), (1, 2)]);
        assert!(outer.overlap(&inner).unwrap().contains("inode"));
        assert!(inner.overlap(&outer).is_some());
        assert_eq!(outer.overlap(&other), None);
    }
}
