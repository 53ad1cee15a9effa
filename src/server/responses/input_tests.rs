use serde_json::json;

use super::*;

fn request(body: Value) -> ResponsesRequest {
    serde_json::from_value(body).unwrap()
}

#[test]
fn calls_after_the_assistant_s_words_join_its_turn() {
    let body = json!({"model": "m", "input": [
        {"role": "user", "content": "go"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "On it."}]},
        {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "b", "arguments": "{\"x\":1}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "item_reference", "id": "rs_2"}
    ]});
    let Translated { chat, instructions } = translate(&request(body), Vec::new()).unwrap();
    let messages = serde_json::to_value(&chat.messages).unwrap();
    assert_eq!(
        messages,
        json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "On it.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{\"x\":1}"}}
            ]},
            {"role": "tool", "content": "one", "tool_call_id": "c1"},
            {"role": "tool", "content": "two", "tool_call_id": "c2"}
        ])
    );
    assert_eq!(instructions, 0, "no instructions were given");
}

#[test]
fn approvals_name_their_checkpoint_and_one_no_denies_all() {
    let id = "0123456789abcdef0123456789abcdef";
    let approve = |n: u32, yes: bool| json!({"type": "mcp_approval_response", "approval_request_id": format!("mcpr_{id}_{n}"), "approve": yes});
    let body = json!({"model": "m", "previous_response_id": "resp_1", "input": [approve(0, true), approve(1, false)]});
    let history = vec![Message::new(Role::User, "delete both")];
    let Translated { chat, .. } = translate(&request(body), history).unwrap();
    assert_eq!(chat.rest["lariat"], json!({"confirm": {"id": id, "approve": false}}));
    assert_eq!(chat.messages.len(), 1, "the history only: an approval is no message");
    assert_eq!(checkpoint_of("mcpr_abc_0"), Some("abc"));
    assert_eq!(checkpoint_of("fc_abc"), None);
}

#[test]
fn tool_choice_and_sampling_take_their_chat_names() {
    let body = json!({"model": "m", "input": "hi", "tool_choice": {"type": "function", "name": "f"},
        "top_p": 0.5, "parallel_tool_calls": false, "user": "u1", "top_logprobs": 2, "seed": 3,
        "truncation": "auto", "include": ["x"], "text": {"format": {"type": "text"}, "verbosity": "low"}});
    let chat = translate(&request(body), Vec::new()).unwrap().chat;
    assert_eq!(chat.tool_choice, Some(json!({"type": "function", "function": {"name": "f"}})));
    let rest = Value::Object(chat.rest);
    assert_eq!(
        rest,
        json!({"top_p": 0.5, "parallel_tool_calls": false, "user": "u1", "logprobs": true, "top_logprobs": 2,
               "seed": 3, "verbosity": "low"}),
        "fields without a Chat meaning (truncation, include) stay behind"
    );
}
