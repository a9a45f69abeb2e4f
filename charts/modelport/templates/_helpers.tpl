{{/* The release's full name, at most 63 characters. */}}
{{- define "modelport.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelport.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: modelport
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modelport.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "modelport.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelport.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modelport.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "modelport.gatewayImage" -}}
{{- $repo := default .Values.image.repository .Values.gateway.image.repository -}}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) .Values.gateway.image.tag -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/*
The rules the operator needs in each namespace it manages. README.md explains
each one; keep the two in step.
*/}}
{{- define "modelport.namespacedRules" -}}
- apiGroups: [serving.modelport.io]
  resources: [servingendpoints]
  verbs: [get, list, watch]
- apiGroups: [serving.modelport.io]
  resources: [servingendpoints/status]
  verbs: [get, patch, update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [services, configmaps, serviceaccounts]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, update, delete]
{{- if .Values.gateway.readiness.enabled }}
# A gateway's RoleBinding to the readiness role (endpointslices, read-only).
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [{{ if .Values.watchNamespaces }}roles{{ else }}clusterroles{{ end }}]
  resourceNames: [{{ include "modelport.readinessRole" . }}]
  verbs: [bind]
{{- end }}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/*
The ClusterRoleBinding that lets gateways create TokenReviews, when the chart
creates it: always when the operator watches the whole cluster (endpoints may
turn ServiceAccount tokens on for themselves), and with watchNamespaces only
when gatewayAuth.serviceAccountTokens.enabled (it is then the operator's one
cluster-scoped right). Empty when not created.
*/}}
{{- define "modelport.tokenReviewBinding" -}}
{{- if or (not .Values.watchNamespaces) (dig "serviceAccountTokens" "enabled" true .Values.gatewayAuth) -}}
{{- printf "%s-gateways" (include "modelport.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The role that gateways are bound to, per namespace, to watch EndpointSlices: a
ClusterRole, or with watchNamespaces a Role in each namespace. */}}
{{- define "modelport.readinessRole" -}}
{{- printf "%s-gateway-readiness" (include "modelport.fullname" .) -}}
{{- end -}}

{{- define "modelport.readinessRules" -}}
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
{{- end -}}

{{/* The ClusterRole of the gateways: create TokenReviews, nothing else. */}}
{{- define "modelport.tokenReviewRole" -}}
{{- printf "%s-gateway-tokenreview" (include "modelport.fullname" .) -}}
{{- end -}}

{{/*
The operator's rights on that binding: keep its subjects (get, update; no list,
no other binding), and bind its one ClusterRole, which lets it name the role
without holding the role's right itself. README.md explains them.
*/}}
{{- define "modelport.tokenReviewRules" -}}
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterrolebindings]
  resourceNames: [{{ include "modelport.tokenReviewBinding" . }}]
  verbs: [get, patch, update]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [clusterroles]
  resourceNames: [{{ include "modelport.tokenReviewRole" . }}]
  verbs: [bind]
{{- end -}}

{{- define "modelport.apiSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end -}}

{{/*
The REST API server's rights in each namespace it serves. README.md explains
each one; keep the two in step.
*/}}
{{- define "modelport.apiNamespacedRules" -}}
- apiGroups: [serving.modelport.io]
  resources: [servingendpoints]
  verbs: [get, list, create, update, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
{{- end -}}

{{/*
MODELPORT_RATE_LIMITING: rateLimiting as the operator reads it. With the chart's own
Redis (rateLimiting.redis.enabled) and no address, the store is that Redis and its
password the chart's Secret.
*/}}
{{- define "modelport.rateLimiting" -}}
{{- $rl := .Values.rateLimiting -}}
{{- $store := dict "timeoutSeconds" $rl.store.timeoutSeconds -}}
{{- $address := $rl.store.address -}}
{{- $secret := $rl.store.passwordSecret.name -}}
{{- if and $rl.redis.enabled (not $address) -}}
{{- $address = printf "redis://%s-ratelimit.%s.svc:6379/0" (include "modelport.fullname" .) .Release.Namespace -}}
{{- $secret = default (printf "%s-ratelimit" (include "modelport.fullname" .)) $secret -}}
{{- end -}}
{{- if $address -}}
{{- $_ := set $store "address" $address -}}
{{- if $secret -}}
{{- $_ := set $store "passwordSecret" (dict "name" $secret "key" $rl.store.passwordSecret.key) -}}
{{- end -}}
{{- with $rl.store.username -}}
{{- $_ := set $store "username" . -}}
{{- end -}}
{{- end -}}
{{- dict "store" $store "failOpen" $rl.failOpen "reserveCompletionTokens" $rl.reserveCompletionTokens | toJson -}}
{{- end -}}

{{/*
The web console's labels and its rights in each namespace it shows: read endpoints,
their events, and the gateway pods' addresses (for their metrics when there is no
Prometheus). It never writes; callers' rights are checked with SubjectAccessReviews.
*/}}
{{- define "modelport.consoleSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: console
{{- end -}}

{{- define "modelport.consoleNamespacedRules" -}}
- apiGroups: [serving.modelport.io]
  resources: [servingendpoints]
  verbs: [get, list]
- apiGroups: [""]
  resources: [events, pods]
  verbs: [list]
{{- end -}}
