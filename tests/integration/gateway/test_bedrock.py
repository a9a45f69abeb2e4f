"""Amazon Bedrock behind the gateway: Converse, ConverseStream (AWS event-stream frames),
InvokeModel embeddings; the fake verifies each SigV4 signature with botocore."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.gateway.fakes import (
    FakeProvider,
    Reply,
    RunningGateway,
    Seen,
    bedrock_event,
    endpoint,
    eventstream_frame,
    json_reply,
)
from tests.integration.gateway.test_openai_compatible import TOOLS, aclient, client

AKID = "AKIDTESTNOTREAL"
SECRET = "secret-key-not-real"
REGION = "eu-west-3"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MODEL_PATH = "/model/anthropic.claude-3-haiku-20240307-v1%3A0"
AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[^,]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})"
)


def verify_sigv4(
    seen: Seen,
    base_url: str,
    akid: str = AKID,
    secret: str = SECRET,
    session_token: str | None = None,
) -> None:
    """Check the credential scope, then recompute the signature from what arrived."""
    match = AUTH.fullmatch(seen.headers.get("authorization", ""))
    assert match, "Authorization is not a SigV4 header"
    assert match["akid"] == akid and match["region"] == REGION and match["service"] == "bedrock"
    assert seen.headers.get("x-amz-security-token") == session_token, "wrong session token"
    amz_date = seen.headers["x-amz-date"]
    assert match["date"] == amz_date[:8], "credential scope date != X-Amz-Date"
    signed = match["signed"].split(";")
    assert "host" in signed and "x-amz-date" in signed
    request = AWSRequest(
        method=seen.method,
        url=base_url + seen.raw_path,
        data=seen.body,
        headers={k: v for k, v in seen.headers.items() if k in signed},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(akid, secret, session_token), "bedrock", REGION)
    string_to_sign = signer.string_to_sign(request, signer.canonical_request(request))
    assert signer.signature(string_to_sign, request) == match["sig"], "SigV4 signature mismatch"


def converse_check(seen: Seen, base_url: str) -> dict[str, Any]:
    verify_sigv4(seen, base_url)
    body = seen.json()
    assert body["messages"] and body["messages"][0]["role"] == "user"
    for m in body["messages"]:
        assert m["role"] in ("user", "assistant")
        assert all(len(block) == 1 for block in m["content"]), "one member per content block"
    return dict(body)


USAGE = {"inputTokens": 13, "outputTokens": 5, "totalTokens": 18}


def stream_frames(tools: bool) -> list[bytes]:
    frames = [bedrock_event("messageStart", {"role": "assistant"})]
    if tools:
        frames += [
            bedrock_event(
                "contentBlockStart",
                {
                    "contentBlockIndex": 0,
                    "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather"}},
                },
            ),
            bedrock_event(
                "contentBlockDelta",
                {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '{"city":'}}},
            ),
            bedrock_event(
                "contentBlockDelta",
                {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '"Paris"}'}}},
            ),
            bedrock_event("contentBlockStop", {"contentBlockIndex": 0}),
            bedrock_event("messageStop", {"stopReason": "tool_use"}),
        ]
    else:
        frames += [
            bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}})
            for t in ("Bon", "jour")
        ]
        frames += [
            bedrock_event("contentBlockStop", {"contentBlockIndex": 0}),
            bedrock_event("messageStop", {"stopReason": "end_turn"}),
        ]
    frames.append(bedrock_event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 10}}))
    return frames


@pytest.fixture
def bedrock(provider: FakeProvider, gateway: Callable[..., RunningGateway]) -> RunningGateway:
    @provider.route("POST", MODEL_PATH + "/converse")
    def converse(seen: Seen) -> Reply:
        body = converse_check(seen, provider.url)
        if body.get("toolConfig"):
            content = [
                {
                    "toolUse": {
                        "toolUseId": "tooluse_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                }
            ]
            stop = "tool_use"
        else:
            content, stop = [{"text": "Bonjour"}], "end_turn"
        return json_reply(
            {
                "output": {"message": {"role": "assistant", "content": content}},
                "stopReason": stop,
                "usage": USAGE,
                "metrics": {"latencyMs": 12},
            }
        )

    @provider.route("POST", MODEL_PATH + "/converse-stream")
    def converse_stream(seen: Seen) -> Reply:
        body = converse_check(seen, provider.url)
        return Reply(
            chunks=stream_frames(bool(body.get("toolConfig"))),
            content_type="application/vnd.amazon.eventstream",
        )

    return gateway(
        bedrock_endpoint(
            provider, {"awsAccessKeyId": "aws/akid", "awsSecretAccessKey": "aws/secret"}
        ),
        {"aws/akid": AKID, "aws/secret": SECRET},
    )


def bedrock_endpoint(
    provider: FakeProvider, credentials: dict[str, str] | None = None
) -> dict[str, Any]:
    """A chat endpoint of one Claude entity on ``provider``; without ``credentials`` it
    signs with the pod's AWS identity."""
    entity: dict[str, Any] = {
        "name": "br",
        "task": "llm/v1/chat",
        "provider": "amazon-bedrock",
        "modelName": MODEL,
        "baseUrl": provider.url,
        "bedrock": {"region": REGION, "bedrockProvider": "anthropic"},
    }
    if credentials:
        entity["credentials"] = credentials
    return endpoint(entity)


def test_converse(bedrock: RunningGateway, provider: FakeProvider) -> None:
    reply = client(bedrock).chat.completions.create(
        model="ep",
        max_tokens=50,
        top_p=0.9,
        messages=[{"role": "system", "content": "Be French."}, {"role": "user", "content": "hi"}],
    )
    assert reply.choices[0].message.content == "Bonjour"
    assert reply.usage is not None and (reply.usage.prompt_tokens, reply.usage.total_tokens) == (
        13,
        18,
    )
    sent = provider.last(MODEL_PATH + "/converse").json()
    assert sent["system"] == [{"text": "Be French."}]
    assert sent["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]
    assert sent["inferenceConfig"] == {"maxTokens": 50, "topP": 0.9}


def test_converse_stream_event_stream_framing(bedrock: RunningGateway) -> None:
    chunks = list(
        client(bedrock).chat.completions.create(
            model="ep",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Bonjour"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_tools_sync_and_streamed(bedrock: RunningGateway, provider: FakeProvider) -> None:
    reply = client(bedrock).chat.completions.create(
        model="ep",
        messages=[{"role": "user", "content": "weather?"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.arguments == '{"city":"Paris"}'  # type: ignore[union-attr]
    sent = provider.last(MODEL_PATH + "/converse").json()
    assert sent["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    spec = sent["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["name"] == "get_weather" and spec["inputSchema"]["json"]["type"] == "object"

    client(bedrock).chat.completions.create(
        model="ep",
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "tooluse_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "sunny"},
        ],
    )
    turns = provider.last(MODEL_PATH + "/converse").json()["messages"]
    assert turns[1]["content"] == [
        {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}
    ]
    assert turns[2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "sunny"}]}}],
    }

    import asyncio

    async def streamed() -> str:
        ac = aclient(bedrock)
        args = ""
        stream = await ac.chat.completions.create(
            model="ep", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS, stream=True
        )
        async for ch in stream:
            for tc in ch.choices[0].delta.tool_calls or [] if ch.choices else []:
                args += tc.function.arguments or "" if tc.function else ""
        await ac.close()
        return args

    assert asyncio.run(streamed()) == '{"city":"Paris"}'


def test_stream_exception_frame_becomes_an_error_event(
    provider: FakeProvider, bedrock: RunningGateway
) -> None:
    @provider.route("POST", MODEL_PATH + "/converse-stream")
    def throttled(seen: Seen) -> Reply:
        verify_sigv4(seen, provider.url)
        frames = [
            bedrock_event("messageStart", {"role": "assistant"}),
            eventstream_frame(
                {
                    ":message-type": "exception",
                    ":exception-type": "throttlingException",
                    ":content-type": "application/json",
                },
                json.dumps({"message": "Too many tokens"}).encode(),
            ),
        ]
        return Reply(chunks=frames, content_type="application/vnd.amazon.eventstream")

    with pytest.raises(openai.APIError) as caught:
        list(
            client(bedrock).chat.completions.create(
                model="ep", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
    assert "throttlingException" in str(caught.value)


@pytest.mark.parametrize("family", ["amazon", "cohere"])
def test_embeddings(
    family: str, provider: FakeProvider, gateway: Callable[..., RunningGateway]
) -> None:
    model = "amazon.titan-embed-text-v2:0" if family == "amazon" else "cohere.embed-english-v3"
    path = "/model/" + model.replace(":", "%3A") + "/invoke"

    @provider.route("POST", path)
    def invoke(seen: Seen) -> Reply:
        verify_sigv4(seen, provider.url)
        body = seen.json()
        if family == "amazon":
            assert body == {"inputText": "hello"}
            return json_reply({"embedding": [0.25, 0.5], "inputTextTokenCount": 2})
        assert body == {"texts": ["hello", "world"], "input_type": "search_document"}
        return json_reply(
            {"id": "e", "embeddings": [[0.25, 0.5], [1.0, 2.0]], "texts": body["texts"]},
            **{"X-Amzn-Bedrock-Input-Token-Count": "4"},
        )

    gw = gateway(
        endpoint(
            {
                "name": "emb",
                "task": "llm/v1/embeddings",
                "provider": "amazon-bedrock",
                "modelName": model,
                "baseUrl": provider.url,
                "bedrock": {"region": REGION, "bedrockProvider": family},
                "credentials": {"awsAccessKeyId": "a/id", "awsSecretAccessKey": "a/s"},
            }
        ),
        {"a/id": AKID, "a/s": SECRET},
    )
    inputs: Any = "hello" if family == "amazon" else ["hello", "world"]
    out = client(gw).embeddings.create(model="ep", input=inputs)
    assert out.data[0].embedding == [0.25, 0.5]
    assert out.usage.prompt_tokens == (2 if family == "amazon" else 4)
    floats = client(gw).embeddings.create(model="ep", input=inputs, encoding_format="float")
    assert floats.data[-1].embedding == ([0.25, 0.5] if family == "amazon" else [1.0, 2.0])


STS_RESPONSE = """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:team-a:chat-gateway</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/bedrock-caller/modelport</Arn>
      <AssumedRoleId>AROAEXAMPLENOTREAL:modelport</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expiration}</Expiration>
      <AccessKeyId>{akid}</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.example.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""
ROLE = "arn:aws:iam::123456789012:role/bedrock-caller"
LIFETIME_SECONDS = 15 * 60 + 3
"""botocore refreshes temporary credentials from 15 minutes before they expire: these are
fresh for 3 seconds, then due for refresh (but still valid)."""


def pod_identity_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sts_url: str | None) -> Path:
    """The environment EKS gives an IRSA pod (role, token file), STS moved to loopback;
    nothing else in botocore's chain (no keys, config files or instance metadata)."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    token_file = tmp_path / "eks.amazonaws.com" / "token"
    token_file.parent.mkdir()
    if sts_url is not None:
        token_file.write_text("projected-token-1")
        monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
        monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
        monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "modelport")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", sts_url)
    return token_file


def test_web_identity_credentials_sign_and_are_refreshed_before_expiry(
    provider: FakeProvider,
    gateway: Callable[..., RunningGateway],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No keys in the entity: botocore's chain takes the pod's web-identity token to STS
    (AssumeRoleWithWebIdentity, loopback), the temporary credentials sign Converse, and
    they are exchanged again, with the kubelet's rotated token, before they expire."""
    token_file = pod_identity_env(monkeypatch, tmp_path, provider.url)
    issued: list[tuple[str, str, str]] = []

    @provider.route("POST", "/")
    def sts(seen: Seen) -> Reply:
        form = seen.form()
        assert "authorization" not in seen.headers, "AssumeRoleWithWebIdentity is unsigned"
        assert form["Action"] == "AssumeRoleWithWebIdentity"
        assert form["Version"] == "2011-06-15"
        assert (form["RoleArn"], form["RoleSessionName"]) == (ROLE, "modelport")
        assert form["WebIdentityToken"] == token_file.read_text()
        n = len(issued) + 1
        issued.append((f"ASIATEMP{n}NOTREAL", f"temp-secret-{n}", f"temp-session-{n}"))
        expiration = datetime.now(UTC) + timedelta(seconds=LIFETIME_SECONDS)
        body = STS_RESPONSE.format(
            akid=issued[-1][0],
            secret=issued[-1][1],
            token=issued[-1][2],
            expiration=expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        return Reply(body=body.encode(), content_type="text/xml")

    @provider.route("POST", MODEL_PATH + "/converse")
    def converse(seen: Seen) -> Reply:
        akid, secret, session = issued[-1]
        verify_sigv4(seen, provider.url, akid, secret, session)
        return json_reply(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": akid}]}},
                "stopReason": "end_turn",
                "usage": USAGE,
            }
        )

    gw = gateway(bedrock_endpoint(provider))
    c = client(gw)
    answers = [
        c.chat.completions.create(model="ep", messages=[{"role": "user", "content": "hi"}])
        for _ in range(3)
    ]
    assert [a.choices[0].message.content for a in answers] == ["ASIATEMP1NOTREAL"] * 3
    assert len(issued) == 1, "the temporary credentials must be reused while fresh"
    token_file.write_text("projected-token-2")  # the kubelet rotates the projected token
    time.sleep(3.5)
    again = c.chat.completions.create(model="ep", messages=[{"role": "user", "content": "hi"}])
    assert again.choices[0].message.content == "ASIATEMP2NOTREAL"
    assert len(issued) == 2
    assert not [r for r in caplog.records if "temp-secret" in r.getMessage()]


def test_no_keys_and_no_pod_identity_is_a_502_that_says_what_to_set(
    provider: FakeProvider,
    gateway: Callable[..., RunningGateway],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    pod_identity_env(monkeypatch, tmp_path, None)
    gw = gateway(bedrock_endpoint(provider))
    with pytest.raises(openai.APIStatusError) as caught:
        client(gw).chat.completions.create(model="ep", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502
    body = caught.value.response.json()
    assert body["error_code"] == "PERMISSION_DENIED"
    assert "gateway.serviceAccount.annotations" in body["message"]
    assert not [s for s in provider.seen if s.path.startswith("/model/")]
