"""The pure documents the API serves: an endpoint's OpenAPI and its merged metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from modelport.restapi import metrics, openapi

GATEWAY_METRICS = """# HELP modelport_gateway_requests_total Requests.
# TYPE modelport_gateway_requests_total counter
modelport_gateway_requests_total{status="200"} 3.0
# HELP modelport_gateway_latency_seconds Latency.
# TYPE modelport_gateway_latency_seconds histogram
modelport_gateway_latency_seconds_bucket{le="0.1"} 1.0
modelport_gateway_latency_seconds_bucket{le="+Inf"} 2.0
modelport_gateway_latency_seconds_count 2.0
modelport_gateway_latency_seconds_sum 0.3
"""


def test_openapi_documents_the_endpoints_task_with_the_gateways_schema() -> None:
    doc = openapi.document("chat", "llm/v1/chat")
    post = doc["paths"]["/serving-endpoints/chat/invocations"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ChatRequest"}
    chat = doc["components"]["schemas"]["ChatRequest"]
    assert "messages" in chat["properties"]
    assert "Message" in doc["components"]["schemas"], "nested models are components"
    assert "$defs" not in str(doc)


def test_openapi_of_a_catalog_model_without_a_task_offers_every_request() -> None:
    doc = openapi.document("llama", None)
    post = doc["paths"]["/serving-endpoints/llama/invocations"]["post"]
    refs = post["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert [r["$ref"].rsplit("/", 1)[1] for r in refs] == [
        "ChatRequest",
        "CompletionRequest",
        "EmbeddingRequest",
    ]


def test_metrics_of_every_pod_are_labelled_by_pod() -> None:
    text = metrics.merge([("gw-a", GATEWAY_METRICS), ("gw-b", GATEWAY_METRICS)]).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["modelport_gateway_requests"]
    assert sorted((s.labels["pod"], s.value) for s in requests.samples) == [
        ("gw-a", 3.0),
        ("gw-b", 3.0),
    ]
    assert families["modelport_gateway_latency_seconds"].type == "histogram"
    assert families["modelport_restapi_scraped_pods"].samples[0].value == 2
    assert text.count("# TYPE modelport_gateway_requests_total counter") == 1
