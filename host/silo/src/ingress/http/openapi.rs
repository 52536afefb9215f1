//! The gateway described as one OpenAPI 3.1 document: a call and a send
//! operation for each deployed service type, with the status table's
//! errors. `GET /v1/openapi.json` serves it, and the wire request
//! `OpenApi` answers it (what `rio describe` prints).
//!
//! A component describes no message schemas yet (WIT 0.1.0, and 0.2.0 so
//! far), so each type's message is a path parameter and its body and reply
//! are any JSON ("opaque"); the type's content hash says which version the
//! document was made from.

use rio_protocol::DeploymentInfo;
use serde_json::{Map, Value, json};

use super::status::STATUS_TABLE;

/// The document for `deployments` (every deployed type, or the one asked).
pub(crate) fn document(deployments: &[DeploymentInfo]) -> Value {
    let mut paths = Map::new();
    for deployment in deployments {
        let service_type = &deployment.service_type;
        paths.insert(
            format!("/v1/objects/{service_type}/{{id}}/{{message}}"),
            json!({ "post": call_operation(deployment, false) }),
        );
        paths.insert(
            format!("/v1/objects/{service_type}/{{id}}/{{message}}/send"),
            json!({ "post": call_operation(deployment, true) }),
        );
    }
    let tags: Vec<Value> = deployments
        .iter()
        .map(|deployment| {
            json!({
                "name": deployment.service_type,
                "description": format!(
                    "Objects of type {}, component sha256 {} ({} bytes)",
                    deployment.service_type, deployment.content_hash, deployment.component_bytes
                ),
            })
        })
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "rio service objects",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Calls to the service objects deployed on this rio cluster, \
                through any silo's HTTP gateway. Messages and replies are JSON; \
                components that describe no schemas take and give any JSON.",
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The silo's call token (none on a silo without tokens)",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["kind", "message"],
                            "properties": {
                                "kind": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            },
            "responses": error_responses(),
        },
        "security": [{"bearer": []}, {}],
    })
}

/// One type's call (or, `send`, one-way send) operation.
fn call_operation(deployment: &DeploymentInfo, send: bool) -> Value {
    let service_type = &deployment.service_type;
    let mut responses = Map::new();
    if send {
        responses.insert(
            "202".into(),
            json!({"description": "Stored: it will be delivered once (no reply)"}),
        );
    } else {
        responses.insert(
            "200".into(),
            json!({
                "description": "The handler's reply",
                "content": {"application/json": {"schema": {}}},
            }),
        );
    }
    for (status, _) in STATUS_TABLE {
        responses.insert(
            status.to_string(),
            json!({"$ref": format!("#/components/responses/Error{status}")}),
        );
    }
    let (verb, what) = if send {
        ("send", "Sends a one-way message to")
    } else {
        ("call", "Sends a message to")
    };
    json!({
        "operationId": format!("{service_type}_{verb}"),
        "tags": [service_type],
        "summary": format!("{what} a {service_type} object"),
        "parameters": [
            {
                "name": "id", "in": "path", "required": true,
                "description": "The object's id",
                "schema": {"type": "string", "minLength": 1},
            },
            {
                "name": "message", "in": "path", "required": true,
                "description": "The message type, e.g. `get`",
                "schema": {"type": "string", "minLength": 1},
            },
            {
                "name": "Idempotency-Key", "in": "header", "required": false,
                "description": "Calls with the same key take effect once; a retry gets the stored outcome",
                "schema": {"type": "string"},
            },
            {
                "name": "Request-Timeout", "in": "header", "required": false,
                "description": "The caller's deadline in milliseconds (capped by the silo's)",
                "schema": {"type": "integer", "minimum": 1},
            },
        ],
        "requestBody": {
            "required": false,
            "description": "The message as JSON; empty for a message without one",
            "content": {"application/json": {"schema": {}}},
        },
        "responses": responses,
    })
}

/// One response per status of the table, naming its kinds.
fn error_responses() -> Value {
    let mut responses = Map::new();
    for (status, kinds) in STATUS_TABLE {
        let mut response = json!({
            "description": kinds.join(", "),
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
            },
        });
        if matches!(status, 429 | 503) {
            response["headers"] = json!({
                "Retry-After": {
                    "description": "Seconds to wait before trying again",
                    "schema": {"type": "integer"},
                },
            });
        }
        responses.insert(format!("Error{status}"), response);
    }
    Value::Object(responses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_has_a_call_and_a_send_with_every_status_of_the_table() {
        let counter = DeploymentInfo {
            service_type: "Counter".into(),
            content_hash: "ab".repeat(32),
            component_bytes: 100,
        };
        let document = document(&[counter]);
        assert_eq!(document["openapi"], "3.1.0");
        let call = &document["paths"]["/v1/objects/Counter/{id}/{message}"]["post"];
        assert_eq!(call["operationId"], "Counter_call");
        assert!(call["responses"]["200"].is_object());
        let send = &document["paths"]["/v1/objects/Counter/{id}/{message}/send"]["post"];
        assert!(send["responses"]["202"].is_object());
        for (status, _) in STATUS_TABLE {
            let reference = format!("#/components/responses/Error{status}");
            assert_eq!(call["responses"][status.to_string()]["$ref"], reference);
            let name = format!("Error{status}");
            assert!(document["components"]["responses"][&name].is_object());
        }
    }
}
