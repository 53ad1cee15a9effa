//! Benchmark: compaction of a 1,000-message history and token counting throughput.
fn main() {}
