//! A value that is replaced while readers hold on to the one they took: the server's
//! per-connection settings and the scheduler's router, both replaced by a reload. A reader
//! gets an `Arc` of the value in force and keeps it as long as it likes (a session, a
//! delivery attempt); a replacement affects only those who read after it.

use std::sync::{Arc, RwLock};

/// The value in force, behind a lock held only to copy or replace the `Arc`. Clones share
/// the one value.
pub struct Swap<T>(Arc<RwLock<Arc<T>>>);

impl<T> Swap<T> {
    /// A handle with `value` in force.
    pub fn new(value: T) -> Swap<T> {
        Swap::from_arc(Arc::new(value))
    }

    /// [`Swap::new`] with a value already shared.
    pub fn from_arc(value: Arc<T>) -> Swap<T> {
        Swap(Arc::new(RwLock::new(value)))
    }

    /// The one in force now.
    pub fn get(&self) -> Arc<T> {
        // A writer that panicked left a whole `Arc` behind: the value is still good.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `value` in force for every read from now on.
    pub fn replace(&self, value: T) {
        self.replace_arc(Arc::new(value));
    }

    /// [`Swap::replace`] with a value already shared.
    pub fn replace_arc(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

impl<T> Clone for Swap<T> {
    fn clone(&self) -> Swap<T> {
        Swap(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::Swap;

    #[test]
    fn readers_keep_what_they_took_clones_see_replacements() {
        let swap = Swap::new(1);
        let other = swap.clone();
        let taken = swap.get();
        other.replace(2);
        assert_eq!(*taken, 1, "a reader keeps the value it took");
        assert_eq!(*swap.get(), 2, "a clone's replacement is seen by all");
        swap.replace_arc(std::sync::Arc::new(3));
        assert_eq!(*other.get(), 3);
        assert_eq!(*Swap::from_arc(std::sync::Arc::new(4)).get(), 4);
    }
}
