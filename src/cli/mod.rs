//! The `lariat` subcommands other than `serve`: `check` (a config, its tool sources,
//! optionally its providers) and `health` (a probe for container health checks).

pub mod check;
pub mod health;

/// `println!` that stops quietly when stdout is closed (`lariat check | head`): the
/// reader has seen what it wanted, and the exit status still reports the config.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use say;
