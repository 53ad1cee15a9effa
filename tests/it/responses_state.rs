//! Stored responses (GET, DELETE, `previous_response_id`, across replicas through
//! Redis) and the confirmation gate as approval request and response items.

use serde_json::{Value, json};

use crate::harness::*;
use crate::redis_server::RedisServer;
use crate::responses::{create, events, output_text, respond};
use crate::tools::{CAROL, agent_config, setup};

#[tokio::test]
async fn a_stored_response_is_fetched_and_deleted_only_by_its_key() {
    let (mock, _tools, lariat) = setup("tools = []").await;
    mock.push(Reply::text("Kept."));
    let made = respond(&lariat, json!({"model": "agent", "input": "Keep this"})).await;
    assert_eq!(made["store"], true);
    let path = format!("/v1/responses/{}", made["id"].as_str().unwrap());

    let fetched: Value = lariat.get(&path, Some(ALICE)).send().await.unwrap().json().await.unwrap();
    assert_eq!(fetched, made, "the same object as created");
    expect_error(lariat.get(&path, Some(CAROL)).send().await.unwrap(), 404, "response_not_found").await;
    let foreign = client().delete(format!("{}{path}", lariat.url)).bearer_auth(CAROL).send().await.unwrap();
    expect_error(foreign, 404, "response_not_found").await;
    let continued = json!({"model": "agent", "input": "more", "previous_response_id": made["id"]});
    expect_error(create(&lariat, CAROL, &continued).await, 404, "response_not_found").await;

    let deleted = client().delete(format!("{}{path}", lariat.url)).bearer_auth(ALICE).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    let deleted: Value = deleted.json().await.unwrap();
    assert_eq!(deleted, json!({"id": made["id"], "object": "response", "deleted": true}));
    expect_error(lariat.get(&path, Some(ALICE)).send().await.unwrap(), 404, "response_not_found").await;

    // `store: false` keeps nothing.
    mock.push(Reply::text("Gone."));
    let unkept = respond(&lariat, json!({"model": "agent", "input": "x", "store": false})).await;
    let path = format!("/v1/responses/{}", unkept["id"].as_str().unwrap());
    expect_error(lariat.get(&path, Some(ALICE)).send().await.unwrap(), 404, "response_not_found").await;
}

#[tokio::test]
async fn previous_response_id_continues_the_conversation_with_new_instructions() {
    let (mock, _tools, lariat) = setup("tools = []").await;
    mock.push(Reply::stream_with_usage(&["Paris."]));
    let first = json!({"model": "agent", "input": "Capital of France?", "instructions": "Old rules.", "stream": true});
    let events = events(&lariat, first).await;
    let id = events.last().unwrap()["response"]["id"].clone();
    mock.push(Reply::text("About 2 million."));
    let second = respond(
        &lariat,
        json!({"model": "agent", "input": "Population?", "previous_response_id": id,
                                         "instructions": "New rules."}),
    )
    .await;
    assert_eq!(output_text(&second), "About 2 million.");
    let messages = mock.last_body()["messages"].clone();
    assert_eq!(
        messages,
        json!([
            {"role": "system", "content": "New rules."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "Population?"}
        ]),
        "instructions are never carried over"
    );
}

/// Two replicas sharing one Redis: a response made on one is continued and fetched
/// on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_continue_on_another_replica_through_redis() {
    let Some(redis) = RedisServer::start().await else { return };
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let text = format!(
        "{}\n[store]\nkind = \"redis\"\nurl = \"{}\"\n",
        agent_config(&mock, &tools, "tools = []"),
        redis.url()
    );
    let (a, b) = (Lariat::start(&text).await, Lariat::start(&text).await);
    mock.push(Reply::text("One."));
    let first = respond(&a, json!({"model": "agent", "input": "Count"})).await;
    mock.push(Reply::text("Two."));
    let second = respond(&b, json!({"model": "agent", "input": "Next", "previous_response_id": first["id"]})).await;
    assert_eq!(output_text(&second), "Two.");
    assert_eq!(mock.last_body()["messages"][1]["content"], "One.", "replica b read a's conversation");
    let path = format!("/v1/responses/{}", second["id"].as_str().unwrap());
    let fetched: Value = a.get(&path, Some(ALICE)).send().await.unwrap().json().await.unwrap();
    assert_eq!(fetched["id"], second["id"]);
}

fn gate(mock: &MockUpstream, tools: &ToolServer) -> String {
    format!("{}\n[confirm]\ntools = [\"echo\"]\n", agent_config(mock, tools, "tools = [\"echo\"]"))
}

/// The model calls the gated `echo`; the response asks. Returns it.
async fn ask(lariat: &Lariat, mock: &MockUpstream, stream: bool, store: bool) -> Value {
    if stream {
        mock.push(Reply::stream_tool_calls(None, &[("up_1", "echo", r#"{"text": "hi"}"#)]));
        mock.push(Reply::stream_with_usage(&["Shall I echo hi?"]));
        let body = json!({"model": "agent", "input": "echo hi", "stream": true, "store": store});
        events(lariat, body).await.last().unwrap()["response"].clone()
    } else {
        mock.push(Reply::tool_calls(&[("up_1", "echo", r#"{"text": "hi"}"#)]));
        mock.push(Reply::text("Shall I echo hi?"));
        respond(lariat, json!({"model": "agent", "input": "echo hi", "store": store})).await
    }
}

fn approval(response: &Value) -> &Value {
    response["output"].as_array().unwrap().iter().find(|i| i["type"] == "mcp_approval_request").unwrap()
}

#[tokio::test]
async fn the_gate_asks_with_an_approval_request_that_an_approval_response_answers() {
    let (mock, tools) = (MockUpstream::start().await, ToolServer::start().await);
    let lariat = Lariat::start(&gate(&mock, &tools)).await;
    for stream in [false, true] {
        let asked = ask(&lariat, &mock, stream, true).await;
        assert_eq!(asked["status"], "completed");
        assert!(output_text(&asked).starts_with("Shall I echo hi?"), "{asked}");
        let request = approval(&asked);
        assert_eq!((request["name"].as_str(), request["server_label"].as_str()), (Some("echo"), Some("lariat")));
        assert_eq!(request["arguments"], r#"{"text": "hi"}"#);
        let before = tools.hits("/echo").len();

        mock.push(Reply::text("Echoed."));
        let answer = json!({"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": true});
        let done =
            respond(&lariat, json!({"model": "agent", "previous_response_id": asked["id"], "input": [answer.clone()]}))
                .await;
        assert_eq!(output_text(&done), "Echoed.");
        assert_eq!(tools.hits("/echo").len(), before + 1, "approved: the held call ran once");

        // The same approval again runs nothing.
        let again =
            respond(&lariat, json!({"model": "agent", "previous_response_id": asked["id"], "input": [answer]})).await;
        assert_eq!(tools.hits("/echo").len(), before + 1, "{again}");
    }
}

#[tokio::test]
async fn a_denial_or_a_typed_yes_without_storage() {
    let (mock, tools) = (MockUpstream::start().await, ToolServer::start().await);
    let lariat = Lariat::start(&gate(&mock, &tools)).await;
    let asked = ask(&lariat, &mock, false, true).await;
    mock.push(Reply::text("Cancelled."));
    let deny =
        json!({"type": "mcp_approval_response", "approval_request_id": approval(&asked)["id"], "approve": false});
    respond(&lariat, json!({"model": "agent", "previous_response_id": asked["id"], "input": [deny]})).await;
    assert!(tools.hits("/echo").is_empty(), "denied: nothing ran");
    let told = mock.last_body()["messages"].to_string();
    assert!(told.contains("denied"), "the model learns it was denied: {told}");

    // A client that keeps its own history (store: false) answers by typing "yes".
    let asked = ask(&lariat, &mock, true, false).await;
    mock.push(Reply::text("Echoed."));
    let mut input = vec![json!({"role": "user", "content": "echo hi"})];
    input.extend(asked["output"].as_array().unwrap().iter().cloned());
    input.push(json!({"role": "user", "content": "yes"}));
    let done = respond(&lariat, json!({"model": "agent", "input": input, "store": false})).await;
    assert_eq!(output_text(&done), "Echoed.");
    assert_eq!(tools.hits("/echo").len(), 1);

    // Another key's approval does not run it.
    let asked = ask(&lariat, &mock, false, false).await;
    mock.push(Reply::text("Whatever."));
    let mut input = vec![json!({"role": "user", "content": "echo hi"})];
    input.extend(asked["output"].as_array().unwrap().iter().cloned());
    input
        .push(json!({"type": "mcp_approval_response", "approval_request_id": approval(&asked)["id"], "approve": true}));
    let foreign = create(&lariat, CAROL, &json!({"model": "agent", "input": input, "store": false})).await;
    assert_eq!(foreign.status(), 200);
    assert_eq!(tools.hits("/echo").len(), 1, "only the key that was asked can approve");
}

/// A client that stores responses may refer to their output items by id.
#[tokio::test]
async fn item_references_resolve_to_the_key_s_own_stored_items() {
    let (mock, _tools, lariat) = setup("tools = []").await;
    mock.push(Reply::text("Noted: blue."));
    let first = respond(&lariat, json!({"model": "agent", "input": "My colour is blue."})).await;
    let said = first["output"][0]["id"].clone();
    mock.push(Reply::text("Blue."));
    let input = json!([{"role": "user", "content": "My colour is blue."}, {"type": "item_reference", "id": said},
                       {"role": "user", "content": "Which colour?"}]);
    respond(&lariat, json!({"model": "agent", "input": input.clone(), "store": false})).await;
    let messages = mock.last_body()["messages"].clone();
    let roles: Vec<&str> = messages.as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user"], "{messages}");
    assert_eq!(messages[1], json!({"role": "assistant", "content": "Noted: blue."}));

    let foreign = create(&lariat, CAROL, &json!({"model": "agent", "input": input})).await;
    let error = expect_error(foreign, 400, "invalid_request").await;
    assert_eq!(error["param"], "input[1].id", "another key's item does not exist for it");
    let made_up = json!({"model": "agent", "input": [{"type": "item_reference", "id": "msg_nothing"}]});
    expect_error(create(&lariat, ALICE, &made_up).await, 400, "invalid_request").await;
}

/// A store that refuses the response (here: too large for one entry) costs the
/// continuation, never the answer; streamed or not, the response says so.
#[tokio::test]
async fn a_response_the_store_refuses_is_answered_and_marked_unstored() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let text = format!("{}\n[store]\nmax_entry_bytes = 2048\n", agent_config(&mock, &tools, "tools = []"));
    let lariat = Lariat::start(&text).await;
    let long = "many words ".repeat(300);
    mock.push(Reply::text("Answered anyway."));
    let response = respond(&lariat, json!({"model": "agent", "input": long})).await;
    assert_eq!((output_text(&response).as_str(), response["store"].as_bool()), ("Answered anyway.", Some(false)));
    let path = format!("/v1/responses/{}", response["id"].as_str().unwrap());
    expect_error(lariat.get(&path, Some(ALICE)).send().await.unwrap(), 404, "response_not_found").await;

    mock.push(Reply::stream_with_usage(&["Streamed anyway."]));
    let events = events(&lariat, json!({"model": "agent", "input": long, "stream": true})).await;
    let done = &events.last().unwrap()["response"];
    assert_eq!((done["status"].as_str(), done["store"].as_bool()), (Some("completed"), Some(false)));
    assert_eq!(events[0]["response"]["store"], true, "the intent, before the store refused");
}

/// Stored responses count toward their key's share of the store: a key that fills
/// its own share stops storing, everyone else still stores.
#[tokio::test]
async fn one_key_s_stored_responses_cannot_fill_the_store_for_others() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let store = "[store]\nmax_entry_bytes = 4096\nmax_bytes_per_key = 8192\n";
    let lariat = Lariat::start(&format!("{}\n{store}", agent_config(&mock, &tools, "tools = []"))).await;
    mock.always(Reply::text("Noted."));
    let note = "a note of some length ".repeat(60);
    let mut stored = 0;
    loop {
        let response = respond(&lariat, json!({"model": "agent", "input": note})).await;
        if response["store"] == false {
            break;
        }
        stored += 1;
        assert!(stored < 10, "the share never filled");
    }
    assert!(stored >= 2, "{stored}");
    let theirs = create(&lariat, CAROL, &json!({"model": "agent", "input": note})).await;
    let theirs: Value = theirs.json().await.unwrap();
    assert_eq!(theirs["store"], true, "another key still stores");
}
