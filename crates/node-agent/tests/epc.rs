//! EPC capacity: CPUID leaf 0x12 parsing on recorded values (tests/data/cpuid, provenance in
//! its README), this machine's real CPUID, and the Node status patch checked request by
//! request against kube's mock service.

use std::path::{Path, PathBuf};

use coffer_node_agent::epc::{
    self, CpuidRegs, CpuidSource, EpcProtection, RecordedCpuid, EPC_RESOURCE, MAX_EPC_SUBLEAVES,
    MAX_RECORD_BYTES,
};
use coffer_node_agent::Error;
use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Node;
use kube::client::Body;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cpuid")
        .join(name)
}

fn recorded(name: &str) -> RecordedCpuid {
    match RecordedCpuid::load(&data(name)) {
        Ok(r) => r,
        Err(e) => panic!("{name}: {e}"),
    }
}

/// A recording with SGX1 and the given sub-leaves 2.. of leaf 0x12 (registers as given).
fn with_subleaves(subleaves: &[[u32; 4]]) -> RecordedCpuid {
    let mut r = RecordedCpuid::default();
    r.insert(0, 0, regs([0x16, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]));
    r.insert(7, 0, regs([0, 1 << 2, 0, 0]));
    r.insert(0x12, 0, regs([1, 0, 0, 0x241f]));
    for (i, s) in subleaves.iter().enumerate() {
        r.insert(0x12, 2 + i as u32, regs(*s));
    }
    r
}

fn regs([eax, ebx, ecx, edx]: [u32; 4]) -> CpuidRegs {
    CpuidRegs { eax, ebx, ecx, edx }
}

#[test]
fn real_coffee_lake_dump_has_two_sections() {
    let epc = epc::read_epc(&recorded("coffee-lake-2-sections.txt")).expect("EPC");
    assert_eq!(epc.sections.len(), 2);
    assert_eq!(epc.sections[0].base, 0x1_c020_0000);
    assert_eq!(epc.sections[0].size, 26 << 20);
    assert_eq!(epc.sections[1].base, 0x1_c1e0_0000);
    assert_eq!(epc.sections[1].size, 2 << 20);
    assert_eq!(
        epc.sections[0].protection,
        EpcProtection::ConfidentialityIntegrityReplay
    );
    assert_eq!(epc.total_bytes, 29_360_128);
    assert!(!epc.sgx2);
    assert_eq!(epc.max_enclave_size_64_log2, 0x24);
    assert_eq!(epc.unknown_subleaf, None);
}

#[test]
fn coffee_lake_128m_prm_gives_93_5_mib() {
    let epc = epc::read_epc(&recorded("coffee-lake-128m.txt")).expect("EPC");
    assert_eq!(epc.sections.len(), 1);
    assert_eq!(epc.sections[0].base, 0x7020_0000);
    assert_eq!(epc.total_bytes, 0x05d8_0000);
    assert_eq!(epc.total_bytes, 98_041_856);
}

#[test]
fn icelake_two_sockets_need_the_edx_high_bits() {
    let epc = epc::read_epc(&recorded("icelake-sp-2-socket.txt")).expect("EPC");
    assert_eq!(epc.sections.len(), 2);
    assert_eq!(epc.sections[0].base, 0x40_0000_0000);
    assert_eq!(epc.sections[1].base, 0xc0_0000_0000);
    for s in &epc.sections {
        assert_eq!(s.size, 64 << 30, "sub-leaf {}", s.subleaf);
        assert_eq!(s.protection, EpcProtection::ConfidentialityOnly);
    }
    assert_eq!(epc.total_bytes, 128 << 30);
    assert!(epc.sgx2);
}

#[test]
fn no_sgx_machine_is_refused_clearly() {
    let err = epc::read_epc(&recorded("no-sgx.txt")).expect_err("no SGX");
    assert!(matches!(err, Error::SgxNotSupported), "{err:?}");
    assert!(err.to_string().contains("does not report SGX"), "{err}");
}

#[test]
fn reserved_subleaf_type_stops_the_scan_like_linux() {
    let epc = epc::read_epc(&recorded("reserved-type.txt")).expect("EPC");
    assert_eq!(epc.sections.len(), 1);
    assert_eq!(epc.total_bytes, 0x05d8_0000);
    assert_eq!(epc.unknown_subleaf, Some((3, 5)));
}

#[test]
fn reserved_type_before_any_section_means_no_epc() {
    let cpu = with_subleaves(&[[0x7020_0005, 0, 0x05d8_0001, 0]]);
    assert!(matches!(epc::read_epc(&cpu), Err(Error::NoEpcSections)));
}

#[test]
fn sgx_bit_without_leaf_0x12_is_refused() {
    let mut cpu = with_subleaves(&[[0x7020_0001, 0, 0x05d8_0001, 0]]);
    cpu.insert(0, 0, regs([0x0d, 0, 0, 0]));
    match epc::read_epc(&cpu) {
        Err(Error::SgxLeafAbsent { max_leaf }) => assert_eq!(max_leaf, 0x0d),
        other => panic!("{other:?}"),
    }
}

#[test]
fn max_leaf_below_7_is_no_sgx() {
    let mut cpu = with_subleaves(&[[0x7020_0001, 0, 0x05d8_0001, 0]]);
    cpu.insert(0, 0, regs([0x06, 0, 0, 0]));
    assert!(matches!(epc::read_epc(&cpu), Err(Error::SgxNotSupported)));
}

#[test]
fn sgx_disabled_in_bios_is_named() {
    let mut cpu = with_subleaves(&[]);
    cpu.insert(0x12, 0, regs([0, 0, 0, 0]));
    let err = epc::read_epc(&cpu).expect_err("disabled");
    assert!(matches!(err, Error::SgxDisabled), "{err:?}");
    assert!(err.to_string().contains("BIOS"), "{err}");
}

#[test]
fn empty_epc_list_is_refused() {
    let cpu = with_subleaves(&[]);
    assert!(matches!(epc::read_epc(&cpu), Err(Error::NoEpcSections)));
}

#[test]
fn nonzero_reserved_bits_are_refused() {
    for (bad, register) in [
        ([0x7020_0011, 0, 0x05d8_0001, 0], "EAX[11:4]"),
        ([0x7020_0001, 0x0010_0000, 0x05d8_0001, 0], "EBX[31:20]"),
        ([0x7020_0001, 0, 0x05d8_0101, 0], "ECX[11:4]"),
        ([0x7020_0001, 0, 0x05d8_0001, 0x8000_0000], "EDX[31:20]"),
    ] {
        match epc::read_epc(&with_subleaves(&[bad])) {
            Err(Error::EpcSubleafMalformed { subleaf, reason }) => {
                assert_eq!(subleaf, 2);
                assert!(reason.contains(register), "{reason}");
            }
            other => panic!("{register}: {other:?}"),
        }
    }
}

#[test]
fn property_zero_and_empty_sections_are_refused() {
    for (bad, what) in [
        ([0x7020_0001, 0, 0x05d8_0000, 0], "property is 0"),
        ([0x7020_0001, 0, 0x0000_0001, 0], "size is 0"),
    ] {
        match epc::read_epc(&with_subleaves(&[bad])) {
            Err(Error::EpcSubleafMalformed { subleaf: 2, reason }) => {
                assert!(reason.contains(what), "{reason}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn reserved_property_is_kept_and_counted() {
    let epc = epc::read_epc(&with_subleaves(&[[0x7020_0001, 0, 0x05d8_0007, 0]])).expect("EPC");
    assert_eq!(epc.sections[0].protection, EpcProtection::Reserved(7));
    assert_eq!(epc.total_bytes, 0x05d8_0000);
}

#[test]
fn overlapping_sections_are_refused() {
    // Second section starts inside the first one.
    let cpu = with_subleaves(&[
        [0x7020_0001, 0, 0x05d8_0001, 0],
        [0x7030_0001, 0, 0x0010_0001, 0],
    ]);
    match epc::read_epc(&cpu) {
        Err(Error::EpcSubleafMalformed { subleaf: 3, reason }) => {
            assert!(reason.contains("overlaps"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unterminated_section_list_is_bounded() {
    // MAX_EPC_SUBLEAVES disjoint 4 KiB sections and no invalid sub-leaf after them.
    let subleaves: Vec<[u32; 4]> = (0..MAX_EPC_SUBLEAVES)
        .map(|i| [0x1000_0001 + (i << 12), 0, 0x0000_1001, 0])
        .collect();
    match epc::read_epc(&with_subleaves(&subleaves)) {
        Err(Error::TooManyEpcSubleaves { max }) => assert_eq!(max, MAX_EPC_SUBLEAVES),
        other => panic!("{other:?}"),
    }
    // One fewer is accepted: the list then ends with the (unrecorded, zero) next sub-leaf.
    let epc = epc::read_epc(&with_subleaves(&subleaves[1..])).expect("bounded list");
    assert_eq!(epc.total_bytes, u64::from(MAX_EPC_SUBLEAVES - 1) * 4096);
}

#[test]
fn this_machine_agrees_with_its_own_cpuid() {
    let cpu = epc::NativeCpuid;
    let max_leaf = cpu.cpuid(0, 0).eax;
    let sgx_bit = max_leaf >= 7 && cpu.cpuid(7, 0).ebx & (1 << 2) != 0;
    match epc::read_epc(&cpu) {
        Ok(epc) => {
            assert!(sgx_bit);
            assert!(!epc.sections.is_empty());
            assert_eq!(
                epc.total_bytes,
                epc.sections.iter().map(|s| s.size).sum::<u64>()
            );
        }
        Err(Error::SgxNotSupported) => assert!(!sgx_bit, "SGX bit set but reported absent"),
        Err(e @ (Error::SgxDisabled | Error::SgxLeafAbsent { .. } | Error::NoEpcSections)) => {
            assert!(sgx_bit, "{e} without the SGX bit")
        }
        Err(other) => panic!("unexpected error on this machine: {other}"),
    }
    // A recording of this machine replays to the same answer.
    let replay = RecordedCpuid::record(&cpu);
    let again = RecordedCpuid::parse(replay.to_text().as_bytes()).expect("own recording");
    assert_eq!(again, replay);
    assert_eq!(
        format!("{:?}", epc::read_epc(&again)),
        format!("{:?}", epc::read_epc(&cpu))
    );
}

#[test]
fn recording_round_trips() {
    let r = recorded("icelake-sp-2-socket.txt");
    let text = r.to_text();
    assert_eq!(
        RecordedCpuid::parse(text.as_bytes()).expect("round trip"),
        r
    );
    // The widest recording the parser accepts still renders within its size limit.
    let mut widest = RecordedCpuid::default();
    for i in 0..epc::MAX_RECORD_ENTRIES as u32 {
        widest.insert(u32::MAX - i, u32::MAX, regs([u32::MAX; 4]));
    }
    let text = widest.to_text();
    assert!(text.len() <= MAX_RECORD_BYTES, "{} bytes", text.len());
    assert_eq!(
        RecordedCpuid::parse(text.as_bytes()).expect("widest"),
        widest
    );
}

#[test]
fn malformed_recordings_name_the_line() {
    for (text, line, what) in [
        ("0x12 0x2 1 2 3\n", 1, "missing edx"),
        ("# c\n0x12 0x2 1 2 3 4 5\n", 2, "more than six"),
        ("0 0 16 0 0 0\n7 0 zz 0 0 0\n", 2, "eax \"zz\""),
        ("0 0 16 0 0 0\n0x0 0x0 1 0 0 0\n", 2, "recorded twice"),
        (
            "0 0 0x100000000 0 0 0\n",
            1,
            "eax \"0x100000000\" is not a hex u32",
        ),
    ] {
        match RecordedCpuid::parse(text.as_bytes()) {
            Err(Error::CpuidRecord { line: l, reason }) => {
                assert_eq!(l, line, "{text:?}: {reason}");
                assert!(reason.contains(what), "{text:?}: {reason}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
    let huge = vec![b'#'; MAX_RECORD_BYTES + 1];
    assert!(matches!(
        RecordedCpuid::parse(&huge),
        Err(Error::CpuidRecord { line: 0, .. })
    ));
    assert!(matches!(
        RecordedCpuid::parse(b"\xff\xfe"),
        Err(Error::CpuidRecord { line: 0, .. })
    ));
    let many: String = (0..=1024).map(|i| format!("0x{i:x} 0 0 0 0 0\n")).collect();
    match RecordedCpuid::parse(many.as_bytes()) {
        Err(Error::CpuidRecord { line: 1025, reason }) => assert!(reason.contains("entries")),
        other => panic!("{other:?}"),
    }
    let err = RecordedCpuid::load(&data("does-not-exist.txt")).expect_err("missing file");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
}

// ---- the Node status patch, against kube's mock service ----

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (kube::Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "default"), handle)
}

fn node_json(name: &str, epc: Option<&str>) -> Vec<u8> {
    let mut capacity = serde_json::json!({"cpu": "8", "memory": "32Gi"});
    if let Some(q) = epc {
        capacity[EPC_RESOURCE] = serde_json::Value::String(q.to_owned());
    }
    let node = serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "status": {"capacity": capacity}
    });
    serde_json::to_vec(&node).unwrap_or_default()
}

#[tokio::test]
async fn publish_sends_the_documented_json_patch() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.expect("one request");
        assert_eq!(req.method(), http::Method::PATCH);
        assert_eq!(req.uri().to_string(), "/api/v1/nodes/sgx-node-1/status?");
        assert_eq!(
            req.headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json-patch+json")
        );
        let body = req.into_body().collect_bytes().await.expect("body");
        assert_eq!(
            std::str::from_utf8(&body).expect("utf-8"),
            r#"[{"op":"add","path":"/status/capacity/sgx.intel.com~1epc","value":"137438953472"}]"#
        );
        // The answer is the patched Node, as the API server returns it.
        let _: Node =
            serde_json::from_slice(&node_json("sgx-node-1", Some("128Gi"))).expect("node");
        send.send_response(
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from(node_json("sgx-node-1", Some("128Gi"))))
                .expect("response"),
        );
    });
    epc::publish_epc(client, "sgx-node-1", 128 << 30)
        .await
        .expect("published");
    server.await.expect("mock server checks");
}

#[tokio::test]
async fn publish_forbidden_names_node_and_status() {
    let (client, mut handle) = mock_client();
    let server = tokio::spawn(async move {
        let (_req, send) = handle.next_request().await.expect("one request");
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure",
            "message": "nodes \"sgx-node-1\" is forbidden: User \"system:serviceaccount:coffer:coffer-node-agent\" cannot patch resource \"nodes/status\" in API group \"\" at the cluster scope",
            "reason": "Forbidden", "details": {"name": "sgx-node-1", "kind": "nodes"}, "code": 403
        });
        send.send_response(
            Response::builder()
                .status(StatusCode::FORBIDDEN)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&status).unwrap_or_default()))
                .expect("response"),
        );
    });
    let err = epc::publish_epc(client, "sgx-node-1", 4096)
        .await
        .expect_err("forbidden");
    server.await.expect("mock server");
    match &err {
        Error::NodeApi { node, source, .. } => {
            assert_eq!(node, "sgx-node-1");
            assert!(matches!(**source, kube::Error::Api(ref s) if s.code == 403));
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("Node sgx-node-1"), "{text}");
    assert!(text.contains("403 Forbidden"), "{text}");
    assert!(text.contains("nodes/status"), "{text}");
}

#[tokio::test]
async fn invalid_node_name_sends_nothing() {
    let (client, mut handle) = mock_client();
    let err = epc::publish_epc(client, "../namespaces/x", 4096)
        .await
        .expect_err("invalid");
    assert!(matches!(err, Error::InvalidNodeName { .. }), "{err:?}");
    // The client was dropped without sending: the mock sees the end of the stream.
    assert!(handle.next_request().await.is_none());
}

#[tokio::test]
async fn published_epc_reads_the_capacity_back() {
    for (answer, expected) in [
        (Some("98041856"), Some(98_041_856)),
        (Some("128Gi"), Some(128u64 << 30)),
        (Some("1.5Gi"), None),
        (None, None),
    ] {
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.expect("one request");
            assert_eq!(req.method(), http::Method::GET);
            assert_eq!(req.uri().path(), "/api/v1/nodes/sgx-node-1");
            send.send_response(
                Response::builder()
                    .status(StatusCode::OK)
                    .body(Body::from(node_json("sgx-node-1", answer)))
                    .expect("response"),
            );
        });
        let got = epc::published_epc(client, "sgx-node-1")
            .await
            .expect("read");
        server.await.expect("mock server");
        assert_eq!(got, expected, "{answer:?}");
    }
}

// ---- the agent's run loop, against kube's mock service ----

mod agent_loop {
    use super::*;
    use coffer_node_agent::agent::{self, AgentConfig};
    use std::sync::Arc;
    use std::time::Duration;

    fn config(cpu: RecordedCpuid, dev_root: &Path) -> AgentConfig {
        let mut cfg = AgentConfig::with_cpuid("sgx-node-1", Arc::new(cpu));
        cfg.devices.dev_root = dev_root.to_path_buf();
        cfg.devices.plugin_dir = dev_root.to_path_buf();
        cfg.check_interval = Duration::from_millis(1);
        cfg.retry_initial = Duration::from_millis(1);
        cfg.retry_max = Duration::from_millis(2);
        cfg.republish_interval = Duration::from_secs(3600);
        cfg
    }

    fn dev_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for dev in [agent::ENCLAVE_DEVICE, agent::PROVISION_DEVICE] {
            std::fs::write(dir.path().join(dev), b"").expect("fake device node");
        }
        dir
    }

    fn answer(status: StatusCode, body: Vec<u8>) -> Response<Body> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("response")
    }

    /// Publish refused (403) → retried; published; read back; capacity reset by the kubelet →
    /// re-published; read-back refused → published anyway. Only the order of requests is
    /// checked, never a duration.
    #[tokio::test]
    async fn retries_then_repairs_a_reset_capacity() {
        let dev = dev_root();
        let cfg = config(recorded("coffee-lake-128m.txt"), dev.path());
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "default");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sockets: Vec<PathBuf> = coffer_node_agent::device_plugin::RESOURCES
            .iter()
            .map(|r| dev.path().join(r.socket_name))
            .collect();
        let sockets_in_server = sockets.clone();
        let server = tokio::spawn(async move {
            let forbidden = serde_json::to_vec(&serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "forbidden", "reason": "Forbidden", "code": 403
            }))
            .unwrap_or_default();
            let patch_body =
                r#"[{"op":"add","path":"/status/capacity/sgx.intel.com~1epc","value":"98041856"}]"#;
            let mut log = Vec::new();
            let mut stop_tx = Some(stop_tx);
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().clone();
                let path = req.uri().path().to_owned();
                let expected = if method == http::Method::GET {
                    "/api/v1/nodes/sgx-node-1"
                } else {
                    "/api/v1/nodes/sgx-node-1/status"
                };
                assert_eq!(path, expected, "{method}");
                let body = req.into_body().collect_bytes().await.expect("body");
                log.push(method.clone());
                let step = log.len();
                if method == http::Method::PATCH {
                    assert_eq!(std::str::from_utf8(&body).expect("utf-8"), patch_body);
                }
                match step {
                    1 => {
                        assert_eq!(method, http::Method::PATCH);
                        send.send_response(answer(StatusCode::FORBIDDEN, forbidden.clone()));
                    }
                    2 => {
                        assert_eq!(method, http::Method::PATCH, "retried after 403");
                        send.send_response(answer(
                            StatusCode::OK,
                            node_json("sgx-node-1", Some("98041856")),
                        ));
                    }
                    3 => {
                        assert_eq!(method, http::Method::GET, "reads the capacity back");
                        send.send_response(answer(StatusCode::OK, node_json("sgx-node-1", None)));
                    }
                    4 => {
                        assert_eq!(method, http::Method::PATCH, "re-publishes after a reset");
                        send.send_response(answer(
                            StatusCode::OK,
                            node_json("sgx-node-1", Some("98041856")),
                        ));
                    }
                    5 => {
                        assert_eq!(method, http::Method::GET);
                        send.send_response(answer(StatusCode::FORBIDDEN, forbidden.clone()));
                    }
                    6 => {
                        assert_eq!(method, http::Method::PATCH, "publishes when reading fails");
                        send.send_response(answer(
                            StatusCode::OK,
                            node_json("sgx-node-1", Some("98041856")),
                        ));
                        // The device plugins run beside the publisher: their sockets
                        // appear in the plugin directory (waited for, not timed).
                        for socket in &sockets_in_server {
                            let mut waited = 0;
                            while !socket.exists() && waited < 1000 {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                waited += 1;
                            }
                            assert!(socket.exists(), "{} not created", socket.display());
                        }
                        if let Some(tx) = stop_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {
                        // Until the agent sees the shutdown: the capacity is right, reads only.
                        assert_eq!(method, http::Method::GET, "no publish while correct");
                        send.send_response(answer(
                            StatusCode::OK,
                            node_json("sgx-node-1", Some("98041856")),
                        ));
                    }
                }
            }
            log.len()
        });
        let mut server = server;
        let agent = agent::run_with(cfg, client, async {
            let _ = stop_rx.await;
        });
        // A failed check in the mock server ends it early; the agent would then retry
        // forever, so whichever ends first decides.
        tokio::select! {
            r = agent => r.expect("clean stop"),
            s = &mut server => panic!("mock server ended before the agent: {s:?}"),
        }
        let requests = server.await.expect("mock server checks");
        assert!(requests >= 6, "{requests} requests");
        for socket in &sockets {
            assert!(!socket.exists(), "{} left behind", socket.display());
        }
    }

    /// Runs the agent until it has published the capacity, answered 20 API requests (the
    /// plugins run in the same task as the publisher, so by then they have bound their
    /// sockets if they run at all) and `ready` holds (polled, not timed), then stops it;
    /// returns whether its plugin sockets were there at that point.
    async fn run_until_published(
        cfg: AgentConfig,
        ready: impl Fn() -> bool + Send + 'static,
    ) -> bool {
        let sockets: Vec<PathBuf> = coffer_node_agent::device_plugin::RESOURCES
            .iter()
            .map(|r| cfg.devices.plugin_dir.join(r.socket_name))
            .collect();
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "default");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let seen = sockets.clone();
        let server = tokio::spawn(async move {
            let mut stop_tx = Some(stop_tx);
            let mut sockets_seen = false;
            let (mut published, mut requests) = (false, 0);
            while let Some((req, send)) = handle.next_request().await {
                published |= req.method() == http::Method::PATCH;
                requests += 1;
                send.send_response(answer(
                    StatusCode::OK,
                    node_json("sgx-node-1", Some("98041856")),
                ));
                if published && requests >= 20 && stop_tx.is_some() {
                    let mut waited = 0;
                    while !ready() && waited < 1000 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        waited += 1;
                    }
                    sockets_seen = seen.iter().all(|s| s.exists());
                    if let Some(tx) = stop_tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
            sockets_seen
        });
        agent::run_with(cfg, client, async {
            let _ = stop_rx.await;
        })
        .await
        .expect("clean stop");
        server.await.expect("mock server")
    }

    #[tokio::test]
    async fn missing_devices_are_not_fatal_the_plugins_serve_them_unhealthy() {
        let dev = tempfile::tempdir().expect("tempdir");
        let plugins = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(recorded("coffee-lake-128m.txt"), dev.path());
        cfg.devices.plugin_dir = plugins.path().to_path_buf();
        let dir = plugins.path().to_path_buf();
        let sockets_seen = run_until_published(cfg, move || {
            coffer_node_agent::device_plugin::RESOURCES
                .iter()
                .all(|r| dir.join(r.socket_name).exists())
        })
        .await;
        assert!(sockets_seen, "the device plugins did not start");
    }

    #[tokio::test]
    async fn intel_plugin_on_the_node_leaves_the_resources_to_it() {
        let dev = dev_root();
        let plugins = tempfile::tempdir().expect("tempdir");
        // Intel's plugin serving its enclave socket.
        let intel = std::os::unix::net::UnixListener::bind(
            plugins
                .path()
                .join(coffer_node_agent::device_plugin::INTEL_PLUGIN_SOCKETS[0]),
        )
        .expect("bind");
        let mut cfg = config(recorded("coffee-lake-128m.txt"), dev.path());
        cfg.devices.plugin_dir = plugins.path().to_path_buf();
        let sockets_seen = run_until_published(cfg.clone(), || true).await;
        assert!(
            !sockets_seen,
            "a second plugin registered the same resources"
        );
        for r in coffer_node_agent::device_plugin::RESOURCES {
            assert!(!plugins.path().join(r.socket_name).exists());
        }
        // `on` serves them anyway; with Intel's plugin gone, `auto` serves them too.
        cfg.device_plugin = agent::DevicePluginMode::On;
        let dir = plugins.path().to_path_buf();
        let all = move || {
            coffer_node_agent::device_plugin::RESOURCES
                .iter()
                .all(|r| dir.join(r.socket_name).exists())
        };
        assert!(run_until_published(cfg.clone(), all.clone()).await);
        drop(intel);
        cfg.device_plugin = agent::DevicePluginMode::Auto;
        assert!(run_until_published(cfg, all).await);
    }

    #[tokio::test]
    async fn node_without_sgx_is_refused_before_any_request() {
        let dev = dev_root();
        let cfg = config(recorded("no-sgx.txt"), dev.path());
        let (client, mut handle) = mock_client();
        let err = agent::run_with(cfg, client, std::future::pending::<()>())
            .await
            .expect_err("no SGX");
        assert!(matches!(err, Error::SgxNotSupported), "{err:?}");
        assert!(handle.next_request().await.is_none());
    }
}

mod agent_config {
    use super::*;
    use coffer_node_agent::agent::{self, AgentConfig};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn unusable_settings_are_refused_before_any_request() {
        let dev = tempfile::tempdir().expect("tempdir");
        for dev_name in [agent::ENCLAVE_DEVICE, agent::PROVISION_DEVICE] {
            std::fs::write(dev.path().join(dev_name), b"").expect("fake device node");
        }
        let base = || {
            let mut cfg =
                AgentConfig::with_cpuid("sgx-node-1", Arc::new(recorded("coffee-lake-128m.txt")));
            cfg.devices.dev_root = dev.path().to_path_buf();
            cfg.devices.plugin_dir = dev.path().to_path_buf();
            cfg
        };
        let mut zero_check = base();
        zero_check.check_interval = Duration::ZERO;
        let mut zero_devices = base();
        zero_devices.devices.devices_per_resource = 0;
        let mut bad_name = base();
        bad_name.node_name = "Sgx_Node".into();
        for (cfg, what) in [
            (zero_check, "check interval"),
            (zero_devices, "devices per resource"),
            (bad_name, "Sgx_Node"),
        ] {
            let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let client = kube::Client::new(svc, "default");
            let err = agent::run_with(cfg, client, std::future::pending::<()>())
                .await
                .expect_err(what);
            assert!(
                matches!(
                    err,
                    Error::AgentConfig { .. }
                        | Error::DevicePluginConfig { .. }
                        | Error::InvalidNodeName { .. }
                ),
                "{what}: {err:?}"
            );
            assert!(err.to_string().contains(what), "{what}: {err}");
            assert!(handle.next_request().await.is_none(), "{what}");
        }
    }
}
