{{/* The bpfmesh image, from values. */}}
{{- define "bpfmesh.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
{{/* Fail on a mode the chart does not have. */}}
{{- define "bpfmesh.checkMode" -}}
{{- if not (has .Values.mode (list "node" "cni")) -}}
{{- fail (printf "mode %q: use node (the bpfmesh node DaemonSet) or cni (the bpfmesh-cni plugin); the init container mode installs nothing cluster-wide" .Values.mode) -}}
{{- end -}}
{{- end -}}
