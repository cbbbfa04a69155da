//! The vocabulary of the OCI Distribution protocol shared by every layer:
//! repository names, tags, digests, references, media types and the error
//! codes, and globs over names. It depends on nothing else in the crate.

mod error;
pub mod media;
mod names;
mod pattern;

pub use error::{error_chain, RegistryError};
pub use names::{Algorithm, Digest, Reference, RepoName, Tag, MAX_NAME_LEN};
pub use pattern::Pattern;
