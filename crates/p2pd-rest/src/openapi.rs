//! `/openapi.json`: the API described in OpenAPI 3.0, generated from one
//! table so the description and the router are checked against each
//! other (see the tests).

use serde_json::{Map, Value, json};

use crate::route::{MAX_NAME, MAX_PATTERN, MAX_RECV_TIMEOUT};

/// Control characters (C0, DEL, C1) are refused in names.
const NO_CONTROLS: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$";

/// What an operation answers with on success.
#[derive(Clone, Copy)]
enum Answer {
    Json,
    Bytes,
    Switch,
}

/// One operation: method, path template, summary, success answer.
const OPERATIONS: &[(&str, &str, &str, Answer)] = &[
    (
        "get",
        "/version",
        "Name and version of the server.",
        Answer::Json,
    ),
    (
        "get",
        "/status",
        "Address, NAT per interface, brokers, uptime and counters.",
        Answer::Json,
    ),
    ("get", "/openapi.json", "This description.", Answer::Json),
    (
        "get",
        "/p2p/addr",
        "This node's peer address.",
        Answer::Json,
    ),
    ("get", "/p2p/cons", "Every open connection.", Answer::Json),
    (
        "get",
        "/p2p/open/{name}/{addr}",
        "Connect to a peer address (or `self`) under a new name; it is subscribed to every message.",
        Answer::Json,
    ),
    (
        "get",
        "/p2p/con/{name}",
        "A connection's info.",
        Answer::Json,
    ),
    (
        "get",
        "/p2p/close/{name}",
        "Close a connection.",
        Answer::Json,
    ),
    (
        "get",
        "/p2p/send/{name}/{text}",
        "Send UTF-8 text.",
        Answer::Json,
    ),
    (
        "get",
        "/p2p/recv/{name}",
        "The next message of the everything-subscription, as text.",
        Answer::Json,
    ),
    (
        "get",
        "/p2p/recv/{name}/timeout/{timeout}",
        "As above, waiting up to `timeout` seconds.",
        Answer::Json,
    ),
    (
        "get",
        "/p2p/recv/{name}/msg_p/{msg_p}/addr_p/{addr_p}",
        "The next message of a subscription.",
        Answer::Json,
    ),
    (
        "get",
        "/p2p/recv/{name}/msg_p/{msg_p}/addr_p/{addr_p}/timeout/{timeout}",
        "As above, waiting up to `timeout` seconds.",
        Answer::Json,
    ),
    (
        "post",
        "/p2p/binary/{name}",
        "Send the request body as is.",
        Answer::Json,
    ),
    (
        "get",
        "/p2p/binary/{name}",
        "The next message, as raw bytes.",
        Answer::Bytes,
    ),
    (
        "get",
        "/p2p/binary/{name}/timeout/{timeout}",
        "As above, waiting up to `timeout` seconds.",
        Answer::Bytes,
    ),
    (
        "get",
        "/p2p/binary/{name}/msg_p/{msg_p}/addr_p/{addr_p}",
        "The next message of a subscription, as raw bytes.",
        Answer::Bytes,
    ),
    (
        "get",
        "/p2p/pipe/{name}",
        "Turn this HTTP connection into a raw two-way relay (with `Upgrade`, after a 101; without, at once and with no answer, if it is the connection's first request).",
        Answer::Switch,
    ),
    (
        "get",
        "/p2p/sub/{name}",
        "Subscribe to every message (already done by open).",
        Answer::Json,
    ),
    (
        "get",
        "/p2p/sub/{name}/msg_p/{msg_p}/addr_p/{addr_p}",
        "Subscribe to messages matching both patterns.",
        Answer::Json,
    ),
    (
        "delete",
        "/p2p/sub/{name}",
        "Unsubscribe the everything-subscription.",
        Answer::Json,
    ),
    (
        "delete",
        "/p2p/sub/{name}/msg_p/{msg_p}/addr_p/{addr_p}",
        "Unsubscribe a subscription.",
        Answer::Json,
    ),
];

/// The description.
pub fn document() -> Value {
    let mut paths = Map::new();
    for &(method, path, summary, answer) in OPERATIONS {
        let entry = paths.entry(path.to_owned()).or_insert_with(|| json!({}));
        entry[method] = operation(method, path, summary, answer);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "p2pd REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Compatible with the P2PD manual's REST API. Path segments are percent-decoded one by one (an encoded / stays in its segment). Browser requests need a loopback Origin or the X-P2PD-Token header; see docs/rest.md.",
        },
        "servers": [{ "url": "http://127.0.0.1:12333" }],
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "msg"],
                    "properties": {
                        "error": { "type": "integer", "minimum": 1 },
                        "msg": { "type": "string" },
                    },
                },
                "Ok": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "integer", "enum": [0] } },
                },
            },
            "securitySchemes": {
                "token": { "type": "apiKey", "in": "header", "name": "X-P2PD-Token" },
            },
        },
    })
}

fn operation(method: &str, path: &str, summary: &str, answer: Answer) -> Value {
    let params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(parameter)
        .collect();
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let error_response = json!({
        "description": "An error: `error` is its number (docs/rest.md).",
        "content": { "application/json": { "schema": error } },
    });
    let success = match answer {
        Answer::Json => json!({
            "200": {
                "description": "Done.",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Ok" } } },
            }
        }),
        Answer::Bytes => json!({
            "200": {
                "description": "The message; `x-client-tup` names its sender.",
                "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } },
            }
        }),
        Answer::Switch => json!({
            "101": { "description": "The connection is now a relay." },
        }),
    };
    let mut responses = success;
    for status in [
        "400", "403", "404", "405", "409", "410", "413", "414", "502", "503", "504",
    ] {
        responses[status] = error_response.clone();
    }
    let id = format!(
        "{method}_{}",
        path.trim_start_matches('/')
            .replace(['/', '.'], "_")
            .replace(['{', '}'], "")
    );
    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "parameters": params,
        "responses": responses,
    });
    if method == "post" {
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } },
        });
    }
    op
}

fn parameter(name: &str) -> Value {
    let schema = match name {
        "name" => json!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_NAME,
            "pattern": NO_CONTROLS,
        }),
        "timeout" => {
            json!({ "type": "number", "minimum": 0, "maximum": MAX_RECV_TIMEOUT.as_secs() })
        }
        "msg_p" | "addr_p" => json!({ "type": "string", "maxLength": MAX_PATTERN }),
        "addr" => json!({ "type": "string", "description": "A peer address, or `self`." }),
        _ => json!({ "type": "string", "minLength": 1 }),
    };
    json!({ "name": name, "in": "path", "required": true, "schema": schema })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Method, route};

    #[test]
    fn every_described_operation_is_routed() {
        for &(method, path, _, _) in OPERATIONS {
            let concrete = path
                .replace("{name}", "c")
                .replace("{addr}", "self")
                .replace("{text}", "hi")
                .replace("{timeout}", "1")
                .replace("{msg_p}", "m")
                .replace("{addr_p}", "a");
            let method = match method {
                "get" => Method::Get,
                "post" => Method::Post,
                "delete" => Method::Delete,
                other => panic!("method {other}"),
            };
            assert!(route(method, &concrete).is_ok(), "{path}");
        }
        let doc = document();
        assert_eq!(doc["paths"].as_object().map(Map::len), Some(19));
    }
}
