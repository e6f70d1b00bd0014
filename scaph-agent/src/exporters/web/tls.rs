//! `tls_server_config` onto rustls.
//!
//! `client_auth_type`, Go's values onto rustls verifiers:
//! - NoClientCert: no certificate asked for.
//! - RequestClientCert: asked for, optional, not checked against a CA
//!   (the handshake still proves the client holds the certificate's key).
//! - RequireAnyClientCert (and the old RequireClientCert): the same, required.
//! - VerifyClientCertIfGiven: `WebPkiClientVerifier` on `client_ca_file`,
//!   allowing clients without a certificate.
//! - RequireAndVerifyClientCert: `WebPkiClientVerifier` on `client_ca_file`.
//!
//! `cipher_suites` (Go names) restricts the TLS 1.2 suites, as in Go; TLS 1.3
//! suites are always on, and naming one is accepted. Names rustls does not
//! implement (CBC, RSA key exchange...) are errors, as are curves it lacks.
use std::sync::Arc;

use rustls::{
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime},
    server::{
        danger::{ClientCertVerified, ClientCertVerifier},
        WebPkiClientVerifier,
    },
    DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject as _;

use super::config::{ClientAuth, Pem, TlsSettings, TlsVersion, WebConfigError};

/// The rustls server configuration for `settings`; reads the certificate,
/// key and client CA files.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, WebConfigError> {
    let (cert_pem, cert_path) = settings.cert.read("cert")?;
    let invalid = |path: &std::path::Path, message: String| WebConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&cert_path, format!("reading the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(&cert_path, "no certificate in it".into()));
    }
    let (key_pem, key_path) = settings.key.read("key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(&key_path, format!("reading the private key: {e}")))?;

    let provider = Arc::new(provider(settings).map_err(|m| invalid(&cert_path, m))?);
    let versions: Vec<&'static SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (settings.min_version..=settings.max_version).contains(v))
    .map(|(_, v)| v)
    .collect();
    let tls = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| WebConfigError::Tls { path, source }
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(tls(&cert_path))?;
    let any = |mandatory| {
        Arc::new(AnyClientCert {
            mandatory,
            algorithms: provider.signature_verification_algorithms,
        })
    };
    let builder = match settings.client_auth {
        ClientAuth::NoClientCert => builder.with_no_client_auth(),
        ClientAuth::RequestClientCert => builder.with_client_cert_verifier(any(false)),
        ClientAuth::RequireAnyClientCert => builder.with_client_cert_verifier(any(true)),
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let ca = settings
                .client_ca
                .as_ref()
                .ok_or_else(|| invalid(&cert_path, "no client_ca_file".into()))?;
            let (roots, ca_path) = client_roots(ca)?;
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if settings.client_auth == ClientAuth::VerifyClientCertIfGiven {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| invalid(&ca_path, format!("client CAs: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(tls(&key_path))?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// ring's suites and groups, narrowed to `cipher_suites` and `curve_preferences`.
fn provider(settings: &TlsSettings) -> Result<CryptoProvider, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !settings.cipher_suites.is_empty() {
        let (tls13, tls12): (
            Vec<rustls::SupportedCipherSuite>,
            Vec<rustls::SupportedCipherSuite>,
        ) = provider
            .cipher_suites
            .iter()
            .partition(|s| s.tls13().is_some());
        let mut chosen = tls13;
        for name in &settings.cipher_suites {
            if GO_TLS13_SUITES.contains(&name.as_str()) {
                continue;
            }
            let suite = tls12.iter().find(|s| format!("{:?}", s.suite()) == *name).ok_or_else(|| {
                let known: Vec<String> = tls12.iter().map(|s| format!("{:?}", s.suite())).collect();
                format!(
                    "tls_server_config: cipher suite {name:?} is unknown or not supported by rustls (use: {known:?})"
                )
            })?;
            chosen.push(*suite);
        }
        provider.cipher_suites = chosen;
    }
    if !settings.curves.is_empty() {
        let groups = settings
            .curves
            .iter()
            .map(|name| {
                let group = match name.as_str() {
                    "X25519" => NamedGroup::X25519,
                    "CurveP256" => NamedGroup::secp256r1,
                    "CurveP384" => NamedGroup::secp384r1,
                    _ => return Err(format!("tls_server_config: curve {name:?} is unknown or not supported by rustls (use X25519, CurveP256, CurveP384)")),
                };
                provider.kx_groups.iter().find(|g| g.name() == group).copied().ok_or_else(|| format!("curve {name} missing"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        provider.kx_groups = groups;
    }
    Ok(provider)
}

/// Go's names of the TLS 1.3 suites (always enabled, in Go as here).
const GO_TLS13_SUITES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

fn client_roots(ca: &Pem) -> Result<(RootCertStore, std::path::PathBuf), WebConfigError> {
    let (pem, path) = ca.read("client_ca")?;
    let invalid = |message: String| WebConfigError::Invalid {
        path: path.clone(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(format!("reading a client CA: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("a client CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(invalid("no client CA certificate in it".into()));
    }
    Ok((roots, path))
}

/// Go's RequestClientCert and RequireAnyClientCert: any certificate the
/// client proves it holds the key of, without a chain to a CA.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
