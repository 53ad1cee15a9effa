//! The store suite, run against every backend (memory, and a real Redis).
