//! `db local --tls`: a throwaway certificate authority and one node
//! certificate for a local cluster, made with rcgen.
//!
//! The CA signs one certificate for `localhost` and `127.0.0.1`, good for a
//! server and a client (every node serves with it and presents it to its
//! peers, and the REPL presents it too, so `--tls-client-auth required`
//! works). The CA's private key is never written: nothing else can ever be
//! signed by it, so the files trust this cluster only. A new pair is made
//! at each start.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// The PEM files of a local cluster's TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCerts {
    /// The CA certificate clients trust (`--tls-ca`, `redis-cli --cacert`).
    pub ca: PathBuf,
    /// The certificate every node (and the REPL) presents.
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
}

impl LocalCerts {
    /// The flags that make a node serve TLS with these files.
    pub fn node_flags(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--tls-cert".into(),
            self.cert.clone().into(),
            "--tls-key".into(),
            self.key.clone().into(),
            "--tls-ca".into(),
            self.ca.clone().into(),
        ]
    }

    /// The client settings of the REPL (and of `db local`'s own checks).
    pub fn client(&self) -> anyhow::Result<crate::tls::ClientTls> {
        crate::tls::ClientArgs {
            tls: true,
            tls_ca: Some(self.ca.clone()),
            tls_cert: Some(self.cert.clone()),
            tls_key: Some(self.key.clone()),
        }
        .load()?
        .context("TLS client settings")
    }
}

/// Makes a CA and a node certificate in `dir` (created if needed; files
/// there from an earlier start are replaced): `ca.pem`, `node.crt`,
/// `node.key`.
pub fn make(dir: &Path) -> anyhow::Result<LocalCerts> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "distro-db local cluster CA (throwaway)");
    let ca_key = KeyPair::generate().context("cannot make the CA's key")?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("cannot make the CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "distro-db local node");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().context("cannot make the node's key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the node's certificate")?;

    let certs = LocalCerts {
        ca: dir.join("ca.pem"),
        cert: dir.join("node.crt"),
        key: dir.join("node.key"),
    };
    write(&certs.ca, &ca_cert.pem(), 0o644)?;
    write(&certs.cert, &cert.pem(), 0o644)?;
    write(&certs.key, &key.serialize_pem(), 0o600)?;
    Ok(certs)
}

/// Writes `text` to `path` with `mode` (replacing the file: a key never
/// sits, even briefly, in a file others may read).
fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_load_as_a_node_and_a_client_would_load_them() {
        let dir = tempfile::tempdir().unwrap();
        let certs = make(&dir.path().join("tls")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&certs.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The node's loader checks the key matches and the chain leads to the CA.
        crate::tls::NodeTls::load(&crate::tls::TlsConfig {
            cert: certs.cert.clone(),
            key: certs.key.clone(),
            ca: certs.ca.clone(),
            client_auth: crate::tls::ClientAuth::Required,
        })
        .unwrap();
        certs.client().unwrap();
        // A second start replaces the files.
        let again = make(&dir.path().join("tls")).unwrap();
        assert_eq!(again, certs);
    }
}
