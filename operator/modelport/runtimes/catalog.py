"""The model catalog: which weights, task and GPUs a catalog name stands for.

The built-in entries live in `catalog.yaml` beside this module (data, not code).
Cluster operators add or override entries without a new release: the Helm value
`catalog` becomes a ConfigMap whose file the operator reads through
`MODELPORT_CATALOG=@<file>` (a JSON or YAML list of entries of the same shape).

A served entity's `entityName` resolves in this order:

- `hf://org/model`, `pvc://claim/path`, `s3://bucket/path`: taken as the weights
  themselves, with no catalog facts (the entity must say its task and profile);
- `system.ai.<name>`, `<name>`, or an alias such as `databricks-<name>`: a
  catalog entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

Task = Literal["llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings"]
Engine = Literal["vllm", "sglang", "llamacpp"]

BUILTIN = Path(__file__).with_name("catalog.yaml")
SYSTEM_PREFIX = "system.ai."
SOURCE_SCHEMES = ("hf://", "pvc://", "s3://")


class CatalogError(ValueError):
    """A catalog file or entry is unusable; the message says which and why."""


class CatalogEntry(BaseModel):
    """One model the catalog knows by name."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9_]+$", max_length=63)]
    aliases: tuple[str, ...] = ()
    hugging_face_repo: str = Field(alias="huggingFaceRepo", pattern=r"^[\w.-]+/[\w.-]+$")
    task: Task
    context_length: int = Field(alias="contextLength", gt=0)
    min_gpu_memory_gib: int = Field(alias="minGpuMemoryGiB", ge=0)
    tensor_parallel_size: int = Field(alias="tensorParallelSize", ge=1, le=64)
    default_workload_type: str = Field(alias="defaultWorkloadType", pattern=r"^[A-Z][A-Z0-9_]*$")
    tokens_per_second_per_replica: int = Field(alias="tokensPerSecondPerReplica", gt=0)
    trust_remote_code: bool = Field(default=False, alias="trustRemoteCode")
    normalize_embeddings: bool | None = Field(default=None, alias="normalizeEmbeddings")
    gguf_repo: str | None = Field(default=None, alias="ggufRepo", pattern=r"^[\w.-]+/[\w.-]+$")
    gguf_file: str | None = Field(default=None, alias="ggufFile", pattern=r"^[\w.*-]+\.gguf$")
    args: Mapping[Engine, tuple[str, ...]] = Field(default_factory=dict)

    @property
    def catalog_name(self) -> str:
        """The reference service's catalog name, e.g. `system.ai.meta_llama_v3_1_8b_instruct`."""
        return SYSTEM_PREFIX + self.name

    def runtime_args(self, engine: str) -> tuple[str, ...]:
        """Extra arguments this model needs on `engine`."""
        return self.args.get(engine, ())  # type: ignore[call-overload, no-any-return]


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[CatalogEntry]


class Catalog:
    """Entries by every name they answer to."""

    def __init__(self, entries: Iterable[CatalogEntry]) -> None:
        self._entries: dict[str, CatalogEntry] = {}
        self._by_name: dict[str, CatalogEntry] = {}
        for entry in entries:
            # A later entry with the same name replaces an earlier one: that is
            # how a cluster's additions override a built-in entry.
            self._entries[entry.name] = entry
        for entry in self._entries.values():
            for key in (entry.name, entry.catalog_name, *entry.aliases):
                self._by_name[key] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Sequence[CatalogEntry]:
        """Every entry, in catalog order."""
        return tuple(self._entries.values())

    def resolve(self, entity_name: str) -> CatalogEntry | None:
        """The entry `entity_name` stands for; None for a direct weights source."""
        if entity_name.startswith(SOURCE_SCHEMES):
            return None
        entry = self._by_name.get(entity_name)
        if entry is None:
            known = ", ".join(sorted(e.catalog_name for e in self._entries.values()))
            raise CatalogError(
                f"entityName {entity_name!r} is not in the model catalog; use one of {known}, "
                "a weights source (hf://org/model, pvc://claim/path, s3://bucket/path), or add "
                "it to the catalog (Helm value `catalog`)"
            )
        return entry


def parse_entries(text: str, source: str) -> list[CatalogEntry]:
    """Entries from YAML or JSON text: a list, or `{models: [...]}`."""
    try:
        data = yaml.safe_load(text) or []
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not YAML or JSON: {exc}") from None
    if isinstance(data, list):
        data = {"models": data}
    try:
        return _CatalogFile.model_validate(data).models
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise CatalogError(f"{source}: {problems}") from None


@cache
def builtin_entries() -> tuple[CatalogEntry, ...]:
    """The entries shipped with this release."""
    return tuple(parse_entries(BUILTIN.read_text(encoding="utf-8"), str(BUILTIN.name)))


def load(additions: str = "") -> Catalog:
    """The built-in catalog plus `additions` (text, or `@path` of a file)."""
    extra: list[CatalogEntry] = []
    if additions.strip():
        if additions.startswith("@"):
            path = Path(additions[1:])
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise CatalogError(f"MODELPORT_CATALOG: cannot read {path}: {exc}") from None
            extra = parse_entries(text, str(path))
        else:
            extra = parse_entries(additions, "MODELPORT_CATALOG")
    return Catalog([*builtin_entries(), *extra])
