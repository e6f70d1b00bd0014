{{/*
The templates keep to a small subset of Helm's template language, because
no helm binary can be installed from this project's package registries:
tests/tests/helm.rs renders the chart with gtmpl (Go's text/template for
Rust) and implements the few Helm functions used here, with Helm's meaning:
toYaml, nindent, quote, default. Nothing else: no include/define, no
lookup, no other sprig function, no .Capabilities or .Files. Objects:
.Values, .Release.Name, .Release.Namespace, .Release.Service, .Chart.Name,
.Chart.AppVersion. A template that needs more must extend that test first.
*/}}
