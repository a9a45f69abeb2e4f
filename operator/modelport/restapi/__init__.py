"""The reference service's serving-endpoints REST API over Kubernetes (`modelport api`).

Scripts, SDKs (databricks-sdk, MLflow's deployments client) and Terraform written for the
managed service talk to this server; it keeps each "workspace"'s endpoints as
`ServingEndpoint` objects in one namespace and lets Kubernetes RBAC decide who may do
what. Layout, top-down:

- ``mapping`` — pure: the reference service's snake_case bodies <-> `ServingEndpoint`
  (also behind ``modelport import`` / ``modelport export``).
- ``views`` — pure: an endpoint and its status as the service's GET and list answers.
- ``workspaces`` — pure: which namespace a request is for.
- ``access`` — pure: what each operation asks of RBAC (a SubjectAccessReview).
- ``openapi`` — pure: an endpoint's OpenAPI document.
- ``errors`` — the service's ``{error_code, message}`` errors.
- ``kube`` — the only module of the server that talks to the Kubernetes API (async).
- ``auth`` — callers: bearer token -> Kubernetes identity -> SubjectAccessReview.
- ``invocations`` — the proxy to an endpoint's gateway.
- ``app`` — the routes (aiohttp), thin; ``server`` runs them; ``command`` is the CLI.

Nothing here imports the controller or Kopf, and the gateway never imports this package.
The web console (``modelport.console``) reuses ``kube``, ``auth``, ``access`` and
``invocations`` (who the caller is, what RBAC lets them see, the way to a gateway);
nothing here imports the console.
"""
