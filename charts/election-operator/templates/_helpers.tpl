{{/* Chart name. */}}
{{- define "election-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-qualified unless the release is already named after the chart. */}}
{{- define "election-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels selecting the operator's Pods. */}}
{{- define "election-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "election-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "election-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "election-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "election-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "election-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The namespaces of a namespaced install, comma-separated, sorted and without duplicates: those
of watchNamespaces, plus the release's own when the self policy lives there. Empty when
watchNamespaces is: the operator then works cluster-wide.
*/}}
{{- define "election-operator.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- $namespaces := .Values.watchNamespaces }}
{{- if and .Values.selfPolicy.enabled .Values.leaderElection.enabled }}
{{- $namespaces = append $namespaces .Release.Namespace }}
{{- end }}
{{- $namespaces | uniq | sortAlpha | join "," }}
{{- end }}
{{- end }}
