//! The deployment files in `deploy/`: the Kubernetes example's agent
//! configuration is run by a real `mend agent` as each pod would run it
//! (its own id dropped from the shared peer list, probes answering), its
//! peers match the StatefulSet and headless Service, and the systemd unit
//! starts the agent with the hardening it documents. `scripts/check-deploy.sh`
//! (run by `.ci/run`) checks the manifests against the Kubernetes schema.

use std::path::Path;

use crate::harness::*;

fn deploy(file: &str) -> String {
    let p = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .expect("cargo sets CARGO_MANIFEST_DIR when it runs tests and benches"),
    )
    .join("deploy")
    .join(file);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The `mend.toml` block of the ConfigMap (a YAML literal block: the lines
/// indented under `mend.toml: |`).
fn configmap_toml() -> String {
    let y = deploy("k8s/mend-config.yaml");
    let mut lines = y.lines().skip_while(|l| l.trim() != "mend.toml: |").skip(1);
    let first = lines.next().expect("a mend.toml block");
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(
            lines.take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= indent),
        )
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn yaml_value<'a>(y: &'a str, key: &str) -> &'a str {
    y.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in manifest"))
}

#[test]
fn the_peers_are_the_statefulsets_pods_behind_its_headless_service() {
    let toml = configmap_toml();
    let c = mend_agent::AgentConfig::from_toml(&toml).expect("the ConfigMap's mend.toml parses");
    let sts = deploy("k8s/statefulset.yaml");
    let svc = deploy("k8s/service.yaml");
    let name = yaml_value(&svc, "name");
    assert_eq!(yaml_value(&svc, "clusterIP"), "None", "a headless Service");
    assert_eq!(yaml_value(&sts, "serviceName"), name);
    let replicas: usize = yaml_value(&sts, "replicas").parse().unwrap();
    assert_eq!(c.peers.len(), replicas, "one peer entry per pod");
    for (i, p) in c.peers.iter().enumerate() {
        assert_eq!(p.id, format!("{name}-{i}"), "node id = pod name");
        assert_eq!(
            p.address,
            format!("{name}-{i}.{name}.default.svc.cluster.local:7400"),
            "the pod's stable DNS name"
        );
        assert!(p.interval_ms > 0, "scheduled");
    }
    // The certificate names every node id (a peer is known by it).
    let cert = deploy("k8s/certificate.yaml");
    for p in &c.peers {
        assert!(
            cert.contains(&format!("- {}\n", p.id)),
            "certificate lacks {}",
            p.id
        );
    }
    assert!(cert.contains("secretName: mend-tls") && sts.contains("secretName: mend-tls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pod_runs_the_configmap_as_is_and_answers_its_probes() {
    // The ConfigMap's file with only the container paths and ports moved to
    // a temp dir and ephemeral ports: what each pod runs.
    let d = tempfile::tempdir().unwrap();
    let secret = d.path().join("cluster-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let toml = configmap_toml()
        .replace("0.0.0.0:7400", "127.0.0.1:0")
        .replace("0.0.0.0:9400", "127.0.0.1:0")
        .replace("/etc/mend/secret/cluster-secret", secret.to_str().unwrap())
        .replace("/etc/mend/tls", cert_set("mend-1").to_str().unwrap())
        .replace("/var/lib/mend", d.path().join("data").to_str().unwrap());
    let cfg = d.path().join("mend.toml");
    std::fs::write(&cfg, toml).unwrap();
    let a = AgentProc::start_bare_at(
        "mend-1",
        &d.path().join("data"),
        "127.0.0.1:0",
        &["--config", cfg.to_str().unwrap(), "--http", "127.0.0.1:0"],
    );
    let http = a.http.clone().expect("http from the ConfigMap");
    let get = async |path: &str| {
        let r = reqwest::get(format!("http://{http}{path}"))
            .await
            .expect("GET");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    };
    assert_eq!(
        get("/healthz").await,
        (200, "ok\n".into()),
        "liveness probe"
    );
    assert_eq!(
        get("/readyz").await,
        (200, "ready\n".into()),
        "readiness probe"
    );
    let (code, st) = mend_json(&["status", "--agent", &a.addr]);
    assert_eq!(code, 0, "{st}");
    let peers: Vec<&str> = st["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(peers, ["mend-0", "mend-2"], "a pod is not its own peer");
    a.stop();
}

#[test]
fn the_systemd_unit_runs_the_agent_hardened() {
    let u = deploy("systemd/mend.service");
    let key = |k: &str| -> Vec<&str> {
        u.lines()
            .filter_map(|l| l.strip_prefix(&format!("{k}=")))
            .collect()
    };
    let exec = key("ExecStart");
    assert_eq!(exec.len(), 1);
    assert!(
        exec[0].contains(" agent --config /etc/mend/mend.toml"),
        "{exec:?}"
    );
    // The state directory systemd creates is the data directory.
    assert_eq!(key("StateDirectory"), ["mend"]);
    assert!(exec[0].contains("--data-dir /var/lib/mend"));
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("DynamicUser", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(key(k), [v], "{k}");
    }
    // The flags it passes are ones `mend agent` takes.
    let help = mend(&["agent", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--config", "--data-dir"] {
        assert!(help.contains(flag), "mend agent takes {flag}");
    }
}
