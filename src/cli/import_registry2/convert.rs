//! registry:2's configuration (the tree of [`super::yaml`]) turned into a
//! berth instance file, commented like the shipped ones, with the
//! credentials files it names and the warnings about what does not carry
//! over as it was. Refuses (an `Err` that says what to do) what would
//! make an instance that cannot start or that is less safe than the
//! registry:2 it replaces: TLS whose files or names are not here, a
//! storage berth cannot read.
//!
//! Reads the files the configuration names (whether they exist); writes
//! nothing.

use std::path::{Path, PathBuf};

use super::yaml::{Map, Node};

/// What the conversion needs besides the configuration.
pub(super) struct Input<'a> {
    /// The instance's name.
    pub name: &'a str,
    /// `--htpasswd`: the users' file, instead of the configuration's.
    pub htpasswd: Option<&'a Path>,
    /// Whether berth.toml has `[listen] https`, which ACME validates on.
    pub shared_https: bool,
    /// Where the configuration came from, for the file's first comment.
    pub source: &'a str,
}

/// A file the instance file names, to be created with it (mode 0600).
#[derive(Debug, PartialEq)]
pub(super) struct Secret {
    /// Relative to the config directory.
    pub path: String,
    pub text: String,
    /// What it holds, for the report.
    pub what: &'static str,
}

/// What the conversion made.
#[derive(Debug)]
pub(super) struct Converted {
    /// `instances/NAME.toml`.
    pub instance: String,
    pub secrets: Vec<Secret>,
    /// The htpasswd file the instance names, relative to the config
    /// directory, when it is berth's default `credentials/NAME.htpasswd`
    /// (created empty when missing: nobody logs in until a user is added).
    pub default_htpasswd: Option<String>,
    /// What carries over differently, and what not at all.
    pub warnings: Vec<String>,
}

/// The text of a TOML string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The tables in the order of the shipped examples; `# NAME` is a
/// commented-out table or a list of `[[NAME]]` written whole.
const ORDER: [&str; 12] = [
    "storage",
    "auth",
    "access",
    "tls",
    "# tls",
    "retention",
    "maintenance",
    "http",
    "validation",
    "mirror",
    "[mirror.upstream]",
    "# notify",
];

/// The instance file being written: one block of comments and keys per
/// table, in the order of the shipped examples.
#[derive(Default)]
struct Out {
    top: Vec<String>,
    tables: Vec<(String, Vec<String>)>,
}

impl Out {
    fn table(&mut self, name: &str) -> &mut Vec<String> {
        if let Some(i) = self.tables.iter().position(|(n, _)| n == name) {
            return &mut self.tables[i].1;
        }
        self.tables.push((name.to_string(), Vec::new()));
        &mut self.tables.last_mut().expect("pushed").1
    }

    fn render(mut self, header: &str, footer: &[String]) -> String {
        let mut text = String::from(header);
        for line in &self.top {
            text.push_str(line);
            text.push('\n');
        }
        self.tables
            .sort_by_key(|(name, _)| ORDER.iter().position(|o| o == name));
        for (name, lines) in self.tables.into_iter().filter(|(_, l)| !l.is_empty()) {
            text.push('\n');
            if !name.starts_with('#') {
                text.push_str(&format!("[{name}]\n"));
            }
            for line in lines {
                text.push_str(&line);
                text.push('\n');
            }
        }
        if !footer.is_empty() {
            text.push_str(
                "\n# Not converted (berth does without these, or does them elsewhere):\n",
            );
            for line in footer {
                text.push_str(&comment_wrapped(line));
            }
        }
        text
    }
}

/// `# - line`, wrapped at about 76 columns.
fn comment_wrapped(line: &str) -> String {
    let mut out = String::new();
    let mut current = String::from("# -");
    for word in line.split(' ') {
        if current.len() + word.len() > 76 && current.len() > 4 {
            out.push_str(&current);
            out.push('\n');
            current = String::from("#  ");
        }
        current.push(' ');
        current.push_str(word);
    }
    out.push_str(&current);
    out.push('\n');
    out
}

/// Converts registry:2's configuration `root` (what is left of it after
/// the conversion is what the footer and the warnings list).
pub(super) fn convert(mut root: Map, input: &Input) -> Result<Converted, String> {
    let name = input.name;
    let mut out = Out::default();
    let mut warnings = Vec::new();
    let mut secrets = Vec::new();
    root.take("version");

    let http = root.section("http");
    let addr = http.take_str("addr");
    let host = http.take_str("host");
    let headers = http.take("headers");
    let tls = tls_settings(http.section("tls"));
    let mut hostnames: Vec<String> = Vec::new();
    if let Some(h) = &host {
        match host_of(h) {
            Some(name) => hostnames.push(name),
            None => warnings.push(format!("http.host {h:?}: not a URL with a host; left out")),
        }
    }
    for h in tls.letsencrypt_hosts.iter().map(|h| h.to_ascii_lowercase()) {
        if !hostnames.contains(&h) {
            hostnames.push(h);
        }
    }
    let listen = listen_address(addr.as_deref(), &mut warnings)?;
    out.top.push(
        "# Names this registry answers to on berth's shared listeners ([listen]\n\
         # http / https in berth.toml route by Host and SNI); from http.host and\n\
         # http.tls.letsencrypt.hosts."
            .into(),
    );
    out.top.push(format!("hostnames = {}", list(&hostnames)));
    out.top.push(String::new());
    out.top.push(
        "# Dedicated listeners that serve only this instance, whatever the Host;\n\
         # from http.addr."
            .into(),
    );
    out.top.push(format!("listen = {}", list(&[listen])));

    storage(&mut root, input, &mut out, &mut secrets, &mut warnings)?;
    let default_htpasswd = auth(&mut root, input, &mut out, &mut warnings)?;
    tls_table(&tls, input, &hostnames, &mut out, &mut warnings)?;
    http_headers(headers, &mut out, &mut warnings);
    validation(&mut root, &mut out);
    mirror(&mut root, name, &mut out, &mut secrets, &mut warnings);
    notifications(&mut root, name, &mut out, &mut secrets, &mut warnings);

    let left = super::unsupported::report(&root);
    let header = format!(
        "# The `{name}` registry, converted from registry:2's configuration\n\
         # ({}) by `berth import-registry2`.\n\
         # The instance name is the file name: instances/{name}.toml -> \"{name}\".\n\n",
        input.source
    );
    warnings.extend(left.iter().cloned());
    Ok(Converted {
        instance: out.render(&header, &left),
        secrets,
        default_htpasswd,
        warnings,
    })
}

/// The host of `http.host` (`https://registry.example.com:5000`), lowercase.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// `http.addr` as berth's `IP:PORT` (Go's `:5000` listens everywhere,
/// `localhost` is the loopback address).
fn listen_address(addr: Option<&str>, warnings: &mut Vec<String>) -> Result<String, String> {
    let Some(addr) = addr else {
        warnings.push(
            "http.addr is not set: listening on 0.0.0.0:5000, registry:2's usual port".into(),
        );
        return Ok("0.0.0.0:5000".into());
    };
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("http.addr {addr:?}: expected HOST:PORT such as :5000"))?;
    let ip = match host.trim_start_matches('[').trim_end_matches(']') {
        "" => "0.0.0.0".to_string(),
        "localhost" => "127.0.0.1".to_string(),
        h if h.parse::<std::net::Ipv4Addr>().is_ok() => h.to_string(),
        h if h.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{h}]"),
        h => {
            return Err(format!(
                "http.addr {addr:?}: berth listens on IP addresses; name the address {h} \
                 resolves to (REGISTRY_HTTP_ADDR=IP:{port} berth import-registry2 ...)"
            ))
        }
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("http.addr {addr:?}: {port:?} is not a port"));
    }
    Ok(format!("{ip}:{port}"))
}

/// `http.tls` as registry:2 reads it.
struct TlsSettings {
    certificate: Option<String>,
    key: Option<String>,
    /// `letsencrypt.cachefile` set: registry:2 got its certificate from
    /// Let's Encrypt.
    letsencrypt: bool,
    letsencrypt_email: Option<String>,
    letsencrypt_hosts: Vec<String>,
}

fn tls_settings(tls: &mut Map) -> TlsSettings {
    let le = tls.section("letsencrypt");
    let letsencrypt = le.take_str("cachefile").is_some();
    TlsSettings {
        letsencrypt,
        letsencrypt_email: le.take_str("email"),
        letsencrypt_hosts: le.take_strings("hosts"),
        certificate: tls.take_str("certificate"),
        key: tls.take_str("key"),
    }
}

/// A path of the configuration as written into the instance: absolute (a
/// relative one is taken from the current directory).
fn absolute(path: &str) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path))
}

fn tls_table(
    tls: &TlsSettings,
    input: &Input,
    hostnames: &[String],
    out: &mut Out,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    if !tls.letsencrypt && tls.certificate.is_none() {
        let table = out.table("# tls");
        table.push(
            "# registry:2 spoke plain HTTP here (a proxy in front may have done TLS).\n\
             # berth can do TLS itself: [tls] mode = \"acme\" (Let's Encrypt, with\n\
             # [listen] https in berth.toml), \"files\" or \"self-signed\".\n\
             # [tls]\n\
             # mode = \"acme\"\n\
             # acme_email = \"ops@example.com\""
                .into(),
        );
        return Ok(());
    }
    if hostnames.is_empty() {
        return Err("registry:2 served TLS, and berth needs the names its certificate is for: \
             set http.host (REGISTRY_HTTP_HOST=https://registry.example.com berth import-registry2 ...)"
            .into());
    }
    let table = out.table("tls");
    if tls.letsencrypt {
        if tls.certificate.is_some() {
            warnings.push(
                "http.tls.certificate: not converted: registry:2 refuses a certificate beside \
                 letsencrypt; the instance gets its certificate from Let's Encrypt"
                    .into(),
            );
        }
        if !input.shared_https {
            return Err(
                "registry:2 got its certificate from Let's Encrypt; berth orders it over its \
                 shared https listener on port 443, which berth.toml does not have: add\n  \
                 [listen]\n  https = \"0.0.0.0:443\"\nto berth.toml and run this again"
                    .into(),
            );
        }
        table.push(
            "# Certificates from Let's Encrypt (http.tls.letsencrypt), ordered for the\n\
             # hostnames above over [listen] https of berth.toml, kept in the store and\n\
             # renewed by berth."
                .into(),
        );
        table.push("mode = \"acme\"".into());
        if let Some(email) = &tls.letsencrypt_email {
            table.push(format!("acme_email = {}", q(email)));
        }
        return Ok(());
    }
    let (Some(cert), Some(key)) = (&tls.certificate, &tls.key) else {
        return Err("http.tls.certificate needs http.tls.key (REGISTRY_HTTP_TLS_KEY)".into());
    };
    for (what, path, var) in [
        ("certificate", cert, "REGISTRY_HTTP_TLS_CERTIFICATE"),
        ("key", key, "REGISTRY_HTTP_TLS_KEY"),
    ] {
        if !absolute(path).is_file() {
            return Err(format!(
                "http.tls.{what} {path} is not on this machine (a path inside registry:2's \
                 container?): run this again with {var} naming the file here"
            ));
        }
    }
    table.push("# registry:2's certificate and key (http.tls), re-read when they change.".into());
    table.push("mode = \"files\"".into());
    table.push(format!("cert = {}", q(&absolute(cert).to_string_lossy())));
    table.push(format!("key = {}", q(&absolute(key).to_string_lossy())));
    Ok(())
}

fn storage(
    root: &mut Map,
    input: &Input,
    out: &mut Out,
    secrets: &mut Vec<Secret>,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let storage = root.section("storage");
    let delete = storage
        .section("delete")
        .take_bool("enabled")
        .unwrap_or(false);
    let redirect_off = storage
        .section("redirect")
        .take_bool("disable")
        .unwrap_or(false);
    let maintenance = storage.section("maintenance");
    let purging = maintenance.section("uploadpurging");
    let purge = purging.take_bool("enabled").unwrap_or(true);
    let age = purging.take_str("age");
    let read_only = maintenance
        .section("readonly")
        .take_bool("enabled")
        .unwrap_or(false);

    let drivers: Vec<String> = storage
        .0
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| {
            [
                "filesystem",
                "s3",
                "azure",
                "gcs",
                "swift",
                "oss",
                "inmemory",
            ]
            .contains(&k.as_str())
        })
        .collect();
    let chosen = drivers
        .iter()
        .find(|d| *d == "filesystem" || *d == "s3")
        .cloned();
    for other in drivers.iter().filter(|d| Some(*d) != chosen.as_ref()) {
        if (other == "filesystem" || other == "s3") && chosen.is_some() {
            storage.take(other);
            warnings.push(format!(
                "storage.{other}: not converted: registry:2 takes one storage driver, and \
                 storage.{} came first",
                chosen.as_deref().unwrap_or_default()
            ));
        }
    }
    let table = out.table("storage");
    match chosen.as_deref() {
        Some("s3") => s3(
            storage.section("s3"),
            input.name,
            redirect_off,
            table,
            secrets,
            warnings,
        ),
        Some(_) => {
            let fs = storage.section("filesystem");
            let dir = fs
                .take_str("rootdirectory")
                .unwrap_or_else(|| "/var/lib/registry".to_string());
            let dir = absolute(&dir);
            if !dir.join("docker/registry/v2").is_dir() {
                warnings.push(format!(
                    "storage.filesystem.rootdirectory {}: holds no registry data on this \
                     machine (a path inside registry:2's container?); set [storage] root to \
                     where the data is, or run this again with \
                     REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY naming it",
                    dir.display()
                ));
            }
            table.push(
                "# registry:2's data directory (storage.filesystem.rootdirectory): berth\n\
                 # reads and writes the same layout, so it is served as is."
                    .into(),
            );
            table.push(format!("root = {}", q(&dir.to_string_lossy())));
        }
        None if drivers.iter().all(|d| d == "inmemory") => {
            table.push(format!(
                "# registry:2 kept its data in memory (or named no storage); berth keeps it\n\
                 # in a directory.\nroot = {}",
                q(&format!("data/{}", input.name))
            ));
        }
        None => {
            return Err(format!(
                "storage.{}: berth stores in a directory or an S3-compatible bucket, and \
                 cannot serve this store: {}",
                drivers[0],
                super::unsupported::why(&format!("storage.{}", drivers[0])).unwrap_or_default()
            ))
        }
    }

    let retention = out.table("retention");
    retention.push(
        "# Upload sessions abandoned this long are purged at each collection\n\
         # ([retention] interval, or ./ctl gc); from storage.maintenance.uploadpurging.age."
            .into(),
    );
    let age = age.unwrap_or_else(|| "168h".to_string());
    match humantime::parse_duration(&age) {
        Ok(_) => retention.push(format!("upload_ttl = {}", q(&age))),
        Err(_) => warnings.push(format!(
            "storage.maintenance.uploadpurging.age {age}: not converted: not a duration berth \
             reads (such as \"168h\"); upload_ttl stays 24h"
        )),
    }
    if !purge {
        warnings.push(
            "storage.maintenance.uploadpurging.enabled: false is not converted: berth always \
             purges abandoned uploads, after upload_ttl"
                .into(),
        );
    }
    if read_only {
        let m = out.table("maintenance");
        m.push(
            "# Pulls work; pushes, uploads and deletes get 405 UNSUPPORTED (as\n\
             # storage.maintenance.readonly did). ./ctl reload after changing it."
                .into(),
        );
        m.push("read_only = true".into());
    }
    if !delete {
        // Placed with the other [access] keys by `auth`.
        out.table("access").push(
            "# registry:2 refused deletes (storage.delete.enabled was not true): users\n\
             # may pull and push, not delete. \"delete\" lets them.\n\
             default = \"push\""
                .into(),
        );
    }
    Ok(())
}

fn s3(
    s3: &mut Map,
    name: &str,
    redirect_off: bool,
    table: &mut Vec<String>,
    secrets: &mut Vec<Secret>,
    warnings: &mut Vec<String>,
) {
    table.push("# registry:2's bucket (storage.s3), in its s3 driver's layout.".into());
    table.push("driver = \"s3\"".into());
    if let Some(bucket) = s3.take_str("bucket") {
        table.push(format!("bucket = {}", q(&bucket)));
    }
    let secure = s3.take_bool("secure").unwrap_or(true);
    if let Some(endpoint) = s3.take_str("regionendpoint") {
        let endpoint = match endpoint.contains("://") {
            true => endpoint,
            false if secure => format!("https://{endpoint}"),
            false => format!("http://{endpoint}"),
        };
        table.push(format!("endpoint = {}", q(&endpoint)));
    }
    if let Some(region) = s3.take_str("region") {
        table.push(format!("region = {}", q(&region)));
    }
    if let Some(prefix) = s3.take_str("rootdirectory") {
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            table.push(format!(
                "prefix = {}  # registry:2's rootdirectory",
                q(prefix)
            ));
        }
    }
    if let Some(path_style) = s3.take_bool("forcepathstyle") {
        table.push(format!("path_style = {path_style}"));
    }
    if let Some(chunk) = s3.take_str("chunksize") {
        match chunk.parse::<u64>() {
            Ok(n) if (5 << 20..=5 << 30).contains(&n) => table.push(format!(
                "part_size = {}  # registry:2's chunksize",
                q(&n.to_string())
            )),
            _ => warnings.push(format!(
                "storage.s3.chunksize {chunk}: not converted: part_size is from 5MiB to 5GiB"
            )),
        }
    }
    let (key, secret) = (s3.take_str("accesskey"), s3.take_str("secretkey"));
    let token = s3.take_str("sessiontoken");
    match (key, secret) {
        (Some(key), Some(secret)) => {
            let path = format!("credentials/{name}-s3");
            let mut text =
                format!("[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n");
            if let Some(token) = token {
                text.push_str(&format!("aws_session_token = {token}\n"));
            }
            table.push(format!(
                "# registry:2's accesskey and secretkey, moved to this file (mode 0600).\n\
                 credentials_file = {}",
                q(&path)
            ));
            secrets.push(Secret {
                path,
                text,
                what: "the S3 access key",
            });
        }
        _ => table.push(
            "# No keys in registry:2's configuration: AWS_ACCESS_KEY_ID and\n\
             # AWS_SECRET_ACCESS_KEY from the environment, else the AWS chain."
                .into(),
        ),
    }
    if !redirect_off {
        table.push(
            "# Blob pulls are redirected to presigned URLs of the bucket, as registry:2\n\
             # did (storage.redirect.disable was not true).\nredirect = true"
                .into(),
        );
    }
}

/// `[auth]` (and `[access]`); the default htpasswd file when that is the
/// one named.
fn auth(
    root: &mut Map,
    input: &Input,
    out: &mut Out,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, String> {
    let name = input.name;
    let auth = root.section("auth");
    let has_htpasswd = auth.0.iter().any(|(k, _)| k == "htpasswd");
    let other_scheme = auth.0.iter().any(|(k, _)| k != "htpasswd");
    let configured = auth.section("htpasswd").take_str("path");
    let default = format!("credentials/{name}.htpasswd");
    let table = out.table("auth");
    let chosen = if let Some(file) = input.htpasswd {
        if !file.is_file() {
            return Err(format!("--htpasswd {}: no such file", file.display()));
        }
        table.push("# bcrypt users (htpasswd -B), given with --htpasswd.".into());
        Some(absolute(&file.to_string_lossy()))
    } else if let Some(path) = configured.as_deref().map(absolute).filter(|p| p.is_file()) {
        table.push(
            "# registry:2's users (auth.htpasswd.path): bcrypt entries work as they are.\n\
             # Re-read when it changes."
                .into(),
        );
        Some(path)
    } else {
        if let Some(path) = &configured {
            warnings.push(format!(
                "auth.htpasswd.path {path}: not on this machine (a path inside registry:2's \
                 container?): copy it to {default} or run this again with --htpasswd FILE; \
                 until then nobody logs in (./ctl start adds a user admin to an empty file)"
            ));
        } else if !has_htpasswd && !other_scheme {
            warnings.push(
                "auth: registry:2 let anyone pull, push and delete; berth lets anyone pull \
                 (anonymous = \"pull\") and needs users for the rest: ./ctl passwd NAME USER"
                    .replace("NAME", name),
            );
            out.table("access").insert(
                0,
                "# registry:2 had no auth: anyone may pull; pushing needs a user.\n\
                 anonymous = \"pull\""
                    .into(),
            );
        }
        None
    };
    let table = out.table("auth");
    Ok(match chosen {
        Some(path) => {
            table.push(format!("htpasswd = {}", q(&path.to_string_lossy())));
            None
        }
        None => {
            table.push(format!(
                "# bcrypt users (htpasswd -B, or ./ctl passwd {name} USER).\nhtpasswd = {}",
                q(&default)
            ));
            Some(default)
        }
    })
}

/// `http.headers`, each header's values as one.
fn http_headers(headers: Option<Node>, out: &mut Out, warnings: &mut Vec<String>) {
    let Some(Node::Map(headers)) = headers else {
        if let Some(other) = headers.filter(|h| *h != Node::Null) {
            warnings.push(format!(
                "http.headers: not converted: expected a mapping of header lists, found {other}"
            ));
        }
        return;
    };
    let mut pairs = Vec::new();
    for (name, values) in headers.0 {
        match values.header_value() {
            Some(v) => pairs.push(format!("{} = {}", q(&name), q(&v))),
            None => warnings.push(format!(
                "http.headers.{name}: not converted: expected a list of values"
            )),
        }
    }
    if pairs.is_empty() {
        return;
    }
    let table = out.table("http");
    table.push("# Added to every response of this instance (http.headers).".into());
    table.push(format!("headers = {{ {} }}", pairs.join(", ")));
}

/// `validation`: registry:2 (2.7 and later) checks the URLs of manifests'
/// layers unless `validation.disabled` (or `enabled: false`), and with no
/// `allow` pattern refuses every such manifest.
fn validation(root: &mut Map, out: &mut Out) {
    let v = root.section("validation");
    let disabled = v.take_bool("disabled").unwrap_or(false);
    let enabled = v.take_bool("enabled").unwrap_or(!disabled);
    let urls = v.section("manifests").section("urls");
    let (allow, deny) = (urls.take_strings("allow"), urls.take_strings("deny"));
    if !enabled {
        return;
    }
    let table = out.table("validation");
    table.push(
        "# Manifests whose layers carry URLs (non-distributable layers) are refused\n\
         # unless every URL matches an allow pattern and none a deny pattern\n\
         # (validation.manifests.urls; none allowed without an allow pattern, as\n\
         # registry:2 does). Without this table berth takes them unchecked."
            .into(),
    );
    table.push(format!("manifest_urls_allow = {}", regexes(&allow)));
    if !deny.is_empty() {
        table.push(format!("manifest_urls_deny = {}", regexes(&deny)));
    }
}

/// Patterns as TOML literal strings where they can be (no escaping).
fn regexes(patterns: &[String]) -> String {
    let quoted: Vec<String> = patterns
        .iter()
        .map(|p| match p.contains('\'') || p.contains('\n') {
            true => q(p),
            false => format!("'{p}'"),
        })
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// `proxy.remoteurl`: the instance mirrors that registry.
fn mirror(
    root: &mut Map,
    name: &str,
    out: &mut Out,
    secrets: &mut Vec<Secret>,
    warnings: &mut Vec<String>,
) {
    let proxy = root.section("proxy");
    let Some(url) = proxy.take_str("remoteurl") else {
        return;
    };
    let (user, password) = (proxy.take_str("username"), proxy.take_str("password"));
    let url = url.trim_end_matches('/').to_string();
    let host = host_of(&url).unwrap_or_default();
    let port = url
        .split_once("://")
        .map_or(url.as_str(), |(_, r)| r)
        .split('/')
        .next()
        .and_then(|a| a.rsplit_once(':').map(|(_, p)| format!(":{p}")))
        .unwrap_or_default();
    let registry = match host.as_str() {
        "registry-1.docker.io" | "index.docker.io" | "docker.io" => "docker.io".to_string(),
        h => format!("{h}{port}"),
    };
    let table = out.table("mirror");
    table.push(
        "# A pull-through cache of another registry (proxy.remoteurl): pulls fetch\n\
         # what is not here yet and keep it; pushes and deletes are refused."
            .into(),
    );
    let mut upstream = vec![
        format!("registry = {}", q(&registry)),
        format!("url = {}", q(&url)),
        "prefix = \"\"  # every repository".into(),
    ];
    if let (Some(user), Some(password)) = (user, password) {
        let path = format!("credentials/{name}-upstream");
        upstream.push(format!(
            "# proxy.username and proxy.password, moved to this file (mode 0600).\n\
             credentials_file = {}",
            q(&path)
        ));
        secrets.push(Secret {
            path,
            text: format!("{user}:{password}\n"),
            what: "the upstream's user and password",
        });
    }
    out.table("[mirror.upstream]").extend(upstream);
    out.table("retention").push(
        "# registry:2's proxy dropped what it had fetched after 7 days: tags not\n\
         # pulled for 7 days go, checked hourly.\n\
         unpulled_for = \"7d\"\n\
         interval = \"1h\""
            .into(),
    );
    if url.matches('/').count() > 2 {
        warnings.push(format!(
            "proxy.remoteurl {url}: berth's upstream is a registry's root URL; the path was kept \
             and berth check says whether it takes it"
        ));
    }
}

/// `notifications.endpoints`: webhooks in registry:2's envelope.
fn notifications(
    root: &mut Map,
    name: &str,
    out: &mut Out,
    secrets: &mut Vec<Secret>,
    warnings: &mut Vec<String>,
) {
    let n = root.section("notifications");
    let Some(Node::Seq(mut endpoints)) = n.take("endpoints") else {
        return;
    };
    let mut kept = Vec::new();
    for (i, e) in endpoints.iter_mut().enumerate() {
        let Node::Map(e) = e else { continue };
        let path = format!("notifications.endpoints[{i}]");
        let label = e
            .take_str("name")
            .unwrap_or_else(|| format!("endpoint {i}"));
        if e.take_bool("disabled").unwrap_or(false) {
            warnings.push(format!(
                "{path} ({label}): disabled in registry:2; not converted"
            ));
            e.0.clear();
            continue;
        }
        let Some(url) = e.take_str("url") else {
            warnings.push(format!("{path} ({label}): has no url; not converted"));
            continue;
        };
        let mut lines = vec![
            format!("# {label} (notifications.endpoints[{i}])"),
            "[[notify]]".into(),
            format!("url = {}", q(&url)),
        ];
        match e.take("headers") {
            Some(Node::Map(h)) if !h.0.is_empty() => {
                let file = format!("credentials/{name}-notify-{}", kept.len() + 1);
                let mut text = String::new();
                for (k, v) in h.0 {
                    match v.header_value() {
                        Some(v) => text.push_str(&format!("{k}: {v}\n")),
                        None => warnings.push(format!(
                            "{path}.headers.{k}: not converted: expected a list of values"
                        )),
                    }
                }
                lines.push(format!(
                    "# Its headers, moved to this file (mode 0600): they may hold secrets.\n\
                     headers_file = {}",
                    q(&file)
                ));
                secrets.push(Secret {
                    path: file,
                    text,
                    what: "a webhook's headers",
                });
            }
            Some(Node::Null) | Some(Node::Map(_)) | None => {}
            Some(other) => warnings.push(format!(
                "{path}.headers: not converted: expected a mapping of header lists, found {other}"
            )),
        }
        if let Some(t) = e.take_str("timeout") {
            lines.push(format!("timeout = {}", q(&t)));
        }
        let ignore = e.section("ignore");
        let mut media = ignore.take_strings("mediatypes");
        let actions = ignore.take_strings("actions");
        for m in e.take_strings("ignoredmediatypes") {
            if !media.contains(&m) {
                media.push(m);
            }
        }
        let events: Vec<String> = ["push", "pull", "delete"]
            .iter()
            .filter(|a| !actions.iter().any(|x| x == *a))
            .map(|a| a.to_string())
            .collect();
        lines.push(format!(
            "events = {}  # what registry:2 sent, less ignore.actions",
            list(&events)
        ));
        if !media.is_empty() {
            lines.push(format!("ignore_media_types = {}", list(&media)));
        }
        kept.push(lines.join("\n"));
    }
    // What is left of them is listed as not converted.
    n.0.push(("endpoints".into(), Node::Seq(endpoints)));
    if !kept.is_empty() {
        out.table("# notify").push(format!(
            "# Webhooks (notifications.endpoints), in registry:2's envelope.\n{}",
            kept.join("\n\n")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml::{apply_env, parse};
    use super::*;

    fn input<'a>(htpasswd: Option<&'a Path>, shared_https: bool) -> Input<'a> {
        Input {
            name: "ci",
            htpasswd,
            shared_https,
            source: "test",
        }
    }

    /// Converts `yaml` with the environment `env`.
    fn conv(
        yaml: &str,
        env: &[(&str, &str)],
        input: &Input,
    ) -> Result<(toml::Table, Converted), String> {
        let mut tree = parse(yaml)?;
        apply_env(
            &mut tree,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )?;
        let c = convert(tree, input)?;
        let table: toml::Table = toml::from_str(&c.instance).map_err(|e| e.to_string())?;
        Ok((table, c))
    }

    fn get<'a>(t: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
        let mut parts = path.split('.');
        let mut v = t.get(parts.next()?)?;
        for p in parts {
            v = v.get(p)?;
        }
        Some(v)
    }

    fn s<'a>(t: &'a toml::Table, path: &str) -> &'a str {
        get(t, path)
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("{path} in {t:#?}"))
    }

    #[test]
    fn a_docker_run_environment_converts() {
        let dir = tempfile::tempdir().unwrap();
        let (htpasswd, data) = (dir.path().join("htpasswd"), dir.path().join("data"));
        std::fs::write(&htpasswd, "u:$2y$05$x\n").unwrap();
        std::fs::create_dir_all(data.join("docker/registry/v2")).unwrap();
        let env = [
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", htpasswd.to_str().unwrap()),
            (
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                data.to_str().unwrap(),
            ),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
            ("REGISTRY_HTTP_ADDR", ":5001"),
        ];
        let (t, c) = conv(super::super::IMAGE_CONFIG, &env, &input(None, false)).unwrap();
        assert_eq!(
            get(&t, "listen").unwrap().as_array().unwrap()[0].as_str(),
            Some("0.0.0.0:5001")
        );
        assert_eq!(s(&t, "storage.root"), data.to_str().unwrap());
        assert_eq!(s(&t, "auth.htpasswd"), htpasswd.to_str().unwrap());
        assert!(c.default_htpasswd.is_none() && c.secrets.is_empty());
        assert!(t.get("access").is_none(), "deletes allowed: no [access]");
        assert!(t.get("tls").is_none());
        assert_eq!(s(&t, "http.headers.X-Content-Type-Options"), "nosniff");
        assert_eq!(
            get(&t, "validation.manifest_urls_allow")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            0
        );
        assert_eq!(s(&t, "retention.upload_ttl"), "168h");
        let told: Vec<&str> = c
            .warnings
            .iter()
            .map(|w| w.split(':').next().unwrap())
            .collect();
        // In file order; the environment's keys come after the file's.
        assert_eq!(
            told,
            ["log", "storage.cache", "health", "auth.htpasswd.realm"]
        );
    }

    #[test]
    fn listen_addresses_and_hostnames() {
        for (addr, listen) in [
            (":5000", "0.0.0.0:5000"),
            ("localhost:5000", "127.0.0.1:5000"),
            ("10.1.2.3:443", "10.1.2.3:443"),
            ("[::1]:5000", "[::1]:5000"),
        ] {
            let yaml =
                format!("http:\n  addr: \"{addr}\"\n  host: https://Reg.Example.com:5000/x\n");
            let (t, _) = conv(&yaml, &[], &input(None, false)).unwrap();
            assert_eq!(
                get(&t, "listen").unwrap().as_array().unwrap()[0].as_str(),
                Some(listen)
            );
            assert_eq!(
                get(&t, "hostnames").unwrap().as_array().unwrap()[0].as_str(),
                Some("reg.example.com")
            );
        }
        let e = conv(
            "http:\n  addr: reg.example.com:5000\n",
            &[],
            &input(None, false),
        )
        .unwrap_err();
        assert!(e.contains("REGISTRY_HTTP_ADDR=IP:5000"), "{e}");
    }

    #[test]
    fn tls_becomes_files_or_acme_or_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, "c").unwrap();
        std::fs::write(&key, "k").unwrap();
        let files = format!(
            "http:\n  host: https://r.example.com\n  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        let (t, _) = conv(&files, &[], &input(None, false)).unwrap();
        assert_eq!(s(&t, "tls.mode"), "files");
        assert_eq!(s(&t, "tls.cert"), cert.to_str().unwrap());
        assert_eq!(s(&t, "tls.key"), key.to_str().unwrap());
        // A path inside the container is refused, naming the variable.
        let e = conv(
            &files,
            &[("REGISTRY_HTTP_TLS_KEY", "/certs/domain.key")],
            &input(None, false),
        )
        .unwrap_err();
        assert!(
            e.contains("http.tls.key /certs/domain.key is not on this machine")
                && e.contains("REGISTRY_HTTP_TLS_KEY"),
            "{e}"
        );
        // Without names the certificate is for, refused.
        let e = conv(
            &files.replace("  host: https://r.example.com\n", ""),
            &[],
            &input(None, false),
        )
        .unwrap_err();
        assert!(e.contains("REGISTRY_HTTP_HOST"), "{e}");
        let le = "http:\n  tls:\n    letsencrypt:\n      cachefile: /c\n      email: ops@example.com\n      hosts: [a.example.com, B.example.com]\n";
        let e = conv(le, &[], &input(None, false)).unwrap_err();
        assert!(e.contains("[listen]\n  https = \"0.0.0.0:443\""), "{e}");
        let (t, _) = conv(le, &[], &input(None, true)).unwrap();
        assert_eq!(s(&t, "tls.mode"), "acme");
        assert_eq!(s(&t, "tls.acme_email"), "ops@example.com");
        let names: Vec<_> = get(&t, "hostnames")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(names, ["a.example.com", "b.example.com"]);
    }

    #[test]
    fn s3_keys_move_to_a_credentials_file() {
        let yaml = "storage:\n  s3:\n    accesskey: AKIA1\n    secretkey: s3cr3t\n    region: garage\n    \
                    regionendpoint: 127.0.0.1:3900\n    secure: false\n    bucket: reg\n    \
                    rootdirectory: /ci/\n    chunksize: 10485760\n    v4auth: true\n  redirect:\n    disable: true\n";
        let (t, c) = conv(yaml, &[], &input(None, false)).unwrap();
        assert_eq!(s(&t, "storage.driver"), "s3");
        assert_eq!(s(&t, "storage.endpoint"), "http://127.0.0.1:3900");
        assert_eq!(s(&t, "storage.region"), "garage");
        assert_eq!(s(&t, "storage.prefix"), "ci");
        assert_eq!(s(&t, "storage.part_size"), "10485760");
        assert_eq!(s(&t, "storage.credentials_file"), "credentials/ci-s3");
        assert!(get(&t, "storage.redirect").is_none());
        assert!(
            !c.instance.contains("s3cr3t"),
            "no secret in the instance file"
        );
        assert_eq!(
            c.secrets,
            [Secret {
                path: "credentials/ci-s3".into(),
                text: "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s3cr3t\n"
                    .into(),
                what: "the S3 access key",
            }]
        );
        assert!(c
            .warnings
            .iter()
            .any(|w| w.starts_with("storage.s3.v4auth: not converted")));
        let (t, _) = conv(
            "storage:\n  s3:\n    bucket: reg\n",
            &[],
            &input(None, false),
        )
        .unwrap();
        assert_eq!(
            get(&t, "storage.redirect").and_then(|v| v.as_bool()),
            Some(true)
        );
        let e = conv(
            "storage:\n  azure:\n    accountname: a\n",
            &[],
            &input(None, false),
        )
        .unwrap_err();
        assert!(
            e.starts_with("storage.azure: berth stores in a directory"),
            "{e}"
        );
    }

    #[test]
    fn auth_maintenance_proxy_and_notifications() {
        let dir = tempfile::tempdir().unwrap();
        let given = dir.path().join("users");
        std::fs::write(&given, "").unwrap();
        // No auth: anonymous pulls, users for the rest.
        let (t, c) = conv(
            "storage:\n  delete:\n    enabled: false\n",
            &[],
            &input(None, false),
        )
        .unwrap();
        assert_eq!(s(&t, "access.anonymous"), "pull");
        assert_eq!(s(&t, "access.default"), "push");
        assert_eq!(
            c.default_htpasswd.as_deref(),
            Some("credentials/ci.htpasswd")
        );
        // --htpasswd wins over a path of the container.
        let yaml = "auth:\n  htpasswd:\n    path: /auth/htpasswd\n";
        let (t, c) = conv(yaml, &[], &input(Some(&given), false)).unwrap();
        assert_eq!(s(&t, "auth.htpasswd"), given.to_str().unwrap());
        let container_path =
            |w: &String| w.starts_with("auth.htpasswd.path /auth/htpasswd: not on this machine");
        assert!(!c.warnings.iter().any(container_path));
        let (t, c) = conv(yaml, &[], &input(None, false)).unwrap();
        assert_eq!(s(&t, "auth.htpasswd"), "credentials/ci.htpasswd");
        assert!(c.warnings.iter().any(container_path), "{:?}", c.warnings);
        let e = conv(yaml, &[], &input(Some(&dir.path().join("nope")), false)).unwrap_err();
        assert!(e.contains("no such file"), "{e}");

        let yaml = "storage:\n  maintenance:\n    readonly:\n      enabled: true\n    uploadpurging:\n      age: 48h\n\
                    proxy:\n  remoteurl: https://registry-1.docker.io/\n  username: me\n  password: tok3n\n\
                    notifications:\n  endpoints:\n    - name: hook\n      url: https://h.example.com/e\n      \
                    headers:\n        Authorization: [Bearer abc]\n      timeout: 2s\n      ignore:\n        \
                    actions: [pull]\n        mediatypes: [application/octet-stream]\n    - name: off\n      disabled: true\n      url: https://x\n\
                    validation:\n  disabled: true\n";
        let (t, c) = conv(yaml, &[], &input(None, false)).unwrap();
        assert_eq!(
            get(&t, "maintenance.read_only").and_then(|v| v.as_bool()),
            Some(true)
        );
        assert_eq!(s(&t, "retention.upload_ttl"), "48h");
        assert!(
            t.get("validation").is_none(),
            "validation disabled: unchecked"
        );
        let up = &get(&t, "mirror.upstream").unwrap().as_array().unwrap()[0];
        assert_eq!(up["registry"].as_str(), Some("docker.io"));
        assert_eq!(up["url"].as_str(), Some("https://registry-1.docker.io"));
        assert_eq!(
            up["credentials_file"].as_str(),
            Some("credentials/ci-upstream")
        );
        let hook = &get(&t, "notify").unwrap().as_array().unwrap();
        assert_eq!(hook.len(), 1);
        assert_eq!(hook[0]["url"].as_str(), Some("https://h.example.com/e"));
        assert_eq!(hook[0]["events"].as_array().unwrap().len(), 2);
        assert_eq!(
            hook[0]["headers_file"].as_str(),
            Some("credentials/ci-notify-1")
        );
        let secrets: Vec<(&str, &str)> = c
            .secrets
            .iter()
            .map(|s| (s.path.as_str(), s.text.as_str()))
            .collect();
        assert_eq!(
            secrets,
            [
                ("credentials/ci-upstream", "me:tok3n\n"),
                ("credentials/ci-notify-1", "Authorization: Bearer abc\n")
            ]
        );
        assert!(!c.instance.contains("tok3n") && !c.instance.contains("abc"));
        assert!(c.warnings.iter().any(
            |w| w == "notifications.endpoints[1] (off): disabled in registry:2; not converted"
        ));
    }
}
