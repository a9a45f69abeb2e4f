"""``modelport api``'s settings: flags or MODELPORT_API_* variables, and a bad one named
before anything listens."""

from __future__ import annotations

import pytest

from modelport.cli import main
from modelport.restapi.command import env_name


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--port", "eighty", "--port 'eighty': not a port number"),
        ("--oidc", "{not json", "--oidc: not a valid issuer"),
        ("--oidc", '{"issuer": "ldap://x", "audiences": ["a"]}', "--oidc: not a valid issuer"),
        ("--gateway-url-template", "http://{svc}.{namespace}", "only {service}, {namespace}"),
        ("--log-level", "loud", "--log-level 'loud'"),
    ],
)
def test_a_bad_setting_exits_2_naming_the_flag(
    flag: str, value: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["api", flag, value, "--api-server", "https://127.0.0.1:1"]) == 2
    assert words in capsys.readouterr().err


def test_outside_a_pod_the_apiserver_must_be_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv(env_name("--api-server"), raising=False)
    assert main(["api"]) == 2
    assert "set --api-server, --token-file and --ca-file" in capsys.readouterr().err


def test_every_flag_has_its_variable() -> None:
    assert env_name("--default-workspace") == "MODELPORT_API_DEFAULT_WORKSPACE"
    assert env_name("--oidc-groups-prefix") == "MODELPORT_API_OIDC_GROUPS_PREFIX"
