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
            let offset = e.span().map(|s| s.start);
            let mut message = e.message().trim_end().replace('\n', ": ");
            if let Some(hint) = offset.and_then(|o| self.string_hint(&message, o)) {
                message = format!("{message}: {hint}");
            }
            self.error_at(offset, message)
        })
    }

    /// What to do about a string TOML could not read, from the line it is
    /// on: close it, or write its backslashes so that TOML takes them.
    fn string_hint(&self, message: &str, offset: usize) -> Option<&'static str> {
        let quote = if message.starts_with("invalid basic string")
            || message.starts_with("invalid escape sequence")
        {
            '"'
        } else if message.starts_with("invalid literal string") {
            '\''
        } else {
            return None;
        };
        let offset = offset.min(self.text.len());
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = &self.text[start..end];
        Some(match (quote, closed_on_line(line, quote)) {
            ('"', false) => {
                "the string is not closed: end it with \" on this line (a string cannot go on over lines; \"\"\"...\"\"\" can)"
            }
            (_, false) => {
                "the string is not closed: end it with ' on this line (a string cannot go on over lines; '''...''' can)"
            }
            ('"', true) => {
                "in \"...\" a backslash starts an escape such as \\n: write a backslash as \\\\, or quote the text with '...' to take it as written"
            }
            (_, true) => "a '...' string holds no ' and no control characters: use \"...\" for those",
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

/// Whether the first string that `quote` opens on `line` (after its `=`)
/// is closed on it; a backslash escapes the next character in `"..."`.
fn closed_on_line(line: &str, quote: char) -> bool {
    let value = line.split_once('=').map_or(line, |(_, v)| v);
    let mut chars = value.chars().skip_while(|c| *c != quote).skip(1);
    while let Some(c) = chars.next() {
        match c {
            '\\' if quote == '"' => {
                chars.next();
            }
            c if c == quote => return true,
            _ => {}
        }
    }
    false
}
