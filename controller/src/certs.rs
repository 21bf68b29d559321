//! Certificates for mutual TLS between the controller and the agents: a CA
//! per deployment, a client certificate for the controller, and a server
//! certificate per agent whose names are the host's inventory name and
//! address. Private keys are written 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// Where a deployment's certificates live: `.paddock/<deployment>/certs`
/// next to the inventory.
pub fn certs_dir(inventory_path: &Path, deployment: &str) -> PathBuf {
    inventory_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(".paddock")
        .join(deployment)
        .join("certs")
}

pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn ca(dir: &Path) -> CertFiles {
    CertFiles {
        cert: dir.join("ca.pem"),
        key: dir.join("ca.key"),
    }
}

pub fn controller(dir: &Path) -> CertFiles {
    CertFiles {
        cert: dir.join("controller.pem"),
        key: dir.join("controller.key"),
    }
}

pub fn agent(dir: &Path, host: &str) -> CertFiles {
    CertFiles {
        cert: dir.join("agents").join(format!("{host}.pem")),
        key: dir.join("agents").join(format!("{host}.key")),
    }
}

fn rcgen_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Certs(format!("{what}: {e}"))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Error::io(dir))?;
        crate::secrets::ignore_in_git(dir)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(Error::io(path))?;
    f.write_all(text.as_bytes()).map_err(Error::io(path))
}

fn name(common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Paddock");
    dn.push(DnType::CommonName, common);
    dn
}

/// Creates the CA and the controller's certificate, unless the CA exists
/// (then nothing is touched). Returns whether it created them.
pub fn init(dir: &Path, deployment: &str) -> Result<bool, Error> {
    let ca = ca(dir);
    if ca.cert.exists() {
        crate::secrets::ignore_in_git(dir)?;
        return Ok(false);
    }
    let ca_key = KeyPair::generate().map_err(rcgen_err("CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("CA"))?;
    params.distinguished_name = name(&format!("Paddock CA for {deployment}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    let ca_cert = params.self_signed(&ca_key).map_err(rcgen_err("CA"))?;
    write(&ca.key, &ca_key.serialize_pem(), 0o600)?;
    write(&ca.cert, &ca_cert.pem(), 0o644)?;
    let files = controller(dir);
    let issuer = Issuer::new(params, ca_key);
    sign(
        &issuer,
        "paddock-controller",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        730,
        &files,
    )?;
    Ok(true)
}

/// Issues the certificate an agent serves with: its names are the host's
/// inventory name and address, which the controller checks when it dials.
pub fn issue(dir: &Path, host: &str, address: IpAddr) -> Result<CertFiles, Error> {
    let ca = ca(dir);
    let ca_pem = std::fs::read_to_string(&ca.cert).map_err(|e| {
        Error::Certs(format!(
            "{}: {e}; create the CA first with `paddock certs init`",
            ca.cert.display()
        ))
    })?;
    let key_pem = std::fs::read_to_string(&ca.key).map_err(Error::io(&ca.key))?;
    let key = KeyPair::from_pem(&key_pem).map_err(rcgen_err("CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(rcgen_err("CA certificate"))?;
    let files = agent(dir, host);
    sign(
        &issuer,
        host,
        &[
            SanType::DnsName(host.try_into().map_err(rcgen_err("host name"))?),
            SanType::IpAddress(address),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
        730,
        &files,
    )?;
    Ok(files)
}

/// Copies what a host needs into `out` under the names the provisioning
/// script expects: ca.pem, agent.pem, agent.key (0600).
pub fn export(dir: &Path, files: &CertFiles, out: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    for (from, name) in [
        (ca(dir).cert, "ca.pem"),
        (files.cert.clone(), "agent.pem"),
        (files.key.clone(), "agent.key"),
    ] {
        let to = out.join(name);
        std::fs::copy(&from, &to).map_err(Error::io(&to))?;
        let mode = if name == "agent.key" { 0o600 } else { 0o644 };
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io(&to))?;
    }
    Ok(())
}

fn sign(
    issuer: &Issuer<'_, KeyPair>,
    common: &str,
    sans: &[SanType],
    usage: ExtendedKeyUsagePurpose,
    days: i64,
    files: &CertFiles,
) -> Result<(), Error> {
    let key = KeyPair::generate().map_err(rcgen_err("key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err(common))?;
    params.distinguished_name = name(common);
    params.subject_alt_names = sans.to_vec();
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    let cert = params.signed_by(&key, issuer).map_err(rcgen_err(common))?;
    write(&files.key, &key.serialize_pem(), 0o600)?;
    write(&files.cert, &cert.pem(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn init_is_idempotent_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        assert!(init(dir.path(), "lab").unwrap());
        let first = std::fs::read_to_string(ca(dir.path()).cert).unwrap();
        assert!(!init(dir.path(), "lab").unwrap(), "an existing CA is kept");
        assert_eq!(std::fs::read_to_string(ca(dir.path()).cert).unwrap(), first);
        let files = issue(dir.path(), "box1", "127.0.1.1".parse().unwrap()).unwrap();
        for key in [ca(dir.path()).key, controller(dir.path()).key, files.key] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
}
