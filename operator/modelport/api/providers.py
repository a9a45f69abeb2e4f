"""External models: a provider, a task, and the provider's config block.

Field names are the reference service's, in camelCase, so its endpoint configs map
one-to-one. Two deliberate differences: every credential is a `SecretValue`
(`{secretKeyRef: {name, key}}`) and no `...Plaintext` field exists; and every
provider can be pointed at another base URL (the Modelport extensions marked below),
which self-hosted proxies, private endpoints and our loopback test servers need.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from modelport.api.meta import (
    HTTP_URL,
    NAME,
    SHORT,
    URL,
    ApiModel,
    CelRule,
    SecretValue,
    cel_rules,
)

Provider = Literal[
    "openai",
    "anthropic",
    "cohere",
    "amazon-bedrock",
    "google-cloud-vertex-ai",
    "ai21labs",
    "databricks-model-serving",
    "custom",
]
Task = Literal["llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings"]
OpenAIApiType = Literal["openai", "azure", "azuread"]
BedrockProvider = Literal["anthropic", "cohere", "ai21labs", "amazon"]

Url = Annotated[str, Field(max_length=URL, pattern=HTTP_URL)]

_AZURE = "self.openaiApiType in ['azure', 'azuread']"
_AZURE_REQUIRED = {
    "openaiApiBase": "https://<resource>.openai.azure.com",
    "openaiApiVersion": "the Azure API version, e.g. 2024-06-01",
    "openaiDeploymentName": "the name of the Azure deployment",
}
_ENTRA = {
    "microsoftEntraTenantId": "microsoft_entra_tenant_id",
    "microsoftEntraClientId": "microsoft_entra_client_id",
    "microsoftEntraClientSecret": "microsoft_entra_client_secret",
}


class OpenAIConfig(ApiModel):
    """Settings for provider `openai`: OpenAI itself, Azure OpenAI with an API key
    (`openaiApiType: azure`), or Azure OpenAI with Microsoft Entra ID (`azuread`)."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            *(
                CelRule(
                    f"!({_AZURE}) || has(self.{field})",
                    f"openaiConfig.{field} is required when openaiApiType is azure or "
                    f"azuread; set it to {hint}",
                    f".{field}",
                )
                for field, hint in _AZURE_REQUIRED.items()
            ),
            CelRule(
                "self.openaiApiType == 'azuread' || has(self.openaiApiKey)",
                "openaiConfig.openaiApiKey is required when openaiApiType is openai or azure; "
                "set it to {secretKeyRef: {name, key}}",
                ".openaiApiKey",
            ),
            CelRule(
                "self.openaiApiType != 'azuread' || !has(self.openaiApiKey)",
                "openaiConfig.openaiApiKey is not used with openaiApiType azuread; remove it "
                "and set microsoftEntraTenantId, microsoftEntraClientId and "
                "microsoftEntraClientSecret",
                ".openaiApiKey",
            ),
            *(
                CelRule(
                    f"self.openaiApiType != 'azuread' || has(self.{field})",
                    f"openaiConfig.{field} is required when openaiApiType is azuread; "
                    "set it from your Entra ID app registration",
                    f".{field}",
                )
                for field in _ENTRA
            ),
            *(
                CelRule(
                    f"self.openaiApiType == 'azuread' || !has(self.{field})",
                    f"openaiConfig.{field} is used only with openaiApiType azuread; "
                    "remove it or set openaiApiType: azuread",
                    f".{field}",
                )
                for field in _ENTRA
            ),
        )
    )

    openai_api_key: SecretValue | None = Field(
        default=None,
        description="API key for OpenAI or Azure OpenAI. Required unless openaiApiType is azuread.",
    )
    openai_api_base: Url | None = Field(
        default=None,
        description="Base URL of the API, e.g. https://api.openai.com/v1 (the default for "
        "openai). Required for azure and azuread: https://<resource>.openai.azure.com.",
    )
    openai_api_type: OpenAIApiType = Field(
        default="openai",
        description="openai (default), azure (Azure OpenAI with an API key) or azuread "
        "(Azure OpenAI with Microsoft Entra ID).",
    )
    openai_api_version: Annotated[str, Field(max_length=SHORT)] | None = Field(
        default=None,
        description="Azure OpenAI API version, e.g. 2024-06-01. Required for azure and azuread.",
    )
    openai_deployment_name: Annotated[str, Field(max_length=NAME)] | None = Field(
        default=None,
        description="Name of the Azure OpenAI deployment. Required for azure and azuread.",
    )
    openai_organization: Annotated[str, Field(max_length=NAME)] | None = Field(
        default=None, description="OpenAI organization ID sent with each request."
    )
    microsoft_entra_tenant_id: Annotated[str, Field(max_length=NAME)] | None = Field(
        default=None, description="Entra ID tenant ID. Required for azuread."
    )
    microsoft_entra_client_id: Annotated[str, Field(max_length=NAME)] | None = Field(
        default=None, description="Entra ID application (client) ID. Required for azuread."
    )
    microsoft_entra_client_secret: SecretValue | None = Field(
        default=None, description="Entra ID client secret. Required for azuread."
    )

    @model_validator(mode="after")
    def _check_api_type(self) -> Self:
        azure = self.openai_api_type in ("azure", "azuread")
        missing = [
            f
            for f, attr in (
                ("openaiApiBase", self.openai_api_base),
                ("openaiApiVersion", self.openai_api_version),
                ("openaiDeploymentName", self.openai_deployment_name),
            )
            if azure and attr is None
        ]
        if missing:
            raise ValueError(
                f"openaiConfig.{', '.join(missing)} required when openaiApiType is "
                f"{self.openai_api_type}; set the Azure resource URL, API version and deployment"
            )
        entra = {
            "microsoftEntraTenantId": self.microsoft_entra_tenant_id,
            "microsoftEntraClientId": self.microsoft_entra_client_id,
            "microsoftEntraClientSecret": self.microsoft_entra_client_secret,
        }
        if self.openai_api_type == "azuread":
            if self.openai_api_key is not None:
                raise ValueError(
                    "openaiConfig.openaiApiKey is not used with openaiApiType azuread; "
                    "remove it and set the microsoftEntra* fields"
                )
            if absent := [k for k, v in entra.items() if v is None]:
                raise ValueError(
                    f"openaiConfig.{', '.join(absent)} required when openaiApiType is azuread"
                )
        else:
            if self.openai_api_key is None:
                raise ValueError(
                    "openaiConfig.openaiApiKey is required when openaiApiType is "
                    f"{self.openai_api_type}; set it to {{secretKeyRef: {{name, key}}}}"
                )
            if present := [k for k, v in entra.items() if v is not None]:
                raise ValueError(
                    f"openaiConfig.{', '.join(present)} used only with openaiApiType "
                    "azuread; remove it or set openaiApiType: azuread"
                )
        return self


class AnthropicConfig(ApiModel):
    """Settings for provider `anthropic`."""

    anthropic_api_key: SecretValue = Field(description="Anthropic API key.")
    anthropic_api_base: Url | None = Field(
        default=None, description="Base URL of the API; default https://api.anthropic.com."
    )


class CohereConfig(ApiModel):
    """Settings for provider `cohere`."""

    cohere_api_key: SecretValue = Field(description="Cohere API key.")
    cohere_api_base: Url | None = Field(
        default=None, description="Base URL of the API; default https://api.cohere.com."
    )


class AmazonBedrockConfig(ApiModel):
    """Settings for provider `amazon-bedrock`. Without access keys the gateway signs with
    its pod's AWS identity (botocore's credential chain): IRSA, by annotating gateway
    ServiceAccounts (the chart's gateway.serviceAccount.annotations), EKS Pod Identity
    (associate a role with <namespace>/<endpoint>-gateway), or the node's role."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "has(self.awsAccessKeyId) == has(self.awsSecretAccessKey)",
                "amazonBedrockConfig.awsAccessKeyId and awsSecretAccessKey go together; "
                "set both, or neither to use the pod's AWS identity",
                ".awsSecretAccessKey",
            )
        )
    )

    aws_region: Annotated[str, Field(min_length=1, max_length=SHORT)] = Field(
        description="AWS region of the Bedrock service, e.g. us-east-1."
    )
    aws_access_key_id: SecretValue | None = Field(
        default=None, description="AWS access key ID; set together with awsSecretAccessKey."
    )
    aws_secret_access_key: SecretValue | None = Field(
        default=None, description="AWS secret access key; set together with awsAccessKeyId."
    )
    bedrock_provider: BedrockProvider = Field(
        description="The model family behind Bedrock: anthropic, cohere, ai21labs or amazon."
    )
    endpoint_url: Url | None = Field(
        default=None,
        description="Modelport extension: base URL of the Bedrock runtime API instead of "
        "https://bedrock-runtime.<awsRegion>.amazonaws.com (VPC endpoints, test servers).",
    )

    @model_validator(mode="after")
    def _check_keys(self) -> Self:
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            raise ValueError(
                "amazonBedrockConfig.awsAccessKeyId and awsSecretAccessKey go together; "
                "set both, or neither to use the pod's AWS identity"
            )
        return self


class GoogleCloudVertexAiConfig(ApiModel):
    """Settings for provider `google-cloud-vertex-ai`."""

    project_id: Annotated[str, Field(min_length=1, max_length=NAME)] = Field(
        description="Google Cloud project ID."
    )
    region: Annotated[str, Field(min_length=1, max_length=SHORT)] = Field(
        description="Vertex AI region, e.g. us-central1."
    )
    private_key: SecretValue = Field(
        description="Private key (JSON) of the service account that calls Vertex AI."
    )
    api_base: Url | None = Field(
        default=None,
        description="Modelport extension: base URL of the Vertex AI API instead of "
        "https://<region>-aiplatform.googleapis.com.",
    )


class Ai21LabsConfig(ApiModel):
    """Settings for provider `ai21labs`."""

    ai21labs_api_key: SecretValue = Field(alias="ai21labsApiKey", description="AI21 Labs API key.")
    ai21labs_api_base: Url | None = Field(
        default=None,
        alias="ai21labsApiBase",
        description="Modelport extension: base URL of the API instead of "
        "https://api.ai21.com/studio/v1.",
    )


class DatabricksModelServingConfig(ApiModel):
    """Settings for provider `databricks-model-serving`: an endpoint of the reference
    service (or another Modelport endpoint that speaks its protocol)."""

    databricks_workspace_url: Url = Field(
        description="URL of the workspace; requests go to "
        "<databricksWorkspaceUrl>/serving-endpoints/<name>/invocations."
    )
    databricks_api_token: SecretValue = Field(description="Token for the workspace API.")


class ApiKeyAuth(ApiModel):
    """An API key sent in a request header."""

    key: Annotated[str, Field(min_length=1, max_length=NAME, pattern=r"^[A-Za-z0-9-]+$")] = Field(
        description="Name of the header that carries the key, e.g. X-API-Key."
    )
    value: SecretValue = Field(description="The key.")


class BearerTokenAuth(ApiModel):
    """A token sent as `Authorization: Bearer <token>`."""

    token: SecretValue = Field(description="The token.")


class CustomProviderConfig(ApiModel):
    """Settings for provider `custom`: any server speaking the OpenAI API."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                "has(self.apiKeyAuth) != has(self.bearerTokenAuth)",
                "customProviderConfig needs exactly one of apiKeyAuth or bearerTokenAuth; "
                "keep one and remove the other",
            )
        )
    )

    custom_provider_url: Url = Field(
        description="Base URL of the OpenAI-compatible API, e.g. http://vllm.llm.svc:8000/v1."
    )
    api_key_auth: ApiKeyAuth | None = Field(
        default=None,
        description="Authenticate with an API key header. Exclusive with bearerTokenAuth.",
    )
    bearer_token_auth: BearerTokenAuth | None = Field(
        default=None, description="Authenticate with a bearer token. Exclusive with apiKeyAuth."
    )

    @model_validator(mode="after")
    def _check_auth(self) -> Self:
        if (self.api_key_auth is None) == (self.bearer_token_auth is None):
            raise ValueError(
                "customProviderConfig needs exactly one of apiKeyAuth or bearerTokenAuth; "
                "keep one and remove the other"
            )
        return self


# Provider name -> the camelCase name of the only config block it accepts.
PROVIDER_CONFIG_FIELDS: dict[str, str] = {
    "openai": "openaiConfig",
    "anthropic": "anthropicConfig",
    "cohere": "cohereConfig",
    "amazon-bedrock": "amazonBedrockConfig",
    "google-cloud-vertex-ai": "googleCloudVertexAiConfig",
    "ai21labs": "ai21labsConfig",
    "databricks-model-serving": "databricksModelServingConfig",
    "custom": "customProviderConfig",
}


class ExternalModel(ApiModel):
    """A model served by an external provider; the gateway forwards requests to it."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            *(
                CelRule(
                    f"(self.provider == '{provider}') == has(self.{block})",
                    f"externalModel.{block} is required when provider is {provider} and "
                    f"not allowed otherwise; set the block that matches provider",
                    f".{block}",
                )
                for provider, block in PROVIDER_CONFIG_FIELDS.items()
            )
        )
    )

    name: Annotated[str, Field(min_length=1, max_length=NAME)] = Field(
        description="The provider's model name, e.g. gpt-4o or claude-3-5-sonnet-20241022."
    )
    provider: Provider = Field(
        description="Who serves the model: openai, anthropic, cohere, amazon-bedrock, "
        "google-cloud-vertex-ai, ai21labs, databricks-model-serving or custom. Set the "
        "matching config block and no other."
    )
    task: Task = Field(
        description="The API the model serves: llm/v1/chat, llm/v1/completions or "
        "llm/v1/embeddings."
    )
    openai_config: OpenAIConfig | None = Field(
        default=None, description="Settings for provider openai (incl. Azure OpenAI)."
    )
    anthropic_config: AnthropicConfig | None = Field(
        default=None, description="Settings for provider anthropic."
    )
    cohere_config: CohereConfig | None = Field(
        default=None, description="Settings for provider cohere."
    )
    amazon_bedrock_config: AmazonBedrockConfig | None = Field(
        default=None, description="Settings for provider amazon-bedrock."
    )
    google_cloud_vertex_ai_config: GoogleCloudVertexAiConfig | None = Field(
        default=None, description="Settings for provider google-cloud-vertex-ai."
    )
    ai21labs_config: Ai21LabsConfig | None = Field(
        default=None, alias="ai21labsConfig", description="Settings for provider ai21labs."
    )
    databricks_model_serving_config: DatabricksModelServingConfig | None = Field(
        default=None, description="Settings for provider databricks-model-serving."
    )
    custom_provider_config: CustomProviderConfig | None = Field(
        default=None, description="Settings for provider custom."
    )

    @model_validator(mode="after")
    def _check_config_block(self) -> Self:
        wanted = PROVIDER_CONFIG_FIELDS[self.provider]
        present = [alias for alias in PROVIDER_CONFIG_FIELDS.values() if self.block(alias)]
        extra = [b for b in present if b != wanted]
        if extra:
            raise ValueError(
                f"externalModel.{', '.join(extra)} not allowed when provider is "
                f"{self.provider}; set only {wanted}"
            )
        if wanted not in present:
            raise ValueError(f"externalModel.{wanted} is required when provider is {self.provider}")
        return self

    def block(self, alias: str) -> ApiModel | None:
        """The config block with camelCase name `alias` (None when unset)."""
        for name, info in type(self).model_fields.items():
            if info.alias == alias:
                value: ApiModel | None = getattr(self, name)
                return value
        raise KeyError(alias)

    @property
    def config(self) -> ApiModel:
        """The provider's config block (validation guarantees it is set)."""
        block = self.block(PROVIDER_CONFIG_FIELDS[self.provider])
        assert block is not None
        return block
