"""Credential files: cached by identity, re-read when rotated, never echoed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelport.gateway.errors import GatewayError
from modelport.gateway.secrets import SecretStore
from modelport.gatewayconfig import Credentials


def write(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value)
    tmp.replace(path)


def test_reads_strips_and_rereads_after_rotation(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    write(tmp_path / "s" / "k", "old-key-not-real\n")
    assert store.read("s/k", "credentials.apiKey") == "old-key-not-real"
    write(tmp_path / "s" / "k", "new-key-not-real")
    assert store.read("s/k", "credentials.apiKey") == "new-key-not-real"


def test_same_size_same_mtime_rewrite_is_seen_through_the_inode(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    path = tmp_path / "s" / "k"
    write(path, "aaaa")
    stat = path.stat()
    assert store.read("s/k", "f") == "aaaa"
    write(path, "bbbb")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert store.read("s/k", "f") == "bbbb"


def test_empty_or_vanished_file_keeps_the_last_good_value(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    write(tmp_path / "s" / "k", "good-key-not-real")
    assert store.read("s/k", "f") == "good-key-not-real"
    write(tmp_path / "s" / "k", "")
    assert store.read("s/k", "f") == "good-key-not-real"
    (tmp_path / "s" / "k").unlink()
    assert store.read("s/k", "f") == "good-key-not-real"


def test_missing_file_error_names_the_field_not_a_value(tmp_path: Path) -> None:
    with pytest.raises(GatewayError) as caught:
        SecretStore(tmp_path).read("llm-keys/openai", "credentials.apiKey")
    assert "credentials.apiKey" in caught.value.message
    assert "llm-keys/openai" in caught.value.message


def test_resolve_by_config_field_name_and_missing(tmp_path: Path) -> None:
    write(tmp_path / "aws" / "id", "AKIDNOTREAL")
    creds = Credentials.model_validate(
        {"awsAccessKeyId": "aws/id", "awsSecretAccessKey": "aws/secret"}
    )
    store = SecretStore(tmp_path)
    assert store.missing(creds) == ["aws/secret"]
    write(tmp_path / "aws" / "secret", "secret-not-real")
    assert store.resolve(creds) == {
        "awsAccessKeyId": "AKIDNOTREAL",
        "awsSecretAccessKey": "secret-not-real",
    }
