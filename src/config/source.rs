//! A config file's text, and errors that point into it: every error names
//! its file, and the line and column where it has one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::ConfigError;

/// A file's text, for turning byte offsets into line:column.
pub(super) struct Source {
    pub(super) path: PathBuf,
    text: String,
}

impl Source {
    /// The file at `path`; `None` when there is none.
    pub(super) fn read(path: &Path) -> Result<Option<Source>, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(Source {
                path: path.to_path_buf(),
                text,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ConfigError {
                file: path.to_path_buf(),
                position: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    pub(super) fn error_at(
        &self,
        offset: Option<usize>,
        message: impl Into<String>,
    ) -> ConfigError {
        let position = offset.map(|o| {
            let before = &self.text[..o.min(self.text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            (line, col)
        });
        ConfigError {
            file: self.path.clone(),
            position,
            message: message.into(),
        }
    }

    pub(super) fn error_spanned<T>(
        &self,
        s: &Spanned<T>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.error_at(Some(s.span().start), message)
    }

    pub(super) fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            self.error_at(
                e.span().map(|s| s.start),
                e.message().trim_end().replace('\n', ": "),
            )
        })
    }

    /// A listen address (`IP:PORT`).
    pub(super) fn addr(
        &self,
        s: &Spanned<String>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<SocketAddr> {
        match s.get_ref().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(self.error_spanned(
                    s,
                    format!(
                        "invalid listen address '{}': expected IP:PORT such as 127.0.0.1:5000",
                        s.get_ref()
                    ),
                ));
                None
            }
        }
    }
}
