//! Authentication with an upstream registry, as registries ask for it in
//! their `WWW-Authenticate` challenge: `Bearer realm=…,service=…,scope=…`
//! (a token fetched from the realm, anonymously or with the credentials,
//! and kept until it expires) or `Basic` (the credentials on every
//! request). Challenges are answered one at a time, so that requests
//! meeting the same one at once share one token request. Owns the
//! tokens; must never log a credential or a token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::Deserialize;

use super::{Credentials, UpstreamError};

/// A token's lifetime when the token server does not say (the
/// distribution spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is renewed this long before it expires, so that it does not
/// expire on the way.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// What an upstream asked for, and the tokens it gave.
pub(super) struct Auth {
    registry: String,
    credentials: Option<Credentials>,
    state: parking_lot::Mutex<State>,
    /// Held while a challenge is answered.
    answering: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The upstream asked for Basic.
    basic: bool,
    /// Bearer tokens by scope, with when each stops being used.
    tokens: HashMap<String, (String, Instant)>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Auth {
    pub(super) fn new(registry: &str, credentials: Option<Credentials>) -> Self {
        Auth {
            registry: registry.to_string(),
            credentials,
            state: parking_lot::Mutex::default(),
            answering: tokio::sync::Mutex::default(),
        }
    }

    fn basic_value(c: &Credentials) -> String {
        let raw = format!("{}:{}", c.user, c.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// The `Authorization` value for a request needing `scope`, if one is
    /// known to be wanted.
    pub(super) fn header(&self, scope: &str) -> Option<String> {
        let mut state = self.state.lock();
        if state.basic {
            return self.credentials.as_ref().map(Self::basic_value);
        }
        match state.tokens.get(scope) {
            Some((token, until)) if *until > Instant::now() => Some(format!("Bearer {token}")),
            Some(_) => {
                state.tokens.remove(scope);
                None
            }
            None => None,
        }
    }

    /// Answers the challenge of a 401 to a request that carried `sent`
    /// (the [`Self::header`] it had): remembers that Basic is wanted, or
    /// fetches a token for `scope`. When another request answered the
    /// same challenge meanwhile, its answer serves. An error when the
    /// request cannot succeed (no credentials for Basic, credentials or
    /// a token request refused).
    pub(super) async fn answer(
        &self,
        http: &reqwest::Client,
        challenge: &str,
        scope: &str,
        sent: Option<&str>,
    ) -> Result<(), UpstreamError> {
        let _one = self.answering.lock().await;
        if self
            .header(scope)
            .is_some_and(|now| Some(now.as_str()) != sent)
        {
            return Ok(());
        }
        let (scheme, params) = parse_challenge(challenge);
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                if self.credentials.is_none() {
                    return Err(
                        self.refused("it asks for a user and password; set credentials_file")
                    );
                }
                let mut state = self.state.lock();
                if state.basic {
                    return Err(
                        self.refused("it refused the user and password of credentials_file")
                    );
                }
                state.basic = true;
                Ok(())
            }
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| self.refused("its Bearer challenge has no realm"))?;
                let token = self.fetch_token(http, realm, &params, scope).await?;
                self.state.lock().tokens.insert(scope.to_string(), token);
                Ok(())
            }
            _ => Err(self.refused(&format!("it asks for '{scheme}' authentication"))),
        }
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        realm: &str,
        params: &HashMap<String, String>,
        scope: &str,
    ) -> Result<(String, Instant), UpstreamError> {
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| self.refused(&format!("its token realm '{realm}' is no URL: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = params.get("service") {
                q.append_pair("service", service);
            }
            q.append_pair("scope", scope);
        }
        let mut req = http.get(url);
        if let Some(c) = &self.credentials {
            req = req.header(http::header::AUTHORIZATION, Self::basic_value(c));
        }
        let resp = req.send().await.map_err(|e| {
            UpstreamError::unreachable(&self.registry, &format!("its token server: {e}"))
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.refused(&format!("its token server answered {status}")));
        }
        let body = resp.bytes().await.map_err(|e| {
            UpstreamError::unreachable(&self.registry, &format!("its token server: {e}"))
        })?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| self.refused(&format!("its token server sent no token: {e}")))?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.refused("its token server sent no token"))?;
        let lifetime = parsed
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        let until = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        Ok((token, until))
    }

    fn refused(&self, why: &str) -> UpstreamError {
        UpstreamError::refused(&self.registry, why)
    }
}

/// The scheme of a `WWW-Authenticate` value and its parameters
/// (`key="value"` or `key=value`, comma-separated; quoted values may hold
/// commas, as scopes do).
fn parse_challenge(value: &str) -> (String, HashMap<String, String>) {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => val.extend(chars.next()),
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            val = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), val.trim().to_string());
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/alpine:pull,push");
        let (scheme, p) = parse_challenge("Basic realm=berth");
        assert_eq!((scheme.as_str(), p["realm"].as_str()), ("Basic", "berth"));
        let (scheme, p) = parse_challenge("Basic");
        assert_eq!(scheme, "Basic");
        assert!(p.is_empty());
    }

    #[test]
    fn tokens_expire_and_basic_needs_credentials() {
        let auth = Auth::new("docker.io", None);
        auth.state.lock().tokens.insert(
            "s".into(),
            ("old".into(), Instant::now() - Duration::from_secs(1)),
        );
        assert_eq!(auth.header("s"), None);
        auth.state.lock().tokens.insert(
            "s".into(),
            ("new".into(), Instant::now() + Duration::from_secs(60)),
        );
        assert_eq!(auth.header("s").unwrap(), "Bearer new");
        let http = reqwest::Client::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A request sent before that token was had: the token serves.
        rt.block_on(auth.answer(&http, "Basic realm=x", "s", None))
            .unwrap();
        // One sent with it and asked for Basic: no credentials for that.
        let err = rt
            .block_on(auth.answer(&http, "Basic realm=x", "s", Some("Bearer new")))
            .unwrap_err();
        assert!(err.to_string().contains("credentials_file"), "{err}");
        let auth = Auth::new(
            "b",
            Some(Credentials {
                user: "u".into(),
                password: "p".into(),
            }),
        );
        rt.block_on(auth.answer(&http, "Basic realm=x", "s", None))
            .unwrap();
        assert_eq!(auth.header("s").unwrap(), "Basic dTpw");
        // Another request sent without credentials at the same time: it
        // takes them now.
        rt.block_on(auth.answer(&http, "Basic realm=x", "s", None))
            .unwrap();
        // Asked again after they were sent: they were refused.
        assert!(rt
            .block_on(auth.answer(&http, "Basic realm=x", "s", Some("Basic dTpw")))
            .is_err());
    }
}
