"""Fixtures of the end-to-end tests on the real node (defined in tests/e2e/realnode.py)."""

from tests.e2e.realnode import host_ip, image, llamacpp_image, model_claim, real_node, upstream

__all__ = ["host_ip", "image", "llamacpp_image", "model_claim", "real_node", "upstream"]
