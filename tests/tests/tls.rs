//! Mutual TLS between controller and agents, on by default: the lab's agents
//! accept only clients whose certificate chains to the lab's CA, and the
//! controller accepts only an agent certificate naming the address dialled.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use paddock_proto::v1::{GetFactsRequest, agent_client::AgentClient};
use paddock_tests::{Lab, stdout};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Calls GetFacts on box1's agent with the given TLS setup (None: plaintext).
async fn facts(lab: &Lab, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let addr = format!("{}:7443", lab.addresses[0]);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    AgentClient::new(channel)
        .get_facts(GetFactsRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("rpc: {s}"))
}

fn client_cert(issuer: &Issuer<'_, KeyPair>, expired: bool) -> Identity {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    Identity::from_pem(cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_accept_only_clients_of_their_ca_and_the_controller_checks_the_agent() {
    let lab = Lab::new(29);
    let up = lab.up(&[]);
    assert!(up.status.success());
    assert!(
        stdout(&up).contains("Cluster healthy"),
        "the lab runs over mutual TLS"
    );
    let certs = lab.dir().join(".paddock/lab/certs");
    let read = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap();
    for key in ["ca.key", "controller.key", "agents/box1.key"] {
        let mode = std::fs::metadata(certs.join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let ca = Certificate::from_pem(read("ca.pem"));
    let ip = lab.addresses[0].to_string();
    let base = || {
        ClientTlsConfig::new()
            .ca_certificate(ca.clone())
            .domain_name(ip.clone())
    };

    // The controller's own certificate works.
    let me = Identity::from_pem(read("controller.pem"), read("controller.key"));
    facts(&lab, Some(base().identity(me.clone())))
        .await
        .expect("the controller's certificate is accepted");

    // Plaintext, no client certificate, another CA's, an expired one: refused.
    assert!(facts(&lab, None).await.is_err(), "plaintext refused");
    assert!(
        facts(&lab, Some(base())).await.is_err(),
        "no client certificate refused"
    );
    let other_key = KeyPair::generate().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_ca = Issuer::new(other, other_key);
    assert!(
        facts(&lab, Some(base().identity(client_cert(&other_ca, false))))
            .await
            .is_err(),
        "a certificate from another CA refused"
    );
    let real_ca =
        Issuer::from_ca_cert_pem(&read("ca.pem"), KeyPair::from_pem(&read("ca.key")).unwrap())
            .unwrap();
    assert!(
        facts(&lab, Some(base().identity(client_cert(&real_ca, false))))
            .await
            .is_ok(),
        "control: a valid certificate of the lab's CA is accepted"
    );
    assert!(
        facts(&lab, Some(base().identity(client_cert(&real_ca, true))))
            .await
            .is_err(),
        "an expired certificate refused"
    );

    // The controller side: box1's certificate does not name box2's address.
    let wrong = ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .identity(me)
        .domain_name(lab.addresses[1].to_string());
    assert!(
        facts(&lab, Some(wrong)).await.is_err(),
        "an agent certificate for another address refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_controller_is_told_who_holds_the_deployment() {
    use paddock_proto::v1::LockRequest;
    let lab = Lab::new(30);
    assert!(lab.up(&[]).status.success());
    let certs = lab.dir().join(".paddock/lab/certs");
    let read = |name: &str| std::fs::read_to_string(certs.join(name)).unwrap();
    let inventory = lab.inventory().display().to_string();
    let mut clients = Vec::new();
    for ip in &lab.addresses {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")))
            .identity(Identity::from_pem(
                read("controller.pem"),
                read("controller.key"),
            ))
            .domain_name(ip.to_string());
        let channel = Endpoint::from_shared(format!("https://{ip}:7443"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients.push(AgentClient::new(channel));
    }
    let request = |ttl_ms| LockRequest {
        deployment: "lab".into(),
        holder: "alice@ws1 pid 4242".into(),
        ttl_ms,
        token: "a1".repeat(16),
        ..Default::default()
    };
    for c in &mut clients {
        assert!(c.lock(request(60_000)).await.unwrap().into_inner().granted);
    }
    let out = paddock_tests::apply_agreeing(&["-i", &inventory]);
    assert!(!out.status.success());
    let err = paddock_tests::stderr(&out);
    assert!(
        err.contains("deployment lab is locked by alice@ws1 pid 4242 since 20"),
        "{err}"
    );
    for c in &mut clients {
        c.unlock(request(0)).await.unwrap();
    }
    let out = paddock_tests::apply_agreeing(&["-i", &inventory]);
    assert!(stdout(&out).contains("Nothing to do"), "{}", stdout(&out));
}
