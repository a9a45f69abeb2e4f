"""Provider adapters, one module each, registered by provider name."""

from __future__ import annotations

from modelport.gateway.providers.ai21labs import AI21LabsProvider
from modelport.gateway.providers.anthropic import AnthropicProvider
from modelport.gateway.providers.base import Provider
from modelport.gateway.providers.bedrock import BedrockProvider
from modelport.gateway.providers.cohere import CohereProvider
from modelport.gateway.providers.custom import CustomProvider
from modelport.gateway.providers.databricks import DatabricksModelServingProvider
from modelport.gateway.providers.mlflow import MlflowProvider
from modelport.gateway.providers.openai import OpenAIProvider
from modelport.gateway.providers.selfhosted import SelfHostedProvider
from modelport.gateway.providers.vertex import VertexProvider
from modelport.gatewayconfig import ProviderName

REGISTRY: dict[ProviderName, Provider] = {
    ProviderName.OPENAI: OpenAIProvider(),
    ProviderName.ANTHROPIC: AnthropicProvider(),
    ProviderName.COHERE: CohereProvider(),
    ProviderName.AMAZON_BEDROCK: BedrockProvider(),
    ProviderName.GOOGLE_CLOUD_VERTEX_AI: VertexProvider(),
    ProviderName.AI21LABS: AI21LabsProvider(),
    ProviderName.DATABRICKS_MODEL_SERVING: DatabricksModelServingProvider(),
    ProviderName.CUSTOM: CustomProvider(),
    ProviderName.SELF_HOSTED: SelfHostedProvider(),
    ProviderName.MLFLOW: MlflowProvider(),
}
"""Every provider; a missing entry is a bug caught by the registry test."""

__all__ = ["REGISTRY", "Provider"]
