//! The compaction steps in order, over a tally that counts exactly only where
//! length-based bounds cannot decide.

use std::cmp::Reverse;

use super::budget::Budget;
use super::cost::{self, MESSAGE_OVERHEAD, Mode, REPLY_PRIMING};
use super::ledger::Ledger;
use super::shape::{Shape, is_instruction};
use super::tokens::Tokenizer;
use super::truncate::truncate;
use super::{Dropped, Overflow, Policy, Report};
use crate::openai::{Message, Role, ToolDef};

/// Compaction with memory: keeps the token counts of the messages it has seen, so a
/// loop that compacts before every round counts each message once, not once per
/// round. Keep one per request loop, next to its message list.
///
/// The counts are checked against a fingerprint of each message on every call
/// (see the `ledger` module), so appending messages, editing them or handing in a
/// different list is safe: what changed is recounted. A different tokenizer (a
/// fallback target of another family) starts the counts afresh.
#[derive(Debug, Clone)]
pub struct Compactor {
    policy: Policy,
    ledger: Ledger,
}

impl Compactor {
    pub fn new(policy: Policy) -> Self {
        Self { policy, ledger: Ledger::default() }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Makes `messages` fit `budget` with `tools` sent alongside, in the order of
    /// the README documents, stopping as soon as the list fits:
    ///
    /// 1. tool results older than the last `keep_recent` are cut to `head_chars`;
    /// 2. the recent ones are cut to `recent_cap_chars`;
    /// 3. the oldest groups before the latest user message are dropped (instructions
    ///    stay, a tool call and its results go together, a turn goes whole: what is
    ///    kept starts with a user message);
    /// 4. the recent results are cut further, halving the cap down to `head_chars`;
    /// 5. still too long: [`Overflow`], and the list is left as compacted as it gets.
    ///
    /// A list that is valid for the OpenAI API stays valid.
    pub fn compact<'t>(
        &mut self,
        messages: &mut Vec<Message>,
        tools: impl IntoIterator<Item = &'t ToolDef>,
        budget: Budget,
        tokenizer: Tokenizer,
    ) -> Result<Report, Overflow> {
        self.compact_keeping(messages, tools, budget, tokenizer, 0).map(|(report, _)| report)
    }

    /// [`Compactor::compact`] for a caller that has the groups step 3 drops
    /// summarised: they are handed back, and if step 3 drops anything it makes
    /// `reserve` more tokens of room, for the summary to fit beside the rest.
    pub fn compact_keeping<'t>(
        &mut self,
        messages: &mut Vec<Message>,
        tools: impl IntoIterator<Item = &'t ToolDef>,
        budget: Budget,
        tokenizer: Tokenizer,
        reserve: usize,
    ) -> Result<(Report, Dropped), Overflow> {
        let tools: Vec<&ToolDef> = tools.into_iter().collect();
        self.ledger.sync(tokenizer, messages, tools.iter().copied());
        let mut tally = Tally::new(&mut self.ledger, tools, tokenizer, budget.limit);
        let fits = tally.fits(messages, |i| super::shape::is_result(&messages[i]));
        let mut report = Report { tokens_before: tally.upper, tokens_after: tally.upper, ..Report::default() };
        if fits {
            return Ok((report, Dropped::default()));
        }
        let shape = Shape::of(messages, self.policy.keep_recent);
        let result = steps(&mut tally, messages, &shape, &self.policy, reserve, &mut report);
        report.tokens_after = tally.upper;
        result.map(|dropped| (report, dropped))
    }

    /// Inserts `message` at `at` (a summary, when there is no system message to
    /// attach it to), keeping the counts of the messages after it.
    pub fn insert(&mut self, messages: &mut Vec<Message>, at: usize, message: Message) {
        self.ledger.insert(at, &message);
        messages.insert(at, message);
    }

    /// The exact prompt tokens of `messages` with `tools`, reusing and filling the
    /// same counts as [`Compactor::compact`].
    pub fn count<'t>(
        &mut self,
        messages: &[Message],
        tools: impl IntoIterator<Item = &'t ToolDef>,
        tokenizer: Tokenizer,
    ) -> usize {
        let tools: Vec<&ToolDef> = tools.into_iter().collect();
        self.ledger.sync(tokenizer, messages, tools.iter().copied());
        let mut tally = Tally::new(&mut self.ledger, tools, tokenizer, 0);
        tally.refine_all(messages, |_| true);
        tally.upper
    }
}

/// Steps 1 to 4, after the list was found over budget; what step 3 dropped.
fn steps(
    tally: &mut Tally<'_, '_>,
    messages: &mut Vec<Message>,
    shape: &Shape,
    policy: &Policy,
    reserve: usize,
    report: &mut Report,
) -> Result<Dropped, Overflow> {
    for &i in &shape.old_results {
        if truncate(&mut messages[i].content, policy.head_chars) {
            tally.changed(i, &messages[i]);
            report.truncated += 1;
        }
    }
    let recent = |i: usize| shape.recent_results.contains(&i);
    if report.truncated > 0 && tally.fits(messages, recent) {
        return Ok(Dropped::default());
    }
    for &i in &shape.recent_results {
        if truncate(&mut messages[i].content, policy.recent_cap_chars) {
            tally.changed(i, &messages[i]);
            report.capped += 1;
        }
    }
    let mut droppable = vec![false; messages.len()];
    for unit in &shape.units {
        unit.clone().filter(|&i| !is_instruction(&messages[i])).for_each(|i| droppable[i] = true);
    }
    if report.capped > 0 && tally.fits(messages, |i| droppable[i]) {
        return Ok(Dropped::default());
    }
    // Step 3 keeps the longest run of newest groups that fits next to everything
    // that cannot be dropped; walking from the newest group counts only survivors.
    tally.refine_all(messages, |i| !droppable[i]);
    let room = tally.limit.saturating_sub(tally.upper_without(&droppable)).saturating_sub(reserve);
    let mut kept = 0usize;
    let mut first_kept = shape.units.len();
    for (u, unit) in shape.units.iter().enumerate().rev() {
        let members = || unit.clone().filter(|&i| droppable[i]);
        members().for_each(|i| tally.refine(messages, i));
        let cost: usize = members().map(|i| tally.known(i)).sum();
        if kept + cost > room {
            break;
        }
        kept += cost;
        first_kept = u;
    }
    // A turn is not cut in half: the list goes on with a user message, as chat
    // templates that insist on alternating roles need, never with a stray answer.
    if first_kept > 0 {
        let starts_turn = |unit: &std::ops::Range<usize>| messages[unit.start].role == Role::User;
        first_kept += shape.units[first_kept..].iter().take_while(|unit| !starts_turn(unit)).count();
    }
    let mut drop = vec![false; messages.len()];
    for unit in &shape.units[..first_kept] {
        unit.clone().filter(|&i| droppable[i]).for_each(|i| drop[i] = true);
    }
    let dropped = tally.drop(messages, &drop);
    report.dropped_messages = dropped.messages.len();
    // Room for the summary that will stand in for the dropped groups, while the
    // recent results are shrunk: the limit proper is checked below.
    let limit = tally.limit;
    if report.dropped_messages > 0 {
        tally.limit = limit.saturating_sub(reserve);
    }
    if !tally.fits(messages, |_| false) {
        shrink_recent(tally, messages, policy, report);
    }
    tally.limit = limit;
    if tally.upper > tally.limit {
        // An overflow reports exact figures, not bounds.
        tally.refine_all(messages, |_| true);
    }
    if tally.upper <= tally.limit { Ok(dropped) } else { Err(Overflow { needed: tally.upper, limit: tally.limit }) }
}

/// Step 4: the current turn alone is too long (a loop whose recent results are each
/// large next to a small window). Rather than fail the request, the recent results
/// are cut further, halving their cap down to `head_chars`, until the list fits.
fn shrink_recent(tally: &mut Tally<'_, '_>, messages: &mut [Message], policy: &Policy, report: &mut Report) {
    let recent = Shape::of(messages, policy.keep_recent).recent_results;
    let mut counted = vec![false; recent.len()];
    let mut cap = policy.recent_cap_chars;
    while cap > policy.head_chars {
        cap = (cap / 2).max(policy.head_chars);
        for (k, &i) in recent.iter().enumerate() {
            if truncate(&mut messages[i].content, cap) {
                tally.changed(i, &messages[i]);
                if !std::mem::replace(&mut counted[k], true) {
                    report.capped += 1;
                }
            }
        }
        if tally.fits(messages, |_| false) {
            return;
        }
    }
}

/// Running bounds of a list's tokens: `lower <= exact <= upper`. Counting exactly
/// (refining) raises `lower` and lowers `upper` until one of them decides.
struct Tally<'a, 't> {
    ledger: &'a mut Ledger,
    tools: Vec<&'t ToolDef>,
    tokenizer: Tokenizer,
    limit: usize,
    upper: usize,
    lower: usize,
}

/// Where the tool schemas sort among messages waiting to be counted.
const TOOLS: usize = usize::MAX;

impl<'a, 't> Tally<'a, 't> {
    fn new(ledger: &'a mut Ledger, tools: Vec<&'t ToolDef>, tokenizer: Tokenizer, limit: usize) -> Self {
        let (mut upper, mut lower) = (REPLY_PRIMING, REPLY_PRIMING);
        for entry in ledger.tools.iter().chain(&ledger.messages) {
            upper += entry.known();
            lower += entry.exact.unwrap_or(0);
        }
        lower += MESSAGE_OVERHEAD * ledger.messages.iter().filter(|entry| entry.exact.is_none()).count();
        Self { ledger, tools, tokenizer, limit, upper, lower }
    }

    fn decided(&self) -> bool {
        self.upper <= self.limit || self.lower > self.limit
    }

    /// Whether the list fits, counting exactly only until that is decided: messages
    /// not `deferred` first (their counts are needed whatever happens next), largest
    /// bound first (the quickest to decide).
    fn fits(&mut self, messages: &[Message], deferred: impl Fn(usize) -> bool) -> bool {
        if !self.decided() {
            let tools = self
                .ledger
                .tools
                .filter(|entry| entry.exact.is_none())
                .map(|entry| (false, Reverse(entry.bound), TOOLS));
            let mut order: Vec<(bool, Reverse<usize>, usize)> = (self.ledger.messages.iter().enumerate())
                .filter(|(_, entry)| entry.exact.is_none())
                .map(|(i, entry)| (deferred(i), Reverse(entry.bound), i))
                .chain(tools)
                .collect();
            order.sort_unstable();
            for (_, _, i) in order {
                if self.decided() {
                    break;
                }
                self.refine(messages, i);
            }
        }
        self.upper <= self.limit
    }

    /// Counts exactly the tool schemas and every message `which` selects.
    fn refine_all(&mut self, messages: &[Message], which: impl Fn(usize) -> bool) {
        self.refine(messages, TOOLS);
        for i in (0..messages.len()).filter(|&i| which(i)) {
            self.refine(messages, i);
        }
    }

    /// Counts message `i` (or the tool schemas, for [`TOOLS`]) exactly.
    fn refine(&mut self, messages: &[Message], i: usize) {
        let (entry, floor) = match i {
            TOOLS => (self.ledger.tools.as_mut(), 0),
            _ => (self.ledger.messages.get_mut(i), MESSAGE_OVERHEAD),
        };
        let Some(entry) = entry.filter(|entry| entry.exact.is_none()) else { return };
        let exact = match i {
            TOOLS => cost::tools(self.tokenizer, Mode::Exact, self.tools.iter().copied()),
            _ => messages.get(i).map_or(0, |message| cost::message(self.tokenizer, Mode::Exact, message)),
        };
        // `floor <= exact <= bound`: every message costs its framing, and no
        // tokenizer counts more than its bound (see `Tokenizer::bound`).
        self.upper = self.upper - entry.bound + exact;
        self.lower = self.lower - floor + exact;
        entry.exact = Some(exact);
    }

    fn known(&self, i: usize) -> usize {
        self.ledger.messages.get(i).map_or(0, |entry| entry.known())
    }

    /// `upper` without the messages `excluded` selects.
    fn upper_without(&self, excluded: &[bool]) -> usize {
        let excluded: usize = excluded.iter().enumerate().filter(|(_, out)| **out).map(|(i, _)| self.known(i)).sum();
        self.upper - excluded
    }

    /// Message `i` was rewritten by compaction: its old count no longer holds.
    fn changed(&mut self, i: usize, message: &Message) {
        let Some(&old) = self.ledger.messages.get(i) else { return };
        self.ledger.changed(i, message, self.tokenizer);
        let new = self.ledger.messages.get(i).map_or(0, |entry| entry.bound);
        self.upper = self.upper - old.known() + new;
        self.lower = self.lower - old.exact.unwrap_or(MESSAGE_OVERHEAD) + MESSAGE_OVERHEAD;
    }

    /// Removes the messages `drop` selects, with their counts, and hands them back.
    fn drop(&mut self, messages: &mut Vec<Message>, drop: &[bool]) -> Dropped {
        for (entry, _) in self.ledger.messages.iter().zip(drop).filter(|(_, out)| **out) {
            self.upper -= entry.known();
            self.lower -= entry.exact.unwrap_or(MESSAGE_OVERHEAD);
        }
        let mut flags = drop.iter();
        let (gone, kept) = std::mem::take(messages).into_iter().partition(|_| flags.next() == Some(&true));
        *messages = kept;
        let mut flags = drop.iter();
        self.ledger.messages.retain(|_| flags.next() != Some(&true));
        Dropped { messages: gone }
    }
}
