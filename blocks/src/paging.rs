//! Following a vendor's pages safely: a cursor that comes back is a loop, and a listing
//! that does not end within the caps fails loudly instead of sending requests (and, in a
//! sync, writing records) until someone notices. Preset pagination and every sync use this.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::diag::{Diagnostics, join};

/// The most pages and items one listing may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    pub max_pages: u64,
    pub max_items: u64,
}

impl PageLimits {
    /// For a preset's `paginate`: one person's cards, groups, … never come near this.
    pub const PRESET: PageLimits = PageLimits { max_pages: 1_000, max_items: 100_000 };
    /// For a sync: a whole company, possibly in small pages.
    pub const SYNC: PageLimits = PageLimits { max_pages: 10_000, max_items: 100_000 };

    /// Reads `max_pages` and `max_items` (whole numbers from 1) from the object at `at`,
    /// keeping `self` for what it does not set.
    pub fn compile(self, object: &Map<String, Value>, at: &str, diags: &mut Diagnostics) -> PageLimits {
        let mut limits = self;
        for (key, slot) in [("max_pages", &mut limits.max_pages), ("max_items", &mut limits.max_items)] {
            match object.get(key) {
                None => {}
                Some(v) => match v.as_u64() {
                    Some(n) if n >= 1 => *slot = n,
                    _ => diags.error(join(at, key), format!("{key} must be a whole number from 1, not {v}")),
                },
            }
        }
        limits
    }
}

/// Why a listing was stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PagingError {
    /// The vendor handed out a cursor it had handed out before, after this many pages.
    RepeatedCursor {
        cursor: String,
        pages: u64,
    },
    TooManyPages {
        max_pages: u64,
    },
    TooManyItems {
        max_items: u64,
    },
}

impl PagingError {
    /// The message, with where to raise the cap (`in the preset's paginate`, …).
    pub fn describe(&self, raise_where: &str) -> String {
        match self {
            PagingError::RepeatedCursor { cursor, pages } => format!(
                "the vendor sent the cursor `{}` again after {pages} page(s): its listing loops, so it was stopped",
                crate::http::excerpt(cursor, 60)
            ),
            PagingError::TooManyPages { max_pages } => format!(
                "the listing did not end within {max_pages} pages (max_pages), so it was stopped; \
                 if it really is longer, raise max_pages {raise_where}"
            ),
            PagingError::TooManyItems { max_items } => format!(
                "the listing has more than {max_items} items (max_items), so it was stopped; \
                 if it really is longer, raise max_items {raise_where}"
            ),
        }
    }
}

/// The pages of one listing so far.
#[derive(Debug)]
pub struct PageTrail {
    limits: PageLimits,
    cursors: HashSet<String>,
    pages: u64,
    items: u64,
}

impl PageTrail {
    pub fn new(limits: PageLimits) -> PageTrail {
        PageTrail { limits, cursors: HashSet::new(), pages: 0, items: 0 }
    }

    /// Counts a page of `items` items that points on to `next` (None on the last page).
    /// Errs when the items pass `max_items`, `next` was seen before, or another page
    /// would pass `max_pages`.
    pub fn page(&mut self, items: usize, next: Option<&str>) -> Result<(), PagingError> {
        self.pages += 1;
        self.items += items as u64;
        if self.items > self.limits.max_items {
            return Err(PagingError::TooManyItems { max_items: self.limits.max_items });
        }
        let Some(next) = next else { return Ok(()) };
        if !self.cursors.insert(next.to_string()) {
            return Err(PagingError::RepeatedCursor { cursor: next.to_string(), pages: self.pages });
        }
        if self.pages >= self.limits.max_pages {
            return Err(PagingError::TooManyPages { max_pages: self.limits.max_pages });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_seen_before_is_a_loop_even_after_other_cursors() {
        let mut trail = PageTrail::new(PageLimits::PRESET);
        trail.page(10, Some("a")).unwrap();
        trail.page(10, Some("b")).unwrap();
        assert_eq!(trail.page(10, Some("a")), Err(PagingError::RepeatedCursor { cursor: "a".into(), pages: 3 }));
    }

    #[test]
    fn the_caps_allow_exactly_their_size_and_stop_beyond() {
        let limits = PageLimits { max_pages: 3, max_items: 25 };
        let mut trail = PageTrail::new(limits);
        trail.page(10, Some("1")).unwrap();
        trail.page(10, Some("2")).unwrap();
        trail.page(5, None).unwrap();
        let mut trail = PageTrail::new(limits);
        trail.page(1, Some("1")).unwrap();
        trail.page(1, Some("2")).unwrap();
        assert_eq!(trail.page(1, Some("3")), Err(PagingError::TooManyPages { max_pages: 3 }));
        let mut trail = PageTrail::new(limits);
        assert_eq!(trail.page(26, None), Err(PagingError::TooManyItems { max_items: 25 }));
        let message = PagingError::TooManyPages { max_pages: 3 }.describe("in the preset's `paginate`");
        assert!(message.contains("raise max_pages in the preset's `paginate`"), "{message}");
    }
}
