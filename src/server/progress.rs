//! Live progress: what the loop is doing, in words for the person at a chat UI. Only
//! streams get it, and only this face sees it: the conversation the model sees never
//! holds a progress line.

use std::time::Duration;

use crate::agent::{Event, ToolOutcome};

/// The line an event shows, if it shows one.
pub fn line(event: &Event) -> Option<String> {
    Some(match event {
        // The first round's wait is over before a response can show anything.
        Event::RoundStarted { round } if *round > 1 => format!("Thinking (round {round})…"),
        Event::ToolStarted { name, arguments, .. } if arguments.is_empty() || arguments == "{}" => {
            format!("Running `{name}`…")
        }
        Event::ToolStarted { name, arguments, .. } => format!("Running `{name}` {arguments}…"),
        Event::ToolFinished { name, outcome, duration, .. } => match outcome {
            ToolOutcome::Ok => format!("`{name}` done in {}", seconds(*duration)),
            ToolOutcome::Error => format!("`{name}` failed after {}", seconds(*duration)),
            ToolOutcome::Timeout => format!("`{name}` timed out after {}", seconds(*duration)),
            ToolOutcome::UnknownTool => format!("There is no tool `{name}`"),
            ToolOutcome::BadArguments => format!("`{name}` was called with unusable arguments"),
        },
        Event::Fallback { from, to } => format!("`{from}` failed; trying `{to}`"),
        Event::Compacted { tokens_before, tokens_after, .. } => {
            format!("Compacted the conversation ({tokens_before} → {tokens_after} tokens)")
        }
        Event::HandedOver { to } => format!("Writing the answer with `{to}`…"),
        _ => return None,
    })
}

/// The line for a place that shows text as it is, such as Open WebUI's status line
/// (it does not render markdown there, so the backticks around names would show).
pub fn plain(line: &str) -> String {
    line.replace('`', "")
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_short_lines() {
        let started =
            Event::ToolStarted { id: "1".into(), name: "fetch_url".into(), arguments: "{\"url\":\"x\"}".into() };
        assert_eq!(line(&started).unwrap(), "Running `fetch_url` {\"url\":\"x\"}…");
        let done = Event::ToolFinished {
            id: "1".into(),
            name: "fetch_url".into(),
            outcome: ToolOutcome::Ok,
            duration: Duration::from_millis(1234),
        };
        assert_eq!(line(&done).unwrap(), "`fetch_url` done in 1.2 s");
        assert_eq!(line(&Event::RoundStarted { round: 1 }), None);
        assert_eq!(line(&Event::RoundStarted { round: 2 }).unwrap(), "Thinking (round 2)…");
        assert_eq!(line(&Event::HandedOver { to: "gpt4o".into() }).unwrap(), "Writing the answer with `gpt4o`…");
        assert_eq!(line(&Event::Suspended { calls: Vec::new() }), None);
        assert_eq!(plain(&line(&done).unwrap()), "fetch_url done in 1.2 s");
    }
}
