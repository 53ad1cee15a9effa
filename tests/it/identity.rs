//! Forwarded identity: Open WebUI connects with one key for all its people; lariat
//! takes each person from the headers it forwards, for access, audit and who may
//! answer a confirmation.

use serde_json::{Value, json};

use crate::harness::*;
use crate::tools::{agent_config, ask};

const WEBUI: &str = "sk-webui-0123456789";

async fn setup() -> (MockUpstream, ToolServer, Lariat) {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let text = format!(
        "{}\n[confirm]\ntools = [\"echo\"]\n\n[[keys]]\nkey = \"{WEBUI}\"\nuser = \"open-webui\"\naccess = \"admin\"\n\
         forwarded_identity = \"openwebui\"\nrole_access = {{ admin = \"admin\", user = \"user\" }}\n",
        agent_config(&mock, &tools, "")
    );
    (mock, tools, Lariat::start(&text).await)
}

async fn as_person(lariat: &Lariat, key: &str, email: &str, role: &str, body: &Value) -> reqwest::Response {
    lariat
        .post("/v1/chat/completions", Some(key))
        .header("X-OpenWebUI-User-Email", email)
        .header("X-OpenWebUI-User-Role", role)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn offered(body: &Value) -> Vec<&str> {
    body["tools"].as_array().into_iter().flatten().filter_map(|t| t["function"]["name"].as_str()).collect()
}

#[tokio::test]
async fn each_person_gets_their_role_s_tools_and_their_own_usage() {
    let (mock, _tools, lariat) = setup().await;
    mock.push(Reply::text("hi user"));
    mock.push(Reply::text("hi admin"));
    as_person(&lariat, WEBUI, "alice@example.com", "user", &ask("hi")).await;
    as_person(&lariat, WEBUI, "root@example.com", "admin", &ask("hi")).await;
    let received = mock.received();
    assert!(!offered(&received[0].body).contains(&"secret_ops"), "a user is not offered admin tools");
    assert!(offered(&received[1].body).contains(&"secret_ops"));
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"lariat_tokens_total{user="alice@example.com",model="agent""#), "{metrics}");
    assert!(metrics.contains(r#"lariat_tokens_total{user="root@example.com",model="agent""#), "{metrics}");

    // Another key's headers are ignored: ALICE's key stays alice.
    mock.push(Reply::text("hi"));
    as_person(&lariat, ALICE, "root@example.com", "admin", &ask("hi")).await;
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"lariat_tokens_total{user="alice",model="agent""#), "{metrics}");
}

#[tokio::test]
async fn only_the_person_who_was_asked_can_say_yes() {
    let (mock, tools, lariat) = setup().await;
    mock.push(Reply::tool_calls(&[("up_1", "echo", r#"{"text": "hi"}"#)]));
    mock.push(Reply::text("Shall I echo hi?"));
    let question: Value =
        as_person(&lariat, WEBUI, "alice@example.com", "user", &ask("echo hi")).await.json().await.unwrap();
    let asked = question["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let reply = json!({"model": "agent", "messages": [
        {"role": "user", "content": "echo hi"},
        {"role": "assistant", "content": asked},
        {"role": "user", "content": "yes"}
    ]});

    mock.push(Reply::text("I can't do that for you."));
    let mallory: Value = as_person(&lariat, WEBUI, "mallory@example.com", "admin", &reply).await.json().await.unwrap();
    assert_eq!(mallory["choices"][0]["message"]["content"], "I can't do that for you.", "an ordinary message");
    assert!(tools.hits("/echo").is_empty(), "another person's yes runs nothing");

    mock.push(Reply::text("Echoed."));
    let alice: Value = as_person(&lariat, WEBUI, "alice@example.com", "user", &reply).await.json().await.unwrap();
    assert_eq!(alice["choices"][0]["message"]["content"], "Echoed.");
    assert_eq!(tools.hits("/echo").len(), 1);
}

async fn in_chat(lariat: &Lariat, chat: &str, body: &Value) -> Value {
    let response = lariat
        .post("/v1/chat/completions", Some(WEBUI))
        .header("X-OpenWebUI-User-Email", "alice@example.com")
        .header("X-OpenWebUI-User-Role", "user")
        .header("X-OpenWebUI-Chat-Id", chat)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Asks `text` in `chat`; the held call is always `echo {"text": "hi"}`.
async fn question(lariat: &Lariat, mock: &MockUpstream, chat: &str, text: &str) -> Value {
    mock.push(Reply::tool_calls(&[("up_1", "echo", r#"{"text": "hi"}"#)]));
    mock.push(Reply::text("Shall I echo hi?"));
    let asked = in_chat(lariat, chat, &ask(text)).await;
    let asked = asked["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(asked.contains("lariat:confirm:"), "{asked}");
    json!({"model": "agent", "messages": [
        {"role": "user", "content": text},
        {"role": "assistant", "content": asked},
        {"role": "user", "content": "yes"}
    ]})
}

/// Open WebUI's chat id is the conversation: two chats with the same words hold two
/// questions (a yes in each runs the action once in each), while a second branch of
/// one chat (an edited question) supersedes the first branch's question.
#[tokio::test]
async fn the_chat_id_is_the_conversation_a_question_belongs_to() {
    let (mock, tools, lariat) = setup().await;
    let yes_a = question(&lariat, &mock, "chat-a", "echo hi").await;
    let yes_b = question(&lariat, &mock, "chat-b", "echo hi").await;
    let yes_c1 = question(&lariat, &mock, "chat-c", "echo hi").await;
    let yes_c2 = question(&lariat, &mock, "chat-c", "please echo hi").await;

    for (yes, chat, ran) in [(&yes_a, "chat-a", 1), (&yes_b, "chat-b", 2), (&yes_c2, "chat-c", 3)] {
        mock.push(Reply::text("Echoed."));
        let answer = in_chat(&lariat, chat, yes).await;
        assert_eq!(answer["choices"][0]["message"]["content"], "Echoed.", "{chat}: {answer}");
        assert_eq!(tools.hits("/echo").len(), ran, "{chat}");
    }
    // The first branch of chat C was superseded by the second: its yes runs nothing,
    // and lariat says so itself.
    let answer = in_chat(&lariat, "chat-c", &yes_c1).await;
    let said = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(said.starts_with("A newer question replaced this one, so nothing was run"), "{said}");
    assert_eq!(tools.hits("/echo").len(), 3, "the action ran twice in one chat");
}
