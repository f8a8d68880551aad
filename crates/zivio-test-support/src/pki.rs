//! A certificate authority for local HTTPS receivers (benchmarks and tests): the service trusts
//! its PEM (`ZIVIO_WEBHOOKS_EXTRA_ROOT_CA`), and it signs server certificates good or bad (expired,
//! for another host) on demand.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCa {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn issuer_certificate(&self) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap()
    }
}

impl TestCa {
    /// A new CA with a fresh key.
    pub fn generate() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Zivio test receiver CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A TLS server configuration with a certificate for `host` (and 127.0.0.1 when `host` is
    /// `localhost`), expired when `expired`.
    pub fn server(&self, host: &str, expired: bool) -> Arc<rustls::ServerConfig> {
        self.server_with(host, expired, None)
    }

    /// [`TestCa::server`] that admits only clients presenting a certificate of `clients`.
    pub fn server_requiring_clients_of(
        &self,
        host: &str,
        clients: &TestCa,
    ) -> Arc<rustls::ServerConfig> {
        self.server_with(host, false, Some(clients))
    }

    /// A client certificate for `name` and its key, both PEM.
    pub fn client(&self, name: &str) -> (String, String) {
        self.client_valid_until(
            name,
            time::OffsetDateTime::now_utc() + time::Duration::days(365),
        )
    }

    /// [`TestCa::client`] valid until `not_after`.
    pub fn client_valid_until(
        &self,
        name: &str,
        not_after: time::OffsetDateTime,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.not_after = not_after;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn server_with(
        &self,
        host: &str,
        expired: bool,
        clients: Option<&TestCa>,
    ) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
        if host == "localhost" {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        params.distinguished_name.push(DnType::CommonName, host);
        if expired {
            params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
            params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(clients) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(clients.issuer_certificate()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
