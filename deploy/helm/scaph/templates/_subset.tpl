{{/*
The templates keep to a small subset of Helm's template language: Go
template actions (if, else, with, range, and, or, not) and four Helm
functions, toYaml, nindent, quote, default; no include/define, lookup,
other sprig functions, .Capabilities or .Files. Objects: .Values,
.Release.Name, .Release.Namespace, .Release.Service, .Chart.Name,
.Chart.AppVersion. No helm binary comes from this project's package
registries, so tests/tests/helm.rs renders the chart with gtmpl (Go's
text/template for Rust) plus those four functions, and
tests/tests/helm_validate.rs holds that renderer to Helm's own code (the
library in PyPI's helm-sdkpy wheel). A template that needs more must extend
tests/tests/helm_support first.
*/}}
