//! Compaction (SPEC §6): every upstream call fits the target's context budget.
