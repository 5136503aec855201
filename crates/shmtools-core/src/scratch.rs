//! Test support: a region made for one unit test, destroyed (its name
//! removed) when dropped, even if the test panics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::pool::Pool;
use crate::region::{CreateOptions, Region};
use crate::value::Values;

pub(crate) struct Scratch {
    region: Option<Region>,
}

impl Scratch {
    /// Names hold the process id, `tag` and a counter, so tests never collide.
    pub(crate) fn new(tag: &str, bytes: u64) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "shmt-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        );
        let region = Region::create(&name, bytes, &CreateOptions::default())
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        Scratch {
            region: Some(region),
        }
    }

    pub(crate) fn region(&self) -> &Region {
        self.region.as_ref().expect("region present until drop")
    }

    pub(crate) fn pool(&self) -> Pool<'_> {
        self.region()
            .pool()
            .expect("a fresh region has a valid pool")
    }

    pub(crate) fn values(&self) -> Values<'_> {
        self.region()
            .values()
            .expect("a fresh region has a valid pool")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(r) = self.region.take() {
            let _ = r.destroy();
        }
    }
}
