//! The one error type of the registry domain. Each variant is an OCI
//! Distribution error code; the HTTP layer renders it, taking the status code
//! from [`RegistryError::status`]. `Internal` carries a cause that is logged,
//! never sent to clients.

use std::io;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    BlobUnknown(String),
    #[error("{0}")]
    BlobUploadInvalid(String),
    /// A chunk that does not start where the upload ends (416).
    #[error("{0}")]
    RangeInvalid(String),
    #[error("{0}")]
    BlobUploadUnknown(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("{0}")]
    ManifestBlobUnknown(String),
    #[error("{0}")]
    ManifestInvalid(String),
    #[error("{0}")]
    ManifestUnknown(String),
    #[error("{0}")]
    ManifestTooLarge(String),
    /// A blob larger than the instance's `max_blob_size` (413).
    #[error("{0}")]
    BlobTooLarge(String),
    /// A request target longer than the server accepts (414).
    #[error("{0}")]
    UriTooLong(String),
    /// Request headers larger than the server accepts (431).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// A push under a tag that the tag grammar does not allow (400).
    #[error("{0}")]
    TagInvalid(String),
    #[error("{0}")]
    NameInvalid(String),
    #[error("{0}")]
    NameUnknown(String),
    #[error("{0}")]
    SizeInvalid(String),
    #[error("{0}")]
    PaginationNumberInvalid(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A request whose `Host` HTTP does not allow: missing (HTTP/1.1),
    /// repeated, or not `host[:port]` (RFC 9112 §3.2; 400).
    #[error("{0}")]
    HostInvalid(String),
    /// The request's host is not served on this TLS connection (421).
    #[error("{0}")]
    Misdirected(String),
    #[error("{0}")]
    RangeNotSatisfiable(String),
    #[error("storage is full: {0}")]
    StorageFull(String),
    /// The registry cannot reach its storage now (503).
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl RegistryError {
    /// The OCI error code.
    pub fn code(&self) -> &'static str {
        use RegistryError::*;
        match self {
            BlobUnknown(_) => "BLOB_UNKNOWN",
            BlobUploadInvalid(_) | RangeInvalid(_) => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid(_) => "DIGEST_INVALID",
            ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid(_) => "MANIFEST_INVALID",
            ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            ManifestTooLarge(_) | BlobTooLarge(_) | SizeInvalid(_) | RangeNotSatisfiable(_) => {
                "SIZE_INVALID"
            }
            NameInvalid(_) => "NAME_INVALID",
            TagInvalid(_) => "TAG_INVALID",
            NameUnknown(_) => "NAME_UNKNOWN",
            PaginationNumberInvalid(_) => "PAGINATION_NUMBER_INVALID",
            Unauthorized(_) => "UNAUTHORIZED",
            Denied(_) => "DENIED",
            TooManyRequests(_) => "TOOMANYREQUESTS",
            Unsupported(_) | MethodNotAllowed(_) | NotFound(_) | Misdirected(_)
            | HostInvalid(_) | UriTooLong(_) | HeadersTooLarge(_) => "UNSUPPORTED",
            StorageFull(_) | Internal(_) => "UNKNOWN",
            Unavailable(_) => "UNAVAILABLE",
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        use RegistryError::*;
        match self {
            BlobUnknown(_) | BlobUploadUnknown(_) | ManifestUnknown(_) | NameUnknown(_)
            | NotFound(_) => 404,
            Unauthorized(_) => 401,
            Denied(_) => 403,
            TooManyRequests(_) => 429,
            MethodNotAllowed(_) => 405,
            Misdirected(_) => 421,
            ManifestTooLarge(_) | BlobTooLarge(_) => 413,
            UriTooLong(_) => 414,
            HeadersTooLarge(_) => 431,
            RangeInvalid(_) | RangeNotSatisfiable(_) => 416,
            StorageFull(_) => 507,
            Unavailable(_) => 503,
            Internal(_) => 500,
            BlobUploadInvalid(_)
            | DigestInvalid(_)
            | ManifestBlobUnknown(_)
            | ManifestInvalid(_)
            | NameInvalid(_)
            | TagInvalid(_)
            | SizeInvalid(_)
            | PaginationNumberInvalid(_)
            | HostInvalid(_)
            | Unsupported(_) => 400,
        }
    }

    /// A blob that would pass the instance's `max_blob_size` of `max` bytes.
    pub fn blob_too_large(max: u64) -> Self {
        RegistryError::BlobTooLarge(format!(
            "the blob would exceed this registry's limit of {max} bytes (max_blob_size)"
        ))
    }

    /// A write to an instance in `[maintenance] read_only` mode (405
    /// `UNSUPPORTED`, as registry:2 answers in its read-only mode).
    pub fn read_only() -> Self {
        RegistryError::MethodNotAllowed(
            "this registry is read-only (maintenance): pulls work, pushes, uploads and deletes are refused"
                .into(),
        )
    }

    /// Wraps an I/O failure; a full disk becomes [`RegistryError::StorageFull`].
    pub fn io(context: &str, err: io::Error) -> Self {
        // ENOSPC, and EDQUOT (a quota is as full as a disk).
        if matches!(err.raw_os_error(), Some(28 | 122)) {
            RegistryError::StorageFull(format!("{context}: no space left on device"))
        } else {
            RegistryError::Internal(format!("{context}: {err}"))
        }
    }

    /// The message sent to clients; internal causes stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            RegistryError::Internal(_) => "internal server error".to_string(),
            other => other.to_string(),
        }
    }
}

/// `e` and its causes, one after another.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out.replace('\n', " ")
}
