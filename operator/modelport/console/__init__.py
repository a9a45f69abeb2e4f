"""The web console (``modelport console``): every endpoint a person may see, its state,
entities, traffic, conditions, events and metrics, and a playground to chat with one
endpoint or two side by side.

Server-rendered HTML with a little hand-written JavaScript (streaming the playground's
answers, refreshing charts); no JavaScript build, no template engine: pages are made by
pure functions that escape every value they insert. Layout, top-down:

- ``views`` — pure: an endpoint and its events as what a page shows.
- ``series`` — pure: gateway metrics (scraped, or Prometheus' answers) as chart series.
- ``svg`` — pure: series as inline SVG charts.
- ``pages`` — pure: the HTML of each page.
- ``sessions`` — signed-in people: an opaque cookie for a token kept server-side.
- ``sources`` — where the numbers come from: Prometheus when configured, else the
  endpoint's gateway pods, scraped while someone watches.
- ``app`` — the routes (aiohttp), thin; ``server`` runs them; ``command`` is the CLI.

Who may see what is Kubernetes RBAC, checked by the REST API's pieces
(:mod:`modelport.restapi.auth`, ``access``, ``kube``): the console authenticates a
person's token (a ServiceAccount token for the audience ``modelport``, or an OIDC token
of the configured issuer, pasted at sign-in or passed by an authenticating proxy) and
asks a SubjectAccessReview before it shows a namespace's endpoints, one endpoint, or
lets the playground call one. The playground calls the endpoint's gateway *with the
person's own token*, so the gateway's ``spec.aiGateway.auth`` (its allow list, its rate
limits by caller) applies to them exactly as to any client; the console never calls a
model with a credential of its own.
"""
