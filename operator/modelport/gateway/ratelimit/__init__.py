"""Rate limits (``spec.aiGateway.rateLimits``) that hold exactly across gateway replicas.

- :mod:`.policy`: which limits apply to a caller, and their precedence (pure);
- :mod:`.store`: the sliding-window model, and the in-process store;
- :mod:`.redis_store`: the same model in Redis, one Lua script (``ratelimit.lua``) per
  decision, shared by every replica;
- :mod:`.limiter`: the pipeline stage (admission, stream tap, settlement, headers).

:func:`build` assembles them from the gateway's config.
"""

from __future__ import annotations

from pathlib import Path

from modelport import gatewayconfig as gc
from modelport.gateway.metrics import Metrics
from modelport.gateway.ratelimit.limiter import RateLimiter
from modelport.gateway.ratelimit.store import MemoryStore, Store
from modelport.gateway.secrets import SecretStore

__all__ = ["RateLimiter", "build"]


def build(config: gc.GatewayConfig, secrets_dir: Path, metrics: Metrics) -> RateLimiter:
    """The limiter of ``config``: counting in its Redis store, or in this process."""
    settings = config.ai_gateway.rate_limiting
    store: Store
    if settings.store is None:
        store = MemoryStore()
    else:
        from modelport.gateway.ratelimit.redis_store import RedisStore

        store = RedisStore(
            settings.store, SecretStore(secrets_dir), on_round_trip=metrics.rate_limit_store_call
        )
        metrics.track_rate_limit_store(lambda: store.up)
    return RateLimiter(config.ai_gateway, config.endpoint_name, store, metrics=metrics)
