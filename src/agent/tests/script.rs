//! A scripted in-memory upstream and a loop built around it: the engine's tests talk
//! to no socket and run on tokio's paused clock.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::agent::{Agent, Event, Events, Settings, Turn};
use crate::auth::{Caller, Keys};
use crate::config::{ChainEntry, Config};
use crate::openai::{ChatCompletion, ChatRequest, Reading, StreamChunk};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::tools::{Registry, Tool};
use crate::upstream::{self, Answered, Attempt, Failure, Fit, History, Model, Params, Reply, Route};

/// One scripted upstream answer.
pub enum Answer {
    /// A whole completion with this assistant message.
    Complete(Value),
    /// Streamed deltas (as `chat.completion.chunk`s), then a finish reason.
    Chunks(Vec<Value>, &'static str),
    /// Streamed deltas, then the connection breaks.
    Cut(Vec<Value>),
    /// Every target failed.
    Fail,
    /// Another answer, after a pause.
    After(Duration, Box<Answer>),
}

pub fn text(content: &str) -> Answer {
    Answer::Complete(json!({"role": "assistant", "content": content}))
}

/// An assistant message calling `calls` (`(name, arguments)`), ids `up_0`, `up_1`, ….
pub fn calls(calls: &[(&str, &str)]) -> Answer {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| json!({"id": format!("up_{i}"), "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    Answer::Complete(json!({"role": "assistant", "content": null, "tool_calls": calls}))
}

pub fn stream(pieces: &[&str]) -> Answer {
    let mut deltas = vec![json!({"role": "assistant", "content": ""})];
    deltas.extend(pieces.iter().map(|p| json!({"content": p})));
    Answer::Chunks(deltas, "stop")
}

/// What one upstream call was sent.
#[derive(Debug, Clone)]
pub struct Received {
    /// The target called (the first of the chain).
    pub target: String,
    pub messages: Value,
    pub tools: Vec<String>,
    pub tool_choice: Option<Value>,
    pub stream: bool,
}

impl Received {
    /// The message at `index` (negative: from the end).
    pub fn message(&self, index: isize) -> &Value {
        let all = self.messages.as_array().map(Vec::as_slice).unwrap_or_default();
        let at = if index < 0 { all.len().wrapping_add_signed(index) } else { index.unsigned_abs() };
        all.get(at).unwrap_or(&Value::Null)
    }
}

#[derive(Debug, Default)]
pub struct Script {
    answers: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<Received>>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answer")
    }
}

impl Script {
    pub fn push(&self, answer: Answer) {
        self.answers.lock().unwrap().push_back(answer);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn left(&self) -> usize {
        self.answers.lock().unwrap().len()
    }
}

fn completion(message: Value, finish: &str) -> ChatCompletion {
    serde_json::from_value(json!({
        "id": "up", "model": "model-a", "object": "chat.completion", "created": 1,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    }))
    .unwrap()
}

/// A chunk read as the engine asked (so relayed rounds are driven with relayed chunks).
fn chunk(delta: Value, finish: Option<&str>, reading: Reading) -> StreamChunk {
    let json = json!({"id": "up", "object": "chat.completion.chunk", "model": "model-a",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    StreamChunk::read(json.to_string().into(), reading).unwrap()
}

fn failed(target: &ChainEntry) -> upstream::Error {
    let failure = Failure::Status { status: 503, message: "busy".into(), code: None, param: None, retry_after: None };
    upstream::Error::Failed(vec![Attempt { target: target.label().to_owned(), failure }])
}

async fn reply(answer: Answer, target: &ChainEntry, stream: bool, reading: Reading) -> Result<Reply, upstream::Error> {
    match answer {
        Answer::After(pause, answer) => {
            tokio::time::sleep(pause).await;
            Box::pin(reply(*answer, target, stream, reading)).await
        }
        Answer::Fail => Err(failed(target)),
        Answer::Complete(message) => {
            let finish = if message.get("tool_calls").is_some() { "tool_calls" } else { "stop" };
            Ok(Reply::Complete(completion(message, finish)))
        }
        Answer::Chunks(deltas, finish) => {
            let mut chunks: Vec<_> = deltas.into_iter().map(|d| Ok(chunk(d, None, reading))).collect();
            chunks.push(Ok(chunk(json!({}), Some(finish), reading)));
            Ok(Reply::Stream(Box::pin(futures::stream::iter(chunks))))
        }
        Answer::Cut(deltas) => {
            let mut chunks: Vec<_> = deltas.into_iter().map(|d| Ok(chunk(d, None, reading))).collect();
            chunks.push(Err(Failure::Stream("connection reset".into())));
            Ok(Reply::Stream(Box::pin(futures::stream::iter(chunks))))
        }
    }
}

impl Model for Script {
    fn call<'a>(
        &'a self,
        chain: &'a [ChainEntry],
        route: &'a mut Route,
        history: &'a mut dyn History,
        params: &'a Params<'a>,
        stream: bool,
    ) -> BoxFuture<'a, Result<Answered, upstream::Error>> {
        Box::pin(async move {
            let target = &chain[0];
            history.fit(target, Fit::Budget).await.map_err(|_| failed(target))?;
            let tools = params.tools.iter().chain(params.client_tools).map(|t| t.function.name.clone()).collect();
            self.received.lock().unwrap().push(Received {
                target: target.label().to_owned(),
                messages: serde_json::to_value(history.messages()).unwrap(),
                tools,
                tool_choice: params.tool_choice.cloned(),
                stream,
            });
            let answer = self.answers.lock().unwrap().pop_front().unwrap_or(Answer::Fail);
            let reply = reply(answer, target, stream, params.reading).await?;
            route.stick_to(0);
            Ok(Answered { target: target.clone(), reply, attempts: 1 })
        })
    }
}

/// A loop over the scripted upstream, with `tools` and the config `extra` adds
/// (e.g. a `[confirm]` table).
pub struct Rig {
    pub agent: Arc<Agent>,
    pub script: Arc<Script>,
    pub config: Config,
    pub caller: Arc<Caller>,
}

impl Rig {
    pub fn new(tools: Vec<Tool>, extra: &str) -> Self {
        let text = format!(
            "[providers.mock]\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[models.m]\nchain = [\"mock/model-a\"]\nmax_rounds = 3\n\n{extra}"
        );
        let config = Config::from_toml(Path::new("test.toml"), &text, &|_| None).unwrap();
        let script = Arc::new(Script::default());
        let metrics = Arc::new(Metrics::default());
        let agent = Arc::new(Agent {
            upstream: script.clone(),
            tools: Registry::of(tools),
            store: Store::from_config(&config.store).unwrap(),
            metrics,
            settings: Settings::from_config(&config),
            summarizer: None,
        });
        let caller = Keys::new(&[]).authenticate(None).unwrap();
        Self { agent, script, config, caller }
    }

    /// A request for model `m`, or for the model the body names.
    pub fn request(&self, body: Value) -> Turn {
        let mut body = body;
        let name = body["model"].as_str().unwrap_or("m").to_owned();
        body["model"] = json!(name);
        let request: ChatRequest = serde_json::from_value(body).unwrap();
        let model = self.config.models[&name].clone();
        Turn { caller: self.caller.clone(), model, request, off_record: false }
    }

    pub async fn events(&self, body: Value) -> Events {
        self.agent.run(self.request(body)).await.unwrap()
    }

    /// Every event of a request, in order.
    pub async fn run(&self, body: Value) -> Vec<Event> {
        self.events(body).await.collect().await
    }
}

/// A user message.
pub fn ask(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}
