{{/*
Resource name prefix: "<release>" when the release name already contains the chart name, else
"<release>-<chart>"; 63 characters at most (DNS label).
*/}}
{{- define "skein.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of the operator's objects: Deployment, webhook configurations, Lease prefix. */}}
{{- define "skein.operator" -}}
{{- printf "%s-operator" (include "skein.fullname" .) | trunc 54 | trimSuffix "-" -}}
{{- end -}}

{{- define "skein.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels shared by every object (app.kubernetes.io/* as Kubernetes recommends). */}}
{{- define "skein.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "skein.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: skein
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select the operator pods (stable across upgrades). The component keeps them apart from the
pods of a pipeline that happens to share the release's name (those carry component collector or query). */}}
{{- define "skein.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skein.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "skein.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "skein.operator" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* "<repository>:<tag or appVersion>" of an image block. */}}
{{- define "skein.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "skein.webhookService" -}}
{{- printf "%s-webhook" (include "skein.operator" .) -}}
{{- end -}}

{{- define "skein.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "skein.operator" .) -}}
{{- end -}}

{{- define "skein.leaseName" -}}
{{- printf "%s-leader" (include "skein.operator" .) -}}
{{- end -}}
