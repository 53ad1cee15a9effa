//! The confirmation gate: which calls wait for a human "yes" (`gate`), the checkpoint
//! a paused loop is stored as (`checkpoint`), the question the client sees
//! (`footer`), and reading the human's reply on the next request (`reply`). The
//! store side is `agent::pause`.

mod checkpoint;
mod footer;
mod gate;
mod reply;

pub use checkpoint::{
    Checkpoint, RequestParams, TRACE_GRACE, Trace, TraceState, VERSION, fate_note, gone_text, latest_key, new_id,
    store_key, trace_key,
};
pub use footer::{PLACEHOLDER, footer, template};
#[cfg(test)]
pub use gate::{DENIED, DENIED_OTHER};
pub use gate::{Gate, Verdict};
pub use reply::{Structured, find_marker, find_reply, take_structured};
