//! `Range` and `Content-Range` header values, parsed from their text.

use crate::oci::RegistryError;

/// A `Range: bytes=...` request header, resolved against the blob size.
/// `Ok(None)`: serve everything (no header, or one we do not understand).
pub fn byte_range(value: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, RegistryError> {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = || {
        RegistryError::RangeNotSatisfiable(format!(
            "range {spec} is outside the blob's {size} bytes"
        ))
    };
    let (first, last) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = match suffix.parse() {
                Ok(n) => n,
                Err(_) => return Ok(None),
            };
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(n), size - 1)
        }
        (first, last) => {
            let Ok(first) = first.parse::<u64>() else {
                return Ok(None);
            };
            let last = if last.is_empty() {
                size.saturating_sub(1)
            } else {
                match last.parse::<u64>() {
                    Ok(l) => l.min(size.saturating_sub(1)),
                    Err(_) => return Ok(None),
                }
            };
            if first >= size || last < first {
                return Err(unsatisfiable());
            }
            (first, last)
        }
    };
    Ok(Some((first, last)))
}

/// `Content-Range` of an upload chunk: `a-b`, also accepted as `bytes a-b/*`
/// or `bytes=a-b`; inclusive, as `(first, last)`.
pub fn content_range(raw: &str) -> Result<(u64, u64), RegistryError> {
    let invalid = || RegistryError::BlobUploadInvalid(format!("invalid Content-Range '{raw}'"));
    let spec = raw.trim();
    let spec = spec
        .strip_prefix("bytes")
        .map_or(spec, |s| s.trim_start_matches(['=', ' ']));
    let spec = spec.split_once('/').map_or(spec, |(r, _)| r);
    let (a, b) = spec.split_once('-').ok_or_else(invalid)?;
    let first: u64 = a.trim().parse().map_err(|_| invalid())?;
    let last: u64 = b.trim().parse().map_err(|_| invalid())?;
    // Its length, last - first + 1, must fit in a u64.
    if last < first || last - first == u64::MAX {
        return Err(invalid());
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(byte_range(None, 10).unwrap(), None);
        assert_eq!(byte_range(Some("bytes=0-4"), 10).unwrap(), Some((0, 4)));
        assert_eq!(byte_range(Some("bytes=5-"), 10).unwrap(), Some((5, 9)));
        assert_eq!(byte_range(Some("bytes=-3"), 10).unwrap(), Some((7, 9)));
        assert_eq!(byte_range(Some("bytes=-30"), 10).unwrap(), Some((0, 9)));
        assert_eq!(byte_range(Some("bytes=2-100"), 10).unwrap(), Some((2, 9)));
        assert_eq!(byte_range(Some("bytes=0-1,3-4"), 10).unwrap(), None);
        assert_eq!(byte_range(Some("items=0-1"), 10).unwrap(), None);
        assert!(byte_range(Some("bytes=10-"), 10).is_err());
        assert!(byte_range(Some("bytes=5-2"), 10).is_err());
        assert!(byte_range(Some("bytes=-0"), 10).is_err());
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 0-9/10").unwrap(), (0, 9));
        assert_eq!(
            content_range(&format!("1-{}", u64::MAX)).unwrap(),
            (1, u64::MAX)
        );
        assert!(content_range(&format!("0-{}", u64::MAX)).is_err());
    }
}
