{{/* Names and labels shared by every template. */}}
{{- define "hypersend-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "hypersend-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hypersend-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hypersend-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hypersend-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hypersend-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hypersend-operator.labels" -}}
{{ include "hypersend-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hypersend
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
What the operator does in a namespace it manages (deploy/operator.yaml grants the same cluster-wide;
a unit test compares them). Server-side apply needs create + patch, never update; children are
watched to wake their parent and deleted only when pruned.
*/}}
{{- define "hypersend-operator.namespacedRules" -}}
- apiGroups: ["hypersend.io"]
  resources: ["hypersendclusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["hypersend.io"]
  resources: ["hypersendclusters/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# status.chat.connections: the chat pods' values of the HPA's connection metric.
- apiGroups: ["custom.metrics.k8s.io"]
  resources: ["pods/hypersend_websocket_connections"]
  verbs: ["get"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses", "networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors", "prometheusrules"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Secrets by name only: the generated ones are applied and read back, user ones (Atlas, Redis URL)
# only read; no list or watch of anyone's Secrets, no delete (owner references let the GC do it).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# MongoDB PVCs are created by the StatefulSet; removed only under mongo.deletePolicy: Delete.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Cluster-level reads: kopf follows which custom resources exist. */}}
{{- define "hypersend-operator.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{- define "hypersend-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
