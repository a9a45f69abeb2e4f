"""Operator settings from the environment (flags set the same variables)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelport.settings import DEFAULT_GATEWAY_IMAGE, SettingsError, from_env


def test_defaults() -> None:
    settings = from_env({})
    assert settings.clusterwide and settings.namespaces == ()
    assert settings.gateway_image == DEFAULT_GATEWAY_IMAGE
    assert settings.log_format == "json"
    assert {"CPU", "GPU_SMALL", "GPU_MEDIUM", "GPU_LARGE"} <= set(settings.gpu_profiles)


def test_values() -> None:
    settings = from_env(
        {
            "MODELPORT_NAMESPACES": "a, b,,",
            "MODELPORT_GATEWAY_IMAGE": "reg/gw:2",
            "MODELPORT_LOG_FORMAT": "plain",
            "MODELPORT_LOG_LEVEL": "debug",
            "MODELPORT_RESYNC_SECONDS": "0",
        }
    )
    assert settings.namespaces == ("a", "b") and not settings.clusterwide
    assert (settings.gateway_image, settings.log_format, settings.log_level) == (
        "reg/gw:2",
        "plain",
        "DEBUG",
    )
    assert settings.resync_seconds == 0


def test_profiles_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps({"GPU_H200": {"gpus": 1, "cpu": "16", "memory": "128Gi"}}))
    settings = from_env({"MODELPORT_GPU_PROFILES": f"@{path}"})
    assert settings.gpu_profiles["GPU_H200"].memory == "128Gi"
    assert "GPU_SMALL" in settings.gpu_profiles


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MODELPORT_GATEWAY_MIN_REPLICAS": "x"}, "MODELPORT_GATEWAY_MIN_REPLICAS"),
        (
            {"MODELPORT_GATEWAY_MIN_REPLICAS": "3", "MODELPORT_GATEWAY_MAX_REPLICAS": "2"},
            "MODELPORT_GATEWAY_MAX_REPLICAS",
        ),
        ({"MODELPORT_LOG_FORMAT": "xml"}, "MODELPORT_LOG_FORMAT"),
        ({"MODELPORT_GPU_PROFILES": "{"}, "MODELPORT_GPU_PROFILES"),
        ({"MODELPORT_GPU_PROFILES": '{"X": {"gpus": 1}}'}, "profile 'X'"),
        ({"MODELPORT_DEFAULT_WORKLOAD_TYPE": "NOPE"}, "MODELPORT_DEFAULT_WORKLOAD_TYPE"),
        ({"MODELPORT_GATEWAY_NODE_SELECTOR": "{"}, "MODELPORT_GATEWAY_NODE_SELECTOR: not JSON"),
        ({"MODELPORT_GATEWAY_NODE_SELECTOR": '["a"]'}, "a JSON object of node labels"),
        ({"MODELPORT_GATEWAY_NODE_SELECTOR": '{"gpu": true}'}, "quote true"),
        ({"MODELPORT_GATEWAY_TOLERATIONS": "{}"}, "MODELPORT_GATEWAY_TOLERATIONS='{}'"),
        ({"MODELPORT_GATEWAY_TOLERATIONS": '["x"]'}, "MODELPORT_GATEWAY_TOLERATIONS[0]"),
        ({"MODELPORT_GATEWAY_TOLERATIONS": '[{"kye": "a"}]'}, "unknown field(s) ['kye']"),
        (
            {"MODELPORT_GATEWAY_TOLERATIONS": '[{"key": "a", "operator": "In"}]'},
            "[0].operator='In': use one of ['Exists', 'Equal']",
        ),
        (
            {"MODELPORT_GATEWAY_TOLERATIONS": '[{"key": "a", "effect": "NoSchedul"}]'},
            "[0].effect='NoSchedul'",
        ),
        (
            {"MODELPORT_GATEWAY_TOLERATIONS": '[{"key": "a", "operator": "Exists", "value": "x"}]'},
            "operator Exists takes no value",
        ),
        ({"MODELPORT_GATEWAY_RESOURCES": "[]"}, "MODELPORT_GATEWAY_RESOURCES='[]'"),
        ({"MODELPORT_GATEWAY_RESOURCES": '{"request": {}}'}, "unknown field(s) ['request']"),
        (
            {"MODELPORT_GATEWAY_RESOURCES": '{"limits": {"memory": "512 MB"}}'},
            "MODELPORT_GATEWAY_RESOURCES.limits.memory='512 MB' is not a Kubernetes quantity",
        ),
        (
            {"MODELPORT_GATEWAY_RESOURCES": '{"requests": {"cpu": {"a": 1}}}'},
            "MODELPORT_GATEWAY_RESOURCES.requests.cpu",
        ),
    ],
)
def test_errors_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        from_env(env)
    assert needle in str(err.value)


def test_gateway_placement_and_resources() -> None:
    defaults = from_env({})
    assert defaults.gateway_node_selector == {} and defaults.gateway_tolerations == ()
    assert defaults.gateway_resources == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    toleration = {"key": "modelport.io/real-node", "operator": "Exists", "effect": "NoSchedule"}
    settings = from_env(
        {
            "MODELPORT_GATEWAY_NODE_SELECTOR": '{"modelport.io/node-kind": "real"}',
            "MODELPORT_GATEWAY_TOLERATIONS": json.dumps([toleration]),
            "MODELPORT_GATEWAY_RESOURCES": '{"requests": {"cpu": 0.05, "memory": "64Mi"}}',
        }
    )
    assert settings.gateway_node_selector == {"modelport.io/node-kind": "real"}
    assert settings.gateway_tolerations == (toleration,)
    # Numbers become the quantity strings Kubernetes would echo; no limits is allowed.
    assert settings.gateway_resources == {"requests": {"cpu": "0.05", "memory": "64Mi"}}


def test_gateway_flags_set_the_variables() -> None:
    from modelport.controller.cli import build_parser, settings_from

    args = build_parser().parse_args(
        ["--gateway-node-selector", '{"a": "b"}', "--gateway-tolerations", "[]",
         "--gateway-resources", '{"limits": {"cpu": "1"}}']
    )  # fmt: skip
    assert (args.gateway_node_selector, args.gateway_tolerations, args.gateway_resources) == (
        '{"a": "b"}',
        "[]",
        '{"limits": {"cpu": "1"}}',
    )
    # A flag wins over its variable; the environment itself is left alone.
    env = {"MODELPORT_GATEWAY_NODE_SELECTOR": '{"x": "y"}', "MODELPORT_GATEWAY_IMAGE": "gw:2"}
    settings = settings_from(args, env)
    assert settings.gateway_node_selector == {"a": "b"}
    assert settings.gateway_image == "gw:2"
    assert settings.gateway_resources == {"limits": {"cpu": "1"}}
    assert env["MODELPORT_GATEWAY_NODE_SELECTOR"] == '{"x": "y"}'


def test_gateway_auth_defaults_are_secure() -> None:
    auth = from_env({}).gateway_auth
    assert (auth.enabled, auth.service_account_tokens, auth.audiences) == (
        True,
        True,
        ("modelport",),
    )
    assert auth.cache_seconds == 10 and auth.oidc is None
    assert from_env({}).gateway_tokenreview_binding == ""


def test_gateway_auth_from_the_chart_value() -> None:
    value = {
        "enabled": False,
        "serviceAccountTokens": {"enabled": True, "audiences": ["a", "b"], "cacheSeconds": 0},
        "oidc": {"issuer": "https://login.example.com", "audiences": ["modelport"]},
    }
    settings = from_env(
        {
            "MODELPORT_GATEWAY_AUTH": json.dumps(value),
            "MODELPORT_GATEWAY_TOKENREVIEW_BINDING": "modelport-gateways",
        }
    )
    auth = settings.gateway_auth
    assert (auth.enabled, auth.audiences, auth.cache_seconds) == (False, ("a", "b"), 0)
    assert auth.oidc is not None and auth.oidc.issuer == "https://login.example.com"
    assert settings.gateway_tokenreview_binding == "modelport-gateways"
    # Left-out keys keep their defaults; the chart's null oidc is none.
    partial = from_env({"MODELPORT_GATEWAY_AUTH": '{"serviceAccountTokens": {}, "oidc": null}'})
    assert partial.gateway_auth == from_env({}).gateway_auth


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("{", "MODELPORT_GATEWAY_AUTH: not JSON"),
        ("[]", "MODELPORT_GATEWAY_AUTH='[]': give a JSON object"),
        ('{"enable": true}', "unknown field(s) ['enable']"),
        ('{"enabled": "yes"}', "MODELPORT_GATEWAY_AUTH.enabled='yes': give true or false"),
        ('{"serviceAccountTokens": true}', "MODELPORT_GATEWAY_AUTH.serviceAccountTokens=True"),
        ('{"serviceAccountTokens": {"audience": []}}', "unknown field(s) ['audience']"),
        ('{"serviceAccountTokens": {"audiences": []}}', "serviceAccountTokens.audiences=[]"),
        ('{"serviceAccountTokens": {"audiences": "modelport"}}', "non-empty list"),
        ('{"serviceAccountTokens": {"cacheSeconds": 900}}', "cacheSeconds=900"),
        ('{"oidc": {"issuer": "login.example.com", "audiences": ["a"]}}', "oidc: issuer:"),
        ('{"oidc": {"issuer": "https://x"}}', "MODELPORT_GATEWAY_AUTH.oidc: audiences"),
        ('{"oidc": {"issuer": "https://x", "audiences": ["a"], "algorithms": ["HS256"]}}',
         "algorithms"),
    ],
)  # fmt: skip
def test_gateway_auth_errors_name_the_variable_and_the_fix(value: str, needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        from_env({"MODELPORT_GATEWAY_AUTH": value})
    assert needle in str(err.value)


def test_tokenreview_binding_must_be_an_object_name() -> None:
    with pytest.raises(SettingsError, match="MODELPORT_GATEWAY_TOKENREVIEW_BINDING='Bad_Name'"):
        from_env({"MODELPORT_GATEWAY_TOKENREVIEW_BINDING": "Bad_Name"})


def test_gateway_auth_flags_set_the_variables() -> None:
    from modelport.controller.cli import build_parser, settings_from

    args = build_parser().parse_args(
        ["--gateway-auth", '{"enabled": false}',
         "--gateway-tokenreview-binding", "mp-gateways"]
    )  # fmt: skip
    assert (args.gateway_auth, args.gateway_tokenreview_binding) == (
        '{"enabled": false}',
        "mp-gateways",
    )
    settings = settings_from(args, {})
    assert settings.gateway_auth.enabled is False
    assert settings.gateway_tokenreview_binding == "mp-gateways"


def test_rate_limiting_defaults_count_in_each_process_and_fail_closed() -> None:
    defaults = from_env({}).rate_limiting
    assert defaults.store_address == "" and defaults.password_secret is None
    assert defaults.fail_open is False and defaults.reserve_completion_tokens == 512


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("[]", "MODELPORT_RATE_LIMITING='[]': give a JSON object"),
        ('{"store": {"address": "http://r:6379"}}', "must start with redis:// or rediss://"),
        ('{"store": {"address": "redis://u:pw@r:6379"}}', "must not contain credentials"),
        ('{"store": {"address": "redis://r", "passwordSecret": "pw"}}', "passwordSecret='pw'"),
        ('{"store": {"passwordSecret": {"name": "a", "key": "b"}}}', "store.address is not"),
        ('{"store": {"address": "redis://r", "timeoutSeconds": 60}}', "timeoutSeconds"),
        ('{"failOpen": "no"}', "MODELPORT_RATE_LIMITING.failOpen='no': give true or false"),
        ('{"reserveCompletionTokens": 0}', "reserveCompletionTokens=0"),
        ('{"stores": {}}', "unknown field(s) ['stores']"),
    ],
)
def test_rate_limiting_errors_name_the_setting_and_the_fix(value: str, needle: str) -> None:
    with pytest.raises(SettingsError) as caught:
        from_env({"MODELPORT_RATE_LIMITING": value})
    assert needle in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_tracing_and_the_access_log_reach_every_gateway_config() -> None:
    from modelport.render import render
    from tests.unit.operator.helpers import endpoint, external, parse

    settings = from_env(
        {
            "MODELPORT_TRACING": json.dumps(
                {"endpoint": "http://otel.monitoring:4318/", "sampleRatio": 0.25}
            ),
            "MODELPORT_GATEWAY_ACCESS_LOG": "true",
        }
    )
    assert settings.tracing is not None and settings.gateway_access_log
    config = render(parse(endpoint(external()).to_body()), settings).config
    assert config.tracing is not None
    assert (config.tracing.endpoint, config.tracing.sample_ratio) == (
        "http://otel.monitoring:4318",
        0.25,
    )
    assert config.access_log
    # Unset, or a value with no endpoint (the chart's default): no tracing at all.
    assert from_env({"MODELPORT_TRACING": '{"endpoint": ""}'}).tracing is None
    plain = render(parse(endpoint(external()).to_body()), from_env({})).config
    assert plain.tracing is None and not plain.access_log


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MODELPORT_TRACING": '{"endpoint": "otel:4318"}'}, "http://"),
        ({"MODELPORT_TRACING": '{"endpoint": "http://o", "sampleRatio": 2}'}, "sampleRatio"),
        ({"MODELPORT_TRACING": "[]"}, "MODELPORT_TRACING"),
        ({"MODELPORT_GATEWAY_ACCESS_LOG": "maybe"}, "true or false"),
    ],
)
def test_tracing_errors_name_the_setting(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        from_env(env)
