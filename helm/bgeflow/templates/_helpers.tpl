{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "bgeflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release already contains the chart name. Kept to 40
characters so that suffixed object names (-retrain-<hash>, -retriever-<hash>) fit 63. */}}
{{- define "bgeflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "bgeflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "bgeflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bgeflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bgeflow.labels" -}}
helm.sh/chart: {{ include "bgeflow.chart" . }}
{{ include "bgeflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bgeflow
{{- end }}

{{- define "bgeflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "bgeflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference; call with (dict "root" $ "kind" "ops"|"gpu"). */}}
{{- define "bgeflow.image" -}}
{{- $img := index .root.Values.image .kind }}
{{- printf "%s/%s:%s" .root.Values.image.registry $img.repository (default .root.Chart.AppVersion .root.Values.image.tag) }}
{{- end }}

{{- define "bgeflow.experiment" -}}
{{- default (include "bgeflow.fullname" .) .Values.kfp.experiment }}
{{- end }}

{{/* s3://bucket/prefix under which every stage writes. */}}
{{- define "bgeflow.outputRoot" -}}
{{- $bucket := required "s3.bucket is required by retrain and direct mode" .Values.s3.bucket }}
{{- if .Values.s3.prefix }}
{{- printf "s3://%s/%s" $bucket (trimAll "/" .Values.s3.prefix) }}
{{- else }}
{{- printf "s3://%s" $bucket }}
{{- end }}
{{- end }}

{{/* The retrain spec file (the ConfigMap's content and the trigger's input). */}}
{{- define "bgeflow.retrainSpec" -}}
{{- $spec := omit .Values.retrain "enabled" }}
{{- if not $spec.work_uri }}
{{- $_ := set $spec "work_uri" (include "bgeflow.outputRoot" .) }}
{{- end }}
{{- toYaml $spec }}
{{- end }}

{{- define "bgeflow.retrainSpecHash" -}}
{{- include "bgeflow.retrainSpec" . | sha256sum | trunc 10 }}
{{- end }}

{{/* Hash naming the direct-mode objects: any change of spec or direct settings gives new names. */}}
{{- define "bgeflow.directHash" -}}
{{- printf "%s\n%s\n%s" (include "bgeflow.retrainSpec" .) (toJson .Values.direct) (include "bgeflow.image" (dict "root" . "kind" "gpu")) | sha256sum | trunc 10 }}
{{- end }}

{{/* A direct-mode PyTorchJob's name; call with (dict "root" $ "model" "retriever"|"reranker"). The
training operator names each replica's pod and Service <job>-<type>-<index>, and a Service name is
a DNS-1035 label (<= 63): the release part is cut to 30 so that <job>-worker-9999 fits. */}}
{{- define "bgeflow.trainJobName" -}}
{{- printf "%s-%s-%s" (include "bgeflow.fullname" .root | trunc 30 | trimSuffix "-") .model (include "bgeflow.directHash" .root) }}
{{- end }}

{{/* S3 settings as env. Static keys only by secretKeyRef from an existing Secret. */}}
{{- define "bgeflow.s3Env" -}}
- name: AWS_REGION
  value: {{ .Values.s3.region | quote }}
{{- with .Values.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
- name: BGEFLOW_LOG_FORMAT
  value: json
- name: HOME
  value: /tmp
- name: HF_HOME
  value: /cache/huggingface
{{- end }}

{{/* Container securityContext, image pull policy: the same for every container. */}}
{{- define "bgeflow.containerCommon" -}}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/* Pod-level fields shared by every pod; call with (dict "root" $ "gpu" bool). The
ServiceAccount token is not automounted: no bgeflow pod talks to the Kubernetes API except
the launcher, which runs inside KFP runs (not rendered here). IRSA and Pod Identity inject
their own token volumes regardless. */}}
{{- define "bgeflow.podCommon" -}}
{{- $v := .root.Values -}}
serviceAccountName: {{ include "bgeflow.serviceAccountName" .root }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $nodeSelector := $v.nodeSelector }}
{{- $tolerations := $v.tolerations }}
{{- if .gpu }}
{{- $nodeSelector = merge (deepCopy $v.gpu.nodeSelector) $v.nodeSelector }}
{{- $tolerations = concat $v.tolerations $v.gpu.tolerations }}
{{- end }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "bgeflow.podMetadata" -}}
labels:
  {{- include "bgeflow.labels" .root | nindent 2 }}
  app.kubernetes.io/component: {{ .component }}
  {{- with .root.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .root.Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Writable scratch for a read-only root filesystem: /tmp and the model cache. */}}
{{- define "bgeflow.scratchVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /cache
{{- end }}

{{- define "bgeflow.scratchVolumes" -}}
- name: tmp
  emptyDir: {}
- name: cache
  emptyDir: {}
{{- end }}

{{/* Env and args the hook Jobs share to reach KFP. */}}
{{- define "bgeflow.kfpEnv" -}}
- name: KFP_HOST
  value: {{ .Values.kfp.host | quote }}
{{- with .Values.kfp.namespace }}
- name: KFP_NAMESPACE
  value: {{ . | quote }}
{{- end }}
{{- if .Values.kfp.serviceAccountToken }}
- name: KF_PIPELINES_SA_TOKEN_PATH
  value: /var/run/secrets/kubeflow/pipelines/token
{{- end }}
- name: BGEFLOW_LOG_FORMAT
  value: json
- name: HOME
  value: /tmp
{{- end }}

{{/* Hook annotations shared by the KFP hook Jobs; call with (dict "weight" N). Helm's
post-install/post-upgrade hooks become Argo CD PostSync hooks: they run after the release's
objects are applied, on every sync, which is safe because every hook is idempotent.
(pre-upgrade would map to PreSync, which fires before the ConfigMap it reads is updated.)
Flux's helm-controller runs them on install and upgrade only. */}}
{{- define "bgeflow.hookAnnotations" -}}
helm.sh/hook: post-install,post-upgrade
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
argocd.argoproj.io/hook: PostSync
argocd.argoproj.io/hook-delete-policy: BeforeHookCreation,HookSucceeded
argocd.argoproj.io/sync-wave: {{ .weight | quote }}
{{- end }}

{{/* Pod spec of a KFP hook Job; call with (dict "root" $ "component" name "args" list). */}}
{{- define "bgeflow.hookPod" -}}
{{- $root := .root -}}
metadata:
  {{- include "bgeflow.podMetadata" (dict "root" $root "component" .component) | nindent 2 }}
spec:
  restartPolicy: Never
  {{- include "bgeflow.podCommon" (dict "root" $root "gpu" false) | nindent 2 }}
  containers:
    - name: {{ .component }}
      image: {{ include "bgeflow.image" (dict "root" $root "kind" "ops") }}
      {{- include "bgeflow.containerCommon" $root | nindent 6 }}
      command: ["bgeflow"]
      args:
        {{- range .args }}
        - {{ . | quote }}
        {{- end }}
      env:
        {{- include "bgeflow.kfpEnv" $root | nindent 8 }}
      resources:
        {{- toYaml $root.Values.hooks.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        {{- if .spec }}
        - name: retrain-spec
          mountPath: /etc/bgeflow
          readOnly: true
        {{- end }}
        {{- if $root.Values.kfp.serviceAccountToken }}
        - name: kfp-token
          mountPath: /var/run/secrets/kubeflow/pipelines
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir: {}
    {{- if .spec }}
    - name: retrain-spec
      configMap:
        name: {{ include "bgeflow.fullname" $root }}-retrain
    {{- end }}
    {{- if $root.Values.kfp.serviceAccountToken }}
    - name: kfp-token
      projected:
        sources:
          - serviceAccountToken:
              path: token
              audience: pipelines.kubeflow.org
              expirationSeconds: 3600
    {{- end }}
{{- end }}

{{/* Direct mode: where this spec's stages read and write. */}}
{{- define "bgeflow.directRoot" -}}
{{- printf "%s/direct/%s" (include "bgeflow.outputRoot" .) (include "bgeflow.directHash" .) }}
{{- end }}

{{/* Direct mode: the ConfigMap of the retrain spec the Jobs of this spec read. Named by the Jobs'
hash: a Job reads the spec it was rendered from, never a later generation's. */}}
{{- define "bgeflow.directSpecName" -}}
{{- printf "%s-direct-%s" (include "bgeflow.fullname" .) (include "bgeflow.directHash" .) }}
{{- end }}

{{/* Init container that writes a direct-mode step's spec into the step-spec volume (/spec/<step>.yaml)
from the retrain spec, with the code the KFP pipeline's components use (bgeflow.platform.direct);
call with (dict "root" $ "step" STEP), STEP one of bgeflow.platform.direct.STEPS. It reads
nothing remote, so it gets no S3 settings. */}}
{{- define "bgeflow.stepSpecInitContainer" -}}
- name: step-spec
  image: {{ include "bgeflow.image" (dict "root" .root "kind" "ops") }}
  {{- include "bgeflow.containerCommon" .root | nindent 2 }}
  command: ["bgeflow"]
  args: ["pipeline", "step-spec", {{ .step | quote }}, "--spec", "/etc/bgeflow/retrain.yaml", "--root", {{ include "bgeflow.directRoot" .root | quote }}, "--output", {{ printf "/spec/%s.yaml" .step | quote }}]
  env:
    - name: BGEFLOW_LOG_FORMAT
      value: json
    - name: HOME
      value: /tmp
  resources:
    {{- toYaml .root.Values.hooks.resources | nindent 4 }}
  volumeMounts:
    {{- include "bgeflow.scratchVolumeMounts" .root | nindent 4 }}
    - name: retrain-spec
      mountPath: /etc/bgeflow
      readOnly: true
    - name: step-spec
      mountPath: /spec
{{- end }}

{{/* The volumes of bgeflow.stepSpecInitContainer: the retrain spec and the step's spec. The step's
container mounts step-spec read-only at /spec. */}}
{{- define "bgeflow.stepSpecVolumes" -}}
- name: retrain-spec
  configMap:
    name: {{ include "bgeflow.directSpecName" . }}
- name: step-spec
  emptyDir: {}
{{- end }}

{{/* Init container that blocks until the previous stage's output exists; call with
(dict "root" $ "uri" marker), or (dict "root" $ "uris" (list ...)) to wait for every one. The marker
is the file each step writes last. */}}
{{- define "bgeflow.waitInitContainer" -}}
- name: wait-for-input
  image: {{ include "bgeflow.image" (dict "root" .root "kind" "ops") }}
  {{- include "bgeflow.containerCommon" .root | nindent 2 }}
  command: ["bgeflow"]
  args: ["pipeline", "wait", {{- range (.uris | default (list .uri)) }} "--uri", {{ . | quote }},{{- end }} "--timeout", {{ .root.Values.direct.waitTimeoutSeconds | quote }}]
  env:
    {{- include "bgeflow.s3Env" .root | nindent 4 }}
  resources:
    {{- toYaml .root.Values.hooks.resources | nindent 4 }}
  volumeMounts:
    {{- include "bgeflow.scratchVolumeMounts" . | nindent 4 }}
{{- end }}

{{/* The run spec's training backend (retrain.training.backend), "kubernetes" read as its newer
name "pytorchjob": which job kind the launcher creates, so which RBAC rules and runtime to render. */}}
{{- define "bgeflow.trainingBackend" -}}
{{- $backend := .Values.retrain.training.backend }}
{{- eq $backend "kubernetes" | ternary "pytorchjob" $backend }}
{{- end }}
