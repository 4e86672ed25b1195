//! The OpenAPI 3.1 document served at `/openapi.json`. Written by hand next to the router; a test
//! checks that its paths and methods are exactly the router's routes.

use serde_json::{json, Value};

fn problem_responses(extra: &[(&str, &str)]) -> Value {
    let mut responses = serde_json::Map::new();
    for (status, description) in extra {
        responses.insert(
            status.to_string(),
            json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}),
        );
    }
    Value::Object(responses)
}

fn rest_error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RestError"}}}})
}

fn param(name: &str, location: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "schema": schema, "description": description})
}

/// The whole document.
pub(crate) fn document() -> Value {
    let topic = param("topic", "path", json!({"type": "string"}), "Topic name");
    let cluster = param(
        "cluster_id",
        "path",
        json!({"type": "string"}),
        "Cluster id (GET /v3/clusters)",
    );
    let v2_media = json!({
        "application/vnd.kafka.json.v2+json": {"schema": {"$ref": "#/components/schemas/V2ProduceRequest"}},
        "application/vnd.kafka.binary.v2+json": {"schema": {"$ref": "#/components/schemas/V2ProduceRequest"}},
        "application/vnd.kafka.text.v2+json": {"schema": {"$ref": "#/components/schemas/V2ProduceRequest"}},
    });
    let v2_produce_responses = json!({
        "200": {"description": "Durable; one offsets[] entry per record (per-record error_code 1 = not retriable, 2 = retriable)",
                "content": {"application/vnd.kafka.v2+json": {"schema": {"$ref": "#/components/schemas/V2ProduceResponse"}}}},
        "400": rest_error("Malformed JSON or empty body"),
        "404": rest_error("Unknown topic (40401) or partition (40402)"),
        "413": rest_error("Body over the limit"),
        "415": rest_error("Unsupported Content-Type"),
        "422": rest_error("Invalid record (42206): bad base64, wrong type, duplicate header, schemas"),
        "503": rest_error("In-flight byte budget full (Retry-After)"),
    });
    let mut native_responses = problem_responses(&[
        ("400", "Malformed JSON/NDJSON, empty body, missing CloudEvents attributes, bad query or key"),
        ("404", "Unknown topic (auto-creation off) or partition"),
        ("409", "A request with this Idempotency-Key is still in progress"),
        ("413", "Body or event count over the limit, or an event over max.message.bytes"),
        ("415", "Unsupported Content-Type"),
        ("422", "Invalid event (e.g. bad data_base64) or Idempotency-Key reused with a different request"),
        ("500", "The write failed; nothing of this request was acknowledged"),
        ("503", "In-flight byte budget full or shutting down (Retry-After)"),
    ]);
    native_responses["200"] = json!({
        "description": "Every event is durable (after the WAL commit)",
        "headers": {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}, "description": "Present when answered from the idempotency store"}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NativeResponse"}}}
    });
    native_responses["207"] = json!({
        "description": "Some events failed: status per event; the others are durable",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NativeResponse"}}}
    });
    let v3_errors = |ok: Value| {
        let mut responses = json!({
            "400": rest_error("Malformed JSON"),
            "404": rest_error("Unknown cluster (404) or topic (40401)"),
            "413": rest_error("Body over the limit"),
            "415": rest_error("Content-Type is not application/json"),
            "422": rest_error("Invalid record (42206)"),
            "503": rest_error("In-flight byte budget full (Retry-After)"),
        });
        if let (Value::Object(map), Value::Object(ok)) = (&mut responses, ok) {
            map.extend(ok);
        }
        responses
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Sluice HTTP ingest",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST-Proxy-compatible (v2, v3) and native produce endpoints. A success answer means the records are durable in the WAL.",
        },
        "paths": {
            "/topics": {
                "get": {"operationId": "v2ListTopics", "summary": "List topic names (REST Proxy v2)",
                        "responses": {"200": {"description": "Topic names", "content": {"application/vnd.kafka.v2+json": {"schema": {"type": "array", "items": {"type": "string"}}}}}}}
            },
            "/topics/{topic}": {
                "get": {"operationId": "v2GetTopic", "summary": "Describe a topic (REST Proxy v2)", "parameters": [topic],
                        "responses": {"200": {"description": "Topic", "content": {"application/vnd.kafka.v2+json": {"schema": {"type": "object"}}}}, "404": rest_error("Unknown topic (40401)")}},
                "post": {"operationId": "v2Produce", "summary": "Produce records (REST Proxy v2)", "parameters": [topic],
                         "requestBody": {"required": true, "content": v2_media},
                         "responses": v2_produce_responses}
            },
            "/topics/{topic}/partitions/{partition}": {
                "post": {"operationId": "v2ProducePartition", "summary": "Produce records to one partition (REST Proxy v2)",
                         "parameters": [topic, param("partition", "path", json!({"type": "integer"}), "Partition")],
                         "requestBody": {"required": true, "content": v2_media},
                         "responses": v2_produce_responses}
            },
            "/v3/clusters": {
                "get": {"operationId": "v3ListClusters", "summary": "List clusters (REST Proxy v3)",
                        "responses": {"200": {"description": "KafkaClusterList", "content": {"application/json": {"schema": {"type": "object"}}}}}}
            },
            "/v3/clusters/{cluster_id}": {
                "get": {"operationId": "v3GetCluster", "summary": "Get the cluster (REST Proxy v3)", "parameters": [cluster],
                        "responses": {"200": {"description": "KafkaCluster", "content": {"application/json": {"schema": {"type": "object"}}}}, "404": rest_error("Unknown cluster")}}
            },
            "/v3/clusters/{cluster_id}/topics": {
                "get": {"operationId": "v3ListTopics", "summary": "List topics (REST Proxy v3)", "parameters": [cluster],
                        "responses": {"200": {"description": "KafkaTopicList", "content": {"application/json": {"schema": {"type": "object"}}}}, "404": rest_error("Unknown cluster")}}
            },
            "/v3/clusters/{cluster_id}/topics/{topic}": {
                "get": {"operationId": "v3GetTopic", "summary": "Get a topic (REST Proxy v3)", "parameters": [cluster, topic],
                        "responses": {"200": {"description": "KafkaTopic", "content": {"application/json": {"schema": {"type": "object"}}}}, "404": rest_error("Unknown cluster or topic (40401)")}}
            },
            "/v3/clusters/{cluster_id}/topics/{topic}/records": {
                "post": {"operationId": "v3Produce", "summary": "Produce one record, or stream concatenated JSON records (one delivery report per record, in order)",
                         "parameters": [cluster, topic],
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V3Record"}}}},
                         "responses": v3_errors(json!({"200": {"description": "Delivery report (single record), or a stream of reports", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V3Report"}}}}}))}
            },
            "/v3/clusters/{cluster_id}/topics/{topic}/records:batch": {
                "post": {"operationId": "v3ProduceBatch", "summary": "Produce a batch of records (REST Proxy v3)",
                         "parameters": [cluster, topic],
                         "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["entries"], "properties": {"entries": {"type": "array", "items": {"allOf": [{"$ref": "#/components/schemas/V3Record"}, {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}]}}}}}}},
                         "responses": v3_errors(json!({"207": {"description": "successes[] and failures[] by entry id", "content": {"application/json": {"schema": {"type": "object"}}}}}))}
            },
            "/ingest/v1/{topic}": {
                "post": {"operationId": "ingest", "summary": "Native ingest: JSON event, NDJSON batch, or CloudEvents (structured/batch/binary)",
                         "parameters": [
                             topic,
                             param("key", "query", json!({"type": "string"}), "Key for every event"),
                             param("key_field", "query", json!({"type": "string"}), "Top-level field of each JSON event used as its key"),
                             param("partition", "query", json!({"type": "integer"}), "Explicit partition"),
                             param("Idempotency-Key", "header", json!({"type": "string", "maxLength": 255}), "Retries with the same key and body get the first answer back and write nothing"),
                             param("X-Request-Id", "header", json!({"type": "string"}), "Request id (generated if absent), stamped on every record"),
                             param("X-Source", "header", json!({"type": "string"}), "Declared source, stamped on every record"),
                             param("traceparent", "header", json!({"type": "string"}), "W3C trace context, passed through to every record"),
                         ],
                         "requestBody": {"required": true, "content": {
                             "application/json": {"schema": {}},
                             "application/x-ndjson": {"schema": {"type": "string"}},
                             "application/cloudevents+json": {"schema": {"type": "object"}},
                             "application/cloudevents-batch+json": {"schema": {"type": "array"}},
                         }},
                         "responses": native_responses}
            },
            "/healthz": {"get": {"operationId": "healthz", "summary": "Liveness", "responses": {"200": {"description": "The process answers"}}}},
            "/readyz": {"get": {"operationId": "readyz", "summary": "Readiness", "responses": {"200": {"description": "Serving"}, "503": {"description": "Starting or shutting down"}}}},
            "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics", "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {"schemas": {
            "Problem": {"type": "object", "description": "RFC 9457 problem details",
                        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"}, "request_id": {"type": "string"}}},
            "RestError": {"type": "object", "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}}},
            "V2ProduceRequest": {"type": "object", "required": ["records"], "properties": {"records": {"type": "array", "items": {"type": "object", "properties": {
                "key": {}, "value": {}, "partition": {"type": "integer"},
                "headers": {"type": "array", "items": {"type": "object", "properties": {"key": {"type": "string"}, "value": {"type": ["string", "null"], "contentEncoding": "base64"}}}}}}}}},
            "V2ProduceResponse": {"type": "object", "properties": {"offsets": {"type": "array", "items": {"type": "object", "properties": {
                "partition": {"type": ["integer", "null"]}, "offset": {"type": ["integer", "null"]}, "error_code": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]}}}}}},
            "V3Data": {"type": "object", "properties": {"type": {"type": "string", "enum": ["BINARY", "JSON", "STRING"]}, "data": {}}},
            "V3Record": {"type": "object", "properties": {
                "partition_id": {"type": "integer"},
                "headers": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "value": {"type": ["string", "null"], "contentEncoding": "base64"}}}},
                "key": {"$ref": "#/components/schemas/V3Data"}, "value": {"$ref": "#/components/schemas/V3Data"},
                "timestamp": {"type": "string", "format": "date-time"}}},
            "V3Report": {"type": "object", "properties": {"error_code": {"type": "integer"}, "cluster_id": {"type": "string"}, "topic_name": {"type": "string"},
                "partition_id": {"type": "integer"}, "offset": {"type": "integer"}, "timestamp": {"type": "string", "format": "date-time"}, "key": {}, "value": {}}},
            "NativeResponse": {"type": "object", "properties": {
                "durability": {"type": "string", "enum": ["committed"]}, "request_id": {"type": "string"}, "topic": {"type": "string"},
                "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
                "results": {"type": "array", "items": {"type": "object", "properties": {"status": {"type": "integer"}, "partition": {"type": "integer"}, "offset": {"type": "integer"}, "timestamp": {"type": "integer"}, "error": {"$ref": "#/components/schemas/Problem"}}}}}},
        }}
    })
}
