//! registry:2's configuration as a tree: its `config.yml` read as YAML
//! (a later duplicate key replaces an earlier one, as Go's yaml.v2 does,
//! which registry:2 reads it with), then its `REGISTRY_*` environment
//! overrides applied by registry:2's rule. The converter takes what it
//! converts out of the tree ([`Map::take`]), so what is left is what it
//! did not convert.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One YAML value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Map),
    /// A value the converter reads, of a kind it cannot use (never made
    /// by parsing).
    Misfit {
        found: Box<Node>,
        expected: &'static str,
    },
}

impl Node {
    /// A header's values as one (registry:2 lists them; HTTP reads a
    /// header sent several times as its values joined by `, `); `None`
    /// for what is no scalar nor list of scalars.
    pub(super) fn header_value(self) -> Option<String> {
        match self {
            Node::Seq(items) if items.iter().all(Node::is_scalar) => Some(
                items
                    .into_iter()
                    .filter_map(|i| scalar_text(i).ok())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            other => scalar_text(other).ok(),
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(
            self,
            Node::Str(_) | Node::Int(_) | Node::Float(_) | Node::Bool(_)
        )
    }
}

/// A YAML mapping in file order, with string keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Map(pub(super) Vec<(String, Node)>);

impl Map {
    /// The value at `key`, removed from the map.
    pub(super) fn take(&mut self, key: &str) -> Option<Node> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    /// The mapping at `key`, to take from (created empty when absent; a
    /// scalar such as `storage: inmemory` becomes the mapping
    /// `{inmemory: }`, as registry:2 reads its one-key sections).
    pub(super) fn section(&mut self, key: &str) -> &mut Map {
        let i = match self.0.iter().position(|(k, _)| k == key) {
            Some(i) => i,
            None => {
                self.0.push((key.to_string(), Node::Map(Map::default())));
                self.0.len() - 1
            }
        };
        let node = &mut self.0[i].1;
        if !matches!(node, Node::Map(_)) {
            *node = match std::mem::replace(node, Node::Null) {
                Node::Str(s) => Node::Map(Map(vec![(s, Node::Null)])),
                _ => Node::Map(Map::default()),
            };
        }
        match node {
            Node::Map(m) => m,
            _ => unreachable!("made a mapping above"),
        }
    }

    /// The value at `key` as `read` takes it, removed; a value `read`
    /// refuses stays, marked as [`Node::Misfit`], for the report.
    fn take_as<T>(
        &mut self,
        key: &str,
        expected: &'static str,
        read: impl FnOnce(Node) -> Result<T, Node>,
    ) -> Option<T> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        let node = std::mem::replace(&mut self.0[i].1, Node::Null);
        match read(node) {
            Ok(v) => {
                self.0.remove(i);
                Some(v)
            }
            Err(found) => {
                self.0[i].1 = Node::Misfit {
                    found: Box::new(found),
                    expected,
                };
                None
            }
        }
    }

    /// The scalar at `key` as text, removed; `None` when absent, null or
    /// empty.
    pub(super) fn take_str(&mut self, key: &str) -> Option<String> {
        self.take_as(key, "a string", |n| match n {
            Node::Null => Ok(None),
            other => scalar_text(other).map(|s| Some(s).filter(|s| !s.is_empty())),
        })
        .flatten()
    }

    /// The boolean at `key`, removed (YAML 1.1's words as yaml.v2 reads them).
    pub(super) fn take_bool(&mut self, key: &str) -> Option<bool> {
        self.take_as(key, "true or false", |n| match n {
            Node::Bool(b) => Ok(Some(b)),
            Node::Null => Ok(None),
            Node::Str(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "y" => Ok(Some(true)),
                "false" | "no" | "off" | "n" => Ok(Some(false)),
                _ => Err(Node::Str(s)),
            },
            other => Err(other),
        })
        .flatten()
    }

    /// The list of strings at `key`, removed (a single string is a list of
    /// one).
    pub(super) fn take_strings(&mut self, key: &str) -> Vec<String> {
        self.take_as(key, "a list of strings", |n| match n {
            Node::Seq(items) if items.iter().all(Node::is_scalar) => Ok(items
                .into_iter()
                .filter_map(|i| scalar_text(i).ok())
                .collect()),
            Node::Str(s) => Ok(vec![s]),
            Node::Null => Ok(Vec::new()),
            other => Err(other),
        })
        .unwrap_or_default()
    }

    fn get_mut_upper(&mut self, upper: &str) -> Option<&mut Node> {
        self.0
            .iter_mut()
            .find(|(k, _)| k.to_ascii_uppercase() == upper)
            .map(|(_, v)| v)
    }

    /// Sets `key` (matched without case) to `value`, in place when present,
    /// else as a new lowercase key at the end.
    fn set_upper(&mut self, upper: &str, value: Node) -> &mut Node {
        let i = match self
            .0
            .iter()
            .position(|(k, _)| k.to_ascii_uppercase() == upper)
        {
            Some(i) => {
                self.0[i].1 = value;
                i
            }
            None => {
                self.0.push((upper.to_ascii_lowercase(), value));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }
}

/// A scalar as text (a number or boolean as written); the node itself
/// when it is not one.
fn scalar_text(n: Node) -> Result<String, Node> {
    match n {
        Node::Str(s) => Ok(s),
        Node::Int(n) => Ok(n.to_string()),
        Node::Float(n) => Ok(n.to_string()),
        Node::Bool(b) => Ok(b.to_string()),
        other => Err(other),
    }
}

/// What kind of value a node is, for messages (never the value itself,
/// which may be a secret).
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Node::Null => "nothing",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
            Node::Misfit { found, .. } => return found.fmt(f),
        })
    }
}

/// Reads `text` as a YAML document: its top-level mapping (empty for an
/// empty document). Errors name the line and column.
pub(super) fn parse(text: &str) -> Result<Map, String> {
    let node: Node = serde_norway::from_str(text).map_err(|e| match e.location() {
        Some(at) => format!("{}:{}: {e}", at.line(), at.column()),
        None => e.to_string(),
    })?;
    match node {
        Node::Map(m) => Ok(m),
        Node::Null => Ok(Map::default()),
        other => Err(format!("expected a mapping at the top, found {other}")),
    }
}

/// The environment variable that names the configuration file, not a
/// setting in it.
pub(super) const CONFIGURATION_PATH: &str = "REGISTRY_CONFIGURATION_PATH";

/// Applies registry:2's environment overrides to `root`: each
/// `REGISTRY_A_B_C=value` sets the key `a.b.c` (keys matched without case,
/// missing ones created in lowercase), the value read as YAML, in the
/// order of the variables' names (so `REGISTRY_AUTH=htpasswd` comes
/// before `REGISTRY_AUTH_HTPASSWD_PATH`). The names of the variables
/// applied, sorted.
pub(super) fn apply_env(
    root: &mut Map,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, String> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("REGISTRY_") && k != CONFIGURATION_PATH)
        .collect();
    vars.sort();
    for (name, value) in &vars {
        let path: Vec<&str> = name["REGISTRY_".len()..].split('_').collect();
        let value: Node = match value.trim() {
            "" => Node::Null,
            v => serde_norway::from_str(v).map_err(|e| format!("{name}: {e}"))?,
        };
        set_path(root, &path, value);
    }
    Ok(vars.into_iter().map(|(k, _)| k).collect())
}

fn set_path(map: &mut Map, path: &[&str], value: Node) {
    let (first, rest) = path.split_first().expect("a path has a key");
    if rest.is_empty() {
        map.set_upper(first, value);
        return;
    }
    let node = match map.get_mut_upper(first) {
        Some(node) => node,
        None => map.set_upper(first, Node::Map(Map::default())),
    };
    if !matches!(node, Node::Map(_)) {
        // `storage: inmemory` and the like name a one-key section.
        *node = match std::mem::replace(node, Node::Null) {
            Node::Str(s) => Node::Map(Map(vec![(s, Node::Null)])),
            _ => Node::Map(Map::default()),
        };
    }
    if let Node::Map(inner) = node {
        set_path(inner, rest, value);
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(i64::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Node, A::Error> {
        let mut map = Map::default();
        while let Some(key) = access.next_key::<Node>()? {
            let key = match key {
                Node::Null => "null".to_string(),
                other => scalar_text(other).unwrap_or_else(|o| o.to_string()),
            };
            let value: Node = access.next_value()?;
            match map.0.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => map.0.push((key, value)),
            }
        }
        Ok(Node::Map(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Node {
        Node::Str(v.to_string())
    }

    #[test]
    fn duplicate_keys_keep_the_last_in_place() {
        let mut m = parse("a: 1\nb:\n  x: y\na: [p, 2]\nc: ~\n").unwrap();
        assert_eq!(
            m.0.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(m.take_strings("a"), ["p", "2"]);
        assert_eq!(m.section("b").take_str("x").as_deref(), Some("y"));
        assert_eq!(m.take_str("c"), None);
        assert!(parse("").unwrap().0.is_empty());
        let err = parse("a: [\n").unwrap_err();
        assert!(err.starts_with("2:1: "), "{err}");
    }

    #[test]
    fn header_values_join_as_http_reads_them() {
        let mut m = parse("a: [nosniff]\nb: [x, 2]\nc: 1\nd: {e: f}\n").unwrap();
        let mut value = |k: &str| m.take(k).unwrap().header_value();
        assert_eq!(value("a").as_deref(), Some("nosniff"));
        assert_eq!(value("b").as_deref(), Some("x, 2"));
        assert_eq!(value("c").as_deref(), Some("1"));
        assert_eq!(value("d"), None);
    }

    #[test]
    fn environment_overrides_follow_registry2() {
        let mut m = parse(
            "storage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n\
             http:\n  Addr: :5000\n",
        )
        .unwrap();
        let applied = apply_env(
            &mut m,
            [
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:5001"),
                ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
                ("REGISTRY_AUTH", "htpasswd"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
                ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "/data"),
                ("REGISTRY_CONFIGURATION_PATH", "/etc/x.yml"),
                ("HOME", "/root"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        assert_eq!(
            applied,
            [
                "REGISTRY_AUTH",
                "REGISTRY_AUTH_HTPASSWD_PATH",
                "REGISTRY_HTTP_ADDR",
                "REGISTRY_STORAGE_DELETE_ENABLED",
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"
            ]
        );
        let storage = m.section("storage");
        assert_eq!(
            storage
                .section("filesystem")
                .take_str("rootdirectory")
                .as_deref(),
            Some("/data")
        );
        assert_eq!(storage.section("delete").take_bool("enabled"), Some(true));
        // The existing key keeps its spelling; its value is replaced.
        assert_eq!(
            m.section("http").0[0],
            ("Addr".to_string(), s("127.0.0.1:5001"))
        );
        // REGISTRY_AUTH=htpasswd names the section the next variable fills.
        let auth = m.section("auth");
        assert_eq!(
            auth.section("htpasswd").take_str("path").as_deref(),
            Some("/auth/htpasswd")
        );
        // A one-word section stays a section of that name.
        let mut m = Map::default();
        apply_env(
            &mut m,
            [("REGISTRY_STORAGE".to_string(), "inmemory".to_string())],
        )
        .unwrap();
        assert_eq!(m.section("storage").0[0].0, "inmemory");
    }
}
