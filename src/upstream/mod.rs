//! The client side of the distribution protocol, for mirror instances: a
//! source of content that [`crate::registry`] calls, like `storage`.
//! Owns talking to upstream registries (their URLs, credentials, token
//! flow); must not touch storage or know of the requests it serves.

mod spec;

pub use spec::{Credentials, MirrorSpec, UpstreamSpec, DEFAULT_TAG_TTL};
