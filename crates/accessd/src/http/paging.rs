//! Paging of the JSON lists (customers, events, audit, mail): `limit`,
//! `cursor`, and one more row read than asked to tell whether there is a
//! next page.

use crate::error::{ApiError, ApiResult};

/// Parses `limit` (1 to 1000, default 100).
pub(crate) fn limit(raw: Option<&str>) -> ApiResult<u32> {
    match raw {
        None => Ok(100),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::malformed("`limit` must be from 1 to 1000")),
    }
}

/// Parses `cursor` with the list's `parse` (400 `malformed_request` when
/// it is not one).
pub(crate) fn cursor<'a, T>(
    raw: Option<&'a str>,
    parse: impl FnOnce(&'a str) -> Option<T>,
) -> ApiResult<Option<T>> {
    raw.map(|raw| {
        parse(raw).ok_or_else(|| ApiError::malformed("`cursor` is not a cursor from `next_cursor`"))
    })
    .transpose()
}

/// Cuts `rows`, read with `limit + 1`, to `limit`; whether there is a next
/// page.
pub(crate) fn cut<T>(rows: &mut Vec<T>, limit: u32) -> bool {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    more
}
