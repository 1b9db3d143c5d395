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
What the operator does in a namespace it manages: operator/hypersend_operator/rbac_needs.py is the
table (why each verb), deploy/operator.yaml grants the same cluster-wide; tests compare all three.
Server-side apply needs create + patch, never update; children are watched to wake their parent
and deleted only when pruned.
*/}}
{{- define "hypersend-operator.namespacedRules" -}}
- apiGroups: ["hypersend.io"]
  resources: ["hypersendclusters"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["hypersend.io"]
  resources: ["hypersendclusters/status"]
  verbs: ["get", "patch"]
# Children carry blockOwnerDeletion owner references: OwnerReferencesPermissionEnforcement
# (OpenShift) wants update on the owner's finalizers.
- apiGroups: ["hypersend.io"]
  resources: ["hypersendclusters/finalizers"]
  verbs: ["update"]
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
# Generated Secrets are applied and read back, user ones (Atlas, Redis URL) read by name; list and
# watch (with the operator's label selector) feed the cache of generated Secrets. No update, no
# delete: owner references let the GC remove them.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# MongoDB PVCs are created by the StatefulSet; removed only under mongo.deletePolicy: Delete.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Cluster-level reads, cluster-wide installs only: kopf follows which custom resources exist.
A namespaced install turns kopf's scanning off and needs nothing cluster-wide. */}}
{{- define "hypersend-operator.clusterRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end -}}

{{/* The leader Lease: in the release namespace only; get and update on that one name. */}}
{{- define "hypersend-operator.leaseName" -}}
{{- include "hypersend-operator.fullname" . -}}
{{- end -}}

{{- define "hypersend-operator.leaseRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "hypersend-operator.leaseName" . | quote }}]
  verbs: ["get", "update"]
{{- end -}}

{{- define "hypersend-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
