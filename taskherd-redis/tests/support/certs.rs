//! Certificates for tests of `rediss://` (shared by taskherd-redis's and `taskherd run`'s
//! tests): a certificate authority, the server's certificate (for 127.0.0.1) and a client
//! certificate, made for each test, so no key is committed and no `openssl` command is needed
//! (start a server with them with `Server::start_tls`).

#![allow(dead_code)]

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// PEM certificates and keys, written to a temporary directory for redis-server.
pub struct Certs {
    dir: PathBuf,
    pub ca: String,
    pub client: (String, String),
    /// Another authority's certificate, which the server's does not chain to.
    pub stranger: String,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = std::env::temp_dir().join(format!(
            "taskherd-redis-tls-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let authority = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca, issuer) = authority("taskherd test CA");
        let (stranger, _) = authority("another CA");
        let signed = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let server = signed(vec!["127.0.0.1".to_owned()]);
        let client = signed(vec!["client".to_owned()]);
        for (name, text) in [
            ("ca.pem", &ca),
            ("server.pem", &server.0),
            ("server.key", &server.1),
            ("client.pem", &client.0),
            ("client.key", &client.1),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Certs {
            dir,
            ca,
            client,
            stranger,
        }
    }

    /// The file holding `name` (`ca.pem`, `server.pem`, `server.key`, `client.pem`,
    /// `client.key`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
