"""The model catalog: built-in entries, name resolution, cluster additions."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelport.runtimes.catalog import CatalogError, builtin_entries, load

# The models the reference service offers, each with the name it is known by there.
REQUIRED = [
    "system.ai.meta_llama_v3_3_70b_instruct",
    "system.ai.meta_llama_v3_1_8b_instruct",
    "system.ai.meta_llama_v3_1_70b_instruct",
    "system.ai.meta_llama_v3_1_405b_instruct",
    "system.ai.meta_llama_v3_2_1b_instruct",
    "system.ai.meta_llama_v3_2_3b_instruct",
    "databricks-llama-4-maverick",
    "databricks-deepseek-r1",
    "databricks-gte-large-en",
    "databricks-bge-large-en",
    "system.ai.mistral_7b_instruct_v0_2",
    "system.ai.mixtral_8x7b_instruct_v0_1",
    "databricks-dbrx-instruct",
    "system.ai.mpt_7b_instruct",
    "system.ai.mpt_30b_instruct",
    "databricks-gpt-oss-120b",
]


@pytest.mark.parametrize("name", REQUIRED)
def test_reference_models_resolve(name: str) -> None:
    entry = load().resolve(name)
    assert entry is not None
    assert entry.hugging_face_repo


def test_both_name_styles_resolve_to_one_entry() -> None:
    catalog = load()
    by_catalog = catalog.resolve("system.ai.meta_llama_v3_3_70b_instruct")
    by_endpoint = catalog.resolve("databricks-meta-llama-3-3-70b-instruct")
    assert by_catalog is by_endpoint


def test_embeddings_models_say_whether_they_normalise() -> None:
    catalog = load()
    gte = catalog.resolve("databricks-gte-large-en")
    bge = catalog.resolve("databricks-bge-large-en")
    assert gte and gte.task == "llm/v1/embeddings" and gte.normalize_embeddings is False
    assert bge and bge.task == "llm/v1/embeddings" and bge.normalize_embeddings is True
    for entry in builtin_entries():
        assert (entry.task == "llm/v1/embeddings") == (entry.normalize_embeddings is not None)


def test_names_and_aliases_are_unique() -> None:
    seen: set[str] = set()
    for entry in builtin_entries():
        for key in (entry.name, *entry.aliases):
            assert key not in seen, key
            seen.add(key)


@pytest.mark.parametrize("source", ["hf://org/model", "pvc://weights/llama", "s3://bucket/m"])
def test_weights_sources_bypass_the_catalog(source: str) -> None:
    assert load().resolve(source) is None


def test_unknown_name_is_refused_with_the_fix() -> None:
    with pytest.raises(CatalogError) as err:
        load().resolve("system.ai.no_such_model")
    assert "'system.ai.no_such_model' is not in the model catalog" in str(err.value)
    assert "hf://org/model" in str(err.value)


def test_cluster_additions_add_and_override(tmp_path: Path) -> None:
    extra = tmp_path / "catalog.yaml"
    extra.write_text(
        "- name: my_finetune\n"
        "  huggingFaceRepo: acme/finetune-8b\n"
        "  task: llm/v1/chat\n"
        "  contextLength: 8192\n"
        "  minGpuMemoryGiB: 24\n"
        "  tensorParallelSize: 1\n"
        "  defaultWorkloadType: GPU_MEDIUM\n"
        "  tokensPerSecondPerReplica: 2000\n"
        "- name: meta_llama_v3_1_8b_instruct\n"
        "  aliases: [databricks-meta-llama-3-1-8b-instruct]\n"
        "  huggingFaceRepo: acme/mirror-of-llama-8b\n"
        "  task: llm/v1/chat\n"
        "  contextLength: 65536\n"
        "  minGpuMemoryGiB: 24\n"
        "  tensorParallelSize: 1\n"
        "  defaultWorkloadType: GPU_MEDIUM\n"
        "  tokensPerSecondPerReplica: 2500\n"
    )
    catalog = load(f"@{extra}")
    assert len(catalog) == len(builtin_entries()) + 1
    mine = catalog.resolve("system.ai.my_finetune")
    assert mine and mine.hugging_face_repo == "acme/finetune-8b"
    mirrored = catalog.resolve("databricks-meta-llama-3-1-8b-instruct")
    assert mirrored and mirrored.context_length == 65536


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("- {name: x}", "huggingFaceRepo"),
        ("[{name: Bad-Name, huggingFaceRepo: a/b}]", "name"),
        ("models: {", "not YAML or JSON"),
    ],
)
def test_bad_additions_name_the_problem(text: str, complaint: str) -> None:
    with pytest.raises(CatalogError) as err:
        load(text)
    assert complaint in str(err.value)
