"""Modelport: model serving endpoints on any Kubernetes cluster.

A `ServingEndpoint` custom resource declares self-hosted models and external
providers; the operator renders it into Deployments, Services and a ConfigMap and
sets their replicas from the requests in flight, and the gateway serves it behind one
OpenAI-compatible URL.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modelport")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
