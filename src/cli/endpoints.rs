//! Where each instance answers, as `berth check` and `berth serve` print it
//! (and `./ctl start`, `status` and `check` show it): every instance with
//! its TLS mode and hostnames, each address that serves it, and the
//! `docker login` argument that reaches it there, for a TLS instance with a
//! name its certificate covers and the listener's port.
//!
//! Owns that text only: it reads a config and the listeners (configured or
//! bound) and opens, binds and writes nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{Config, InstanceConfig, Tls};
use crate::server::{Opened, Target};

/// The lines, each indented by two spaces: one per shared listener with the
/// hostnames it serves, then one per instance (with its storage and htpasswd
/// file when `details`), each followed by its addresses, indented by four.
pub fn describe(cfg: &Config, listeners: &[Opened], details: bool) -> Vec<String> {
    let mut out = Vec::new();
    for o in listeners {
        let (what, routes, tls) = match o.listen.target {
            Target::ByHost => ("shared listener", "by Host", false),
            Target::Https => ("shared TLS listener", "by SNI", true),
            Target::Instance(_) => continue,
            Target::Admin => {
                out.push(format!(
                    "  admin listener {} (/metrics, /healthz, /readyz)",
                    url(o)
                ));
                continue;
            }
        };
        let names: Vec<&str> = cfg
            .instances
            .iter()
            .filter(|i| !tls || i.tls.is_on())
            .flat_map(|i| i.hostnames.iter().map(String::as_str))
            .collect();
        let names = if names.is_empty() {
            "no hostnames".to_string()
        } else {
            names.join(", ")
        };
        out.push(format!("  {what} {} (routes {routes}): {names}", url(o)));
    }
    for inst in &cfg.instances {
        out.push(format!("  {}", headline(cfg, inst, listeners, details)));
        // Its own listeners first, then the shared ones.
        let (own, shared): (Vec<&Opened>, Vec<&Opened>) = listeners
            .iter()
            .partition(|o| matches!(o.listen.target, Target::Instance(_)));
        for o in own.into_iter().chain(shared) {
            if let Some(line) = address(inst, o) {
                out.push(format!("    {line}"));
            }
        }
    }
    out
}

/// `NAME: tls MODE; hostnames …` and what keeps hostnames from being served.
fn headline(cfg: &Config, inst: &InstanceConfig, listeners: &[Opened], details: bool) -> String {
    let tls = match &inst.tls {
        Tls::Off => "tls off".to_string(),
        Tls::Acme { .. } => "tls acme".to_string(),
        Tls::Files { cert, .. } => format!("tls files ({})", cert.display()),
        Tls::SelfSigned { .. } => format!(
            "tls self-signed (clients trust {})",
            crate::server::tls::ca_path(&cfg.state_dir).display()
        ),
    };
    let mut line = format!("{}: {tls}; ", inst.name);
    if inst.hostnames.is_empty() {
        line.push_str("no hostnames");
    } else {
        line.push_str(&format!("hostnames {}", inst.hostnames.join(", ")));
        let shared = if inst.tls.is_on() {
            Target::Https
        } else {
            Target::ByHost
        };
        if !listeners.iter().any(|o| o.listen.target == shared) {
            let key = if inst.tls.is_on() { "https" } else { "http" };
            line.push_str(&format!(
                " (not served: they need [listen] {key} in berth.toml)"
            ));
        }
    }
    if details {
        line.push_str(&format!(
            "; storage {}; htpasswd {}",
            inst.storage,
            inst.htpasswd.display()
        ));
    }
    line
}

/// The line of listener `o` for `inst`, when `o` serves it: its URL and
/// the `docker login` argument that reaches it there.
fn address(inst: &InstanceConfig, o: &Opened) -> Option<String> {
    let tls = inst.tls.is_on();
    let port = o.local.port();
    match &o.listen.target {
        Target::Instance(name) if *name == inst.name => {
            let own = url(o);
            if !tls {
                let login = host_port(&local_host(o.local.ip()), port, None);
                return Some(format!("{own} (own listener)    docker login {login}"));
            }
            Some(match inst.hostnames.first() {
                Some(name) => format!(
                    "{own} (own listener; certificate for {})    docker login {}",
                    inst.hostnames.join(", "),
                    host_port(name, port, Some(443))
                ),
                None => format!("{own} (own listener; no hostname for its certificate)"),
            })
        }
        Target::ByHost if !tls => Some(by_name(inst, "http", port, 80, "shared listener")?),
        Target::Https if tls => Some(by_name(inst, "https", port, 443, "shared TLS listener")?),
        _ => None,
    }
}

/// An instance's hostnames on a shared listener on `port`.
fn by_name(
    inst: &InstanceConfig,
    scheme: &str,
    port: u16,
    default_port: u16,
    what: &str,
) -> Option<String> {
    let first = inst.hostnames.first()?;
    let urls: Vec<String> = inst
        .hostnames
        .iter()
        .map(|h| format!("{scheme}://{}", host_port(h, port, Some(default_port))))
        .collect();
    Some(format!(
        "{} ({what})    docker login {}",
        urls.join(", "),
        host_port(first, port, Some(default_port))
    ))
}

fn url(o: &Opened) -> String {
    let scheme = if o.tls { "https" } else { "http" };
    format!("{scheme}://{}", o.local)
}

/// `host:port`, or `host` alone on the scheme's `default_port`.
fn host_port(host: &str, port: u16, default_port: Option<u16>) -> String {
    if Some(port) == default_port {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

/// The address a client on this machine reaches a listener at: loopback
/// for one bound to every address.
fn local_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) if v6.is_unspecified() => format!("[{}]", Ipv6Addr::LOCALHOST),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(berth_toml: &str, instances: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("instances")).unwrap();
        std::fs::create_dir_all(dir.path().join("credentials")).unwrap();
        std::fs::write(dir.path().join("berth.toml"), berth_toml).unwrap();
        for (name, text) in instances {
            std::fs::write(dir.path().join(format!("instances/{name}.toml")), text).unwrap();
            std::fs::write(dir.path().join(format!("credentials/{name}.htpasswd")), "").unwrap();
        }
        let cfg = crate::config::load(dir.path()).unwrap();
        (dir, cfg)
    }

    fn lines(cfg: &Config) -> String {
        describe(cfg, &Opened::planned(cfg), false).join("\n")
    }

    #[test]
    fn a_tls_instance_on_its_own_listener_logs_in_by_a_name_of_its_certificate() {
        let (_d, cfg) = config(
            "",
            &[(
                "ci",
                "hostnames = [\"ci.example.com\", \"r.example.com\"]\nlisten = [\"127.0.0.1:5000\"]\n[tls]\nmode = \"self-signed\"\n",
            )],
        );
        let text = lines(&cfg);
        assert!(
            text.contains("https://127.0.0.1:5000 (own listener; certificate for ci.example.com, r.example.com)    docker login ci.example.com:5000"),
            "{text}"
        );
        assert!(!text.contains("docker login 127.0.0.1"), "{text}");
        assert!(
            text.contains("ci: tls self-signed (clients trust "),
            "{text}"
        );
        assert!(
            text.contains("hostnames ci.example.com, r.example.com (not served: they need [listen] https in berth.toml)"),
            "{text}"
        );
    }

    #[test]
    fn shared_listeners_name_their_hostnames_and_every_instance_has_a_line() {
        let (_d, cfg) = config(
            "[listen]\nhttp = \"0.0.0.0:80\"\nhttps = \"0.0.0.0:8443\"\n",
            &[
                (
                    "ci",
                    "hostnames = [\"ci.example.com\"]\n[tls]\nmode = \"self-signed\"\n",
                ),
                (
                    "cache",
                    "hostnames = [\"cache.localhost\"]\nlisten = [\"0.0.0.0:5001\"]\n",
                ),
            ],
        );
        let text = lines(&cfg);
        for want in [
            "  shared listener http://0.0.0.0:80 (routes by Host): cache.localhost, ci.example.com",
            "  shared TLS listener https://0.0.0.0:8443 (routes by SNI): ci.example.com",
            "  ci: tls self-signed",
            "    https://ci.example.com:8443 (shared TLS listener)    docker login ci.example.com:8443",
            "  cache: tls off; hostnames cache.localhost\n",
            "    http://0.0.0.0:5001 (own listener)    docker login 127.0.0.1:5001",
            "    http://cache.localhost (shared listener)    docker login cache.localhost",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        // A TLS instance is not offered on the plain listener (it redirects).
        assert!(!text.contains("http://ci.example.com"), "{text}");
        let own = text.find("http://0.0.0.0:5001 (own").unwrap();
        assert!(
            own < text.find("http://cache.localhost (shared").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn details_add_storage_and_htpasswd() {
        let (_d, cfg) = config("", &[("ci", "listen = [\"[::]:5000\"]\n")]);
        let text = describe(&cfg, &Opened::planned(&cfg), true).join("\n");
        assert!(
            text.contains("ci: tls off; no hostnames; storage "),
            "{text}"
        );
        assert!(text.contains("; htpasswd "), "{text}");
        assert!(text.contains("docker login [::1]:5000"), "{text}");
    }
}
