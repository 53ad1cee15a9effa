//! Which of the server's threads the code runs on. Each thread serves its own
//! connections on its own single-threaded runtime, as nginx's workers do: a request
//! stays on one thread from its first byte to its last, with no hand-offs between
//! threads. What each thread keeps for itself (its upstream connection pools) is
//! picked by this index.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// This thread's index: 0 unless [`enter`] said otherwise.
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Marks this thread as the server's thread `index`.
pub fn enter(index: usize) {
    INDEX.with(|cell| cell.set(index));
}
