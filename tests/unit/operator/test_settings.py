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
    ],
)
def test_errors_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        from_env(env)
    assert needle in str(err.value)
