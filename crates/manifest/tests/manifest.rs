//! Integration tests of coffer-manifest: the example, the broken corpus, hashing, policy,
//! placeholders, updates and roles. Test files are read with `include_bytes!` (the crate
//! itself does no I/O; tests embed their inputs).

use coffer_manifest::template::{SecretField, Target};
use coffer_manifest::{
    Action, Change, Error, Manifest, MeasurementClaims, Mismatch, ResourceKind, SecretSource,
    SecretValue, SnpClaims, SnpTcb, SourceError, Tee,
};

const EXAMPLE: &[u8] = include_bytes!("../examples/manifest.json");

macro_rules! broken {
    ($file:literal) => {
        ($file, include_bytes!(concat!("broken/", $file)) as &[u8])
    };
}

/// Every file in tests/broken, with the path of the error it must give and a fragment of the
/// message.
/// (file name, bytes), expected error path, message fragment.
type Case = ((&'static str, &'static [u8]), &'static str, &'static str);

const BROKEN: &[Case] = &[
    (
        broken!("san_reserved_coordinator.json"),
        "$.workloads.app.sans[1]",
        "\"coffer-coordinator\" is reserved",
    ),
    (
        broken!("san_wildcard_services.json"),
        "$.secrets.tls.certificate.sans[0]",
        "\"*.coffer.svc\" is reserved",
    ),
    (
        broken!("sgx_file_outside_secret_dirs.json"),
        "$.workloads.app.parameters.files[\"/etc/app/token\"]",
        "outside the enclave's secret directories (/run/secrets)",
    ),
    (
        broken!("tdx_secret_dirs.json"),
        "$.packages.app.secret_dirs",
        "secret_dirs is an SGX field",
    ),
    (
        broken!("unknown_package.json"),
        "$.workloads.app.package",
        "unknown package \"nope\"",
    ),
    (
        broken!("undeclared_secret.json"),
        "$.workloads.app.parameters.env.DB_KEY",
        "secret \"db\" is not declared",
    ),
    (
        broken!("mrenclave_short.json"),
        "$.packages.app.mrenclave",
        "must be 64 hex digits",
    ),
    (
        broken!("mrtd_bad_length.json"),
        "$.packages.td.mrtd",
        "must be 96 hex digits",
    ),
    (
        broken!("unknown_tcb_status.json"),
        "$.packages.app.accepted_tcb_statuses[1]",
        "unknown TCB status \"Outdated\"",
    ),
    (
        broken!("user_unknown_role.json"),
        "$.users.alice.roles[0]",
        "unknown role \"admin\"",
    ),
    (
        broken!("user_bad_pem.json"),
        "$.users.alice.certificate",
        "bad certificate PEM",
    ),
    (
        broken!("file_path_relative.json"),
        "$.workloads.app.parameters.files[\"etc/app.conf\"]",
        "is not absolute",
    ),
    (
        broken!("file_path_dotdot.json"),
        "$.workloads.app.parameters.files[\"/etc/../shadow\"]",
        "'..'",
    ),
    (
        broken!("max_activations_zero.json"),
        "$.workloads.app.max_activations",
        "can never start",
    ),
    (
        broken!("raw_in_env.json"),
        "$.workloads.app.parameters.env.KEY",
        ".raw is allowed only in files",
    ),
    (
        broken!("placeholder_unclosed.json"),
        "$.workloads.app.parameters.argv[1]",
        "is not closed",
    ),
    (
        broken!("field_not_in_secret.json"),
        "$.workloads.app.parameters.env.K",
        "a symmetric secret has no field \"private\"",
    ),
    (
        broken!("pem_of_symmetric.json"),
        "$.workloads.app.parameters.files[\"/k\"].content",
        "encoding .pem does not apply",
    ),
    (
        broken!("rsa_bad_size.json"),
        "$.secrets.k.size",
        "RSA size 1024",
    ),
    (
        broken!("recovery_key_too_small.json"),
        "$.recovery_keys.ops",
        "fewer than 2048",
    ),
    (
        broken!("recovery_threshold_too_high.json"),
        "$.recovery_threshold",
        "outside 1..=1",
    ),
    (
        broken!("tls_unknown_workload.json"),
        "$.tls[0].to",
        "unknown workload \"db\"",
    ),
    (
        broken!("sgx_with_tdx_field.json"),
        "$.packages.app.mrtd",
        "TDX field",
    ),
    (
        broken!("tdx_firmware_only.json"),
        "$.packages.td.mrtd",
        "pins only the firmware (MRTD)",
    ),
    (
        broken!("snp_firmware_only.json"),
        "$.packages.vm.snp",
        "does not pin a workload",
    ),
    (
        broken!("snp_with_intel_field.yaml"),
        "$.packages.vm.mrtd",
        "Intel field",
    ),
    (
        broken!("snp_bad_abi.yaml"),
        "$.packages.vm.snp.min_abi",
        "not MAJOR.MINOR",
    ),
    (
        broken!("mrsigner_without_svn.json"),
        "$.packages.app.isv_svn",
        "required with mrsigner",
    ),
    (
        broken!("file_mode_number.json"),
        "$.workloads.app.parameters.files[\"/etc/a\"].mode",
        "octal string",
    ),
    (
        broken!("image_key_not_256.json"),
        "$.workloads.app.parameters.image_key",
        "not a 256-bit symmetric key",
    ),
    (
        broken!("env_reserved_prefix.json"),
        "$.workloads.app.parameters.env.COFFER_EVIDENCE",
        "reserved COFFER_ prefix",
    ),
    (
        broken!("role_writes_generated_secret.json"),
        "$.roles.r.names[0]",
        "cannot be written",
    ),
    (
        broken!("workload_private_key.json"),
        "$.workloads.app.parameters.files[\"/key.pem\"].content",
        "never reaches the Coordinator",
    ),
    (
        broken!("no_workloads.json"),
        "$.workloads",
        "no workloads declared",
    ),
    (
        broken!("symmetric_bad_size.json"),
        "$.secrets.k.size",
        "size 100 bits",
    ),
    (
        broken!("action_not_for_resource.json"),
        "$.roles.r.actions[0]",
        "does not apply to audit",
    ),
    (
        broken!("duplicate_workload.json"),
        "$.workloads",
        "duplicate name \"app\"",
    ),
    (broken!("truncated.json"), "$.packages.app", "EOF"),
    (
        broken!("unknown_field.yaml"),
        "$.packages.app.mrenclav",
        "unknown field `mrenclav`",
    ),
    (
        broken!("revoked_tcb.yaml"),
        "$.packages.app.accepted_tcb_statuses[0]",
        "Revoked can never be accepted",
    ),
    (
        broken!("unknown_tee.yaml"),
        "$.packages.app.tee",
        "unknown variant `sev`",
    ),
    (
        broken!("bad_secret_type.yaml"),
        "$.secrets.k.type",
        "unknown variant `aes`",
    ),
];

#[test]
fn example_manifest_validates() {
    let m = Manifest::parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.workloads.len(), 3);
    assert_eq!(m.recovery_threshold, Some(1));
}

#[test]
fn broken_corpus_gives_the_right_error_at_the_right_path() {
    assert!(BROKEN.len() >= 20);
    for ((file, bytes), path, fragment) in BROKEN {
        let errs = match Manifest::parse(bytes) {
            Ok(_) => panic!("{file}: accepted"),
            Err(e) => e,
        };
        assert!(!errs.is_empty());
        let hit = errs
            .errors()
            .iter()
            .find(|e| e.path == *path && e.message.contains(fragment));
        assert!(
            hit.is_some(),
            "{file}: no error at {path} containing {fragment:?}; got:\n{errs}"
        );
        assert!(hit.unwrap().hint.is_some(), "{file}: no hint");
    }
}

#[test]
fn broken_corpus_is_the_whole_directory() {
    // Every file in tests/broken must be in the table (the table is checked above).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/broken");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut listed: Vec<String> = BROKEN.iter().map(|((f, _), _, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(names, listed);
}

#[test]
fn parse_errors_carry_line_and_column() {
    let ((_, bytes), _, _) = BROKEN
        .iter()
        .find(|((f, _), _, _)| *f == "file_mode_number.json")
        .unwrap();
    let e = Manifest::parse(bytes).unwrap_err();
    let e = &e.errors()[0];
    assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
    let ((_, bytes), _, _) = BROKEN
        .iter()
        .find(|((f, _), _, _)| *f == "unknown_field.yaml")
        .unwrap();
    let e = Manifest::parse(bytes).unwrap_err();
    assert_eq!(e.errors()[0].line, Some(4), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = br#"{
      "packages": {"app": {"tee": "sgx", "mrenclave": "abc", "accepted_tcb_statuses": ["Nope"]}},
      "workloads": {
        "app": {"package": "app", "max_activations": 0,
                "parameters": {"env": {"A": "{{ secrets.missing.key.hex }}", "1BAD": "x"},
                               "files": {"rel/path": {"content": "{{ broken"}}}},
        "other": {"package": "ghost"}
      }
    }"#;
    let errs = Manifest::parse(text).unwrap_err();
    for path in [
        "$.packages.app.mrenclave",
        "$.packages.app.accepted_tcb_statuses[0]",
        "$.workloads.app.max_activations",
        "$.workloads.app.parameters.env.A",
        "$.workloads.app.parameters.env[\"1BAD\"]",
        "$.workloads.app.parameters.files[\"rel/path\"]",
        "$.workloads.app.parameters.files[\"rel/path\"].content",
        "$.workloads.other.package",
    ] {
        assert!(errs.has_path(path), "missing {path} in\n{errs}");
    }
    let shown = errs.to_string();
    assert!(
        shown.starts_with(&format!("manifest is invalid: {} problems", errs.len())),
        "{shown}"
    );
    assert!(shown.contains("hint:"));
}

const MINIMAL_JSON: &str = r#"{"packages":{"app":{"tee":"sgx","mrenclave":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
 "workloads":{"app":{"package":"app","parameters":{"env":{"K":"{{ secrets.k.key.hex }}"}}}},
 "secrets":{"k":{"type":"symmetric","size":256}}}"#;

const MINIMAL_YAML: &str = "# same manifest, other order, YAML, defaults spelled out
secrets:
  k: {size: 256, type: symmetric, shared: false}
workloads:
  app:
    parameters:
      env:
        K: '{{ secrets.k.key.hex }}'
      files: {}
    package: app
packages:
  app:
    debug: false
    accepted_tcb_statuses: [UpToDate]
    mrenclave: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    tee: sgx
";

#[test]
fn hash_is_canonical_across_format_order_case_and_defaults() {
    let a = Manifest::parse(MINIMAL_JSON.as_bytes()).unwrap();
    let b = Manifest::parse(MINIMAL_YAML.as_bytes()).unwrap();
    assert_eq!(a.canonical_json(), b.canonical_json());
    assert_eq!(a.hash(), b.hash());
    // The canonical form re-parses to the same hash, and has no whitespace outside strings.
    let canon = a.canonical_json();
    let c = Manifest::parse(&canon).unwrap();
    assert_eq!(c.hash(), a.hash());
    assert_eq!(c.canonical_json(), canon);
    let text = String::from_utf8(canon).unwrap();
    assert!(
        text.starts_with(
            "{\"packages\":{\"app\":{\"accepted_tcb_statuses\":[\"UpToDate\"],\"debug\":false,"
        ),
        "{text}"
    );
    // A change of meaning changes the hash.
    let d = Manifest::parse(
        MINIMAL_JSON
            .replace("\"size\":256", "\"size\":128")
            .as_bytes(),
    )
    .unwrap();
    assert_ne!(d.hash(), a.hash());
    // The example is stable too.
    let e = Manifest::parse(EXAMPLE).unwrap();
    assert_eq!(
        Manifest::parse(&e.canonical_json()).unwrap().hash(),
        e.hash()
    );
    assert_eq!(e.hash_hex().len(), 64);
}

fn sgx_claims() -> MeasurementClaims {
    MeasurementClaims {
        mrenclave: Some([0x11; 32]),
        mrsigner: Some([0x83; 32]),
        isv_prod_id: Some(1),
        isv_svn: Some(3),
        tcb_status: "UpToDate".into(),
        ..MeasurementClaims::of_tee(Tee::Sgx)
    }
}

fn snp_claims() -> MeasurementClaims {
    MeasurementClaims {
        image_measurement: Some([0xc3; 32]),
        snp: Some(SnpClaims {
            measurement: [0xa1; 48],
            host_data: [0xb2; 32],
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            policy: 0x3_0000 | (1 << 8) | 51,
            vmpl: 0,
            reported_tcb: SnpTcb {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115,
                fmc: None,
            },
            crl_checked: false,
        }),
        ..MeasurementClaims::of_tee(Tee::Snp)
    }
}

/// An SEV-SNP package: measurement with host data, the guest policy, VMPL, TCB and CRL, each
/// refused with its own reason.
#[test]
fn snp_policy_matches_and_refuses_precisely() {
    let doc = format!(
        r#"{{
          "packages": {{ "vm": {{ "tee": "snp", "image_measurement": "{}",
            "snp": {{ "measurement": "{}", "host_data": "{}", "min_abi": "1.51",
                      "min_reported_tcb": {{ "bootloader": 3, "snp": 8, "microcode": 115 }} }} }} }},
          "workloads": {{ "vm": {{ "package": "vm" }} }}
        }}"#,
        "c3".repeat(32),
        "A1".repeat(48),
        "b2".repeat(32)
    );
    let mut m = Manifest::parse(doc.as_bytes()).unwrap();
    let ok = snp_claims();
    m.match_workload("vm", &ok).unwrap();
    // Intel claims never match an SNP package, nor SNP claims an Intel one.
    assert!(matches!(
        m.match_workload("vm", &sgx_claims()),
        Err(Mismatch::Tee { .. })
    ));
    let refused = |m: &Manifest, edit: &dyn Fn(&mut MeasurementClaims)| {
        let mut c = snp_claims();
        edit(&mut c);
        m.match_workload("vm", &c).unwrap_err().to_string()
    };
    fn snp(c: &mut MeasurementClaims) -> &mut SnpClaims {
        c.snp.as_mut().unwrap()
    }
    assert!(refused(&m, &|c| snp(c).measurement[0] ^= 1).contains("MEASUREMENT"));
    assert!(refused(&m, &|c| snp(c).host_data[31] ^= 1).contains("HOST_DATA"));
    assert!(refused(&m, &|c| c.debug = true).contains("debug guest"));
    assert!(refused(&m, &|c| snp(c).policy |= 1 << 18).contains("migration agent"));
    assert!(refused(&m, &|c| snp(c).policy -= 1).contains("minimum ABI 1.50 is below 1.51"));
    assert!(refused(&m, &|c| snp(c).vmpl = 2).contains("VMPL 2"));
    assert!(refused(&m, &|c| snp(c).reported_tcb.snp = 7).contains("SNP firmware SPL 7"));
    assert!(refused(&m, &|c| snp(c).reported_tcb.microcode = 114).contains("microcode"));
    assert!(refused(&m, &|c| c.image_measurement = None).contains("image measurement"));
    assert!(refused(&m, &|c| c.snp = None).contains("SEV-SNP report"));
    // SMT is accepted by default; a package can refuse it. A CRL can be required.
    {
        let p = m.packages.get_mut("vm").unwrap().snp.as_mut().unwrap();
        p.smt = false;
        p.require_crl = true;
    }
    assert!(refused(&m, &|_| {}).contains("allows SMT"));
    assert!(refused(&m, &|c| snp(c).policy &= !(1 << 16)).contains("without AMD's CRL"));
    m.match_workload(
        "vm",
        &MeasurementClaims {
            snp: Some(SnpClaims {
                policy: 0x2_0000 | (1 << 8) | 51,
                crl_checked: true,
                ..snp_claims().snp.unwrap()
            }),
            ..snp_claims()
        },
    )
    .unwrap();
}

#[test]
fn policy_matches_and_refuses_precisely() {
    let mut m = Manifest::parse(EXAMPLE).unwrap();
    // db: mrsigner 83d7…, product 1, min svn 3.
    let signer: [u8; 32] = hex::decode(m.packages["db"].mrsigner.as_ref().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let mut c = sgx_claims();
    c.mrsigner = Some(signer);
    assert!(m.match_workload("db", &c).is_ok());
    c.isv_svn = Some(4);
    assert!(m.match_workload("db", &c).is_ok());

    c.isv_svn = Some(2);
    let e = m.match_workload("db", &c).unwrap_err();
    assert_eq!(
        e,
        Mismatch::SvnTooLow {
            package: "db".into(),
            got: 2,
            minimum: 3
        }
    );
    assert_eq!(e.to_string(), "ISVSVN 2 below minimum 3 of package db");
    c.isv_svn = Some(3);

    c.isv_prod_id = Some(2);
    assert!(matches!(
        m.match_workload("db", &c),
        Err(Mismatch::ProductId {
            got: 2,
            expected: 1,
            ..
        })
    ));
    c.isv_prod_id = Some(1);

    c.debug = true;
    assert_eq!(
        m.match_workload("db", &c).unwrap_err().to_string(),
        "debug enclave not allowed by package db"
    );
    c.debug = false;

    c.tcb_status = "OutOfDate".into();
    assert_eq!(
        m.match_workload("db", &c).unwrap_err().to_string(),
        "TCB status OutOfDate not accepted by package db (accepted: UpToDate)"
    );
    c.tcb_status = "UpToDate".into();

    c.mrsigner = Some([0; 32]);
    let e = m.match_workload("db", &c).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("MRSIGNER 0000000000000000… not in package db"),
        "{e}"
    );
    c.mrsigner = Some(signer);

    // web pins MRENCLAVE and accepts SWHardeningNeeded.
    let e = m.match_workload("web", &c).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("MRENCLAVE 1111111111111111… not in package web"),
        "{e}"
    );
    let enclave: [u8; 32] = hex::decode(m.packages["web"].mrenclave.as_ref().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    c.mrenclave = Some(enclave);
    c.tcb_status = "SWHardeningNeeded".into();
    assert!(m.match_workload("web", &c).is_ok());
    c.mrenclave = None;
    assert!(matches!(
        m.match_workload("web", &c),
        Err(Mismatch::MissingClaim {
            claim: "MRENCLAVE",
            ..
        })
    ));

    // TDX evidence for an SGX package, and the TDX package.
    let mut t = sgx_claims();
    t.tee = Tee::Tdx;
    assert!(matches!(
        m.match_workload("web", &t),
        Err(Mismatch::Tee { .. })
    ));
    t.mrtd = Some([0xa1; 48]);
    t.rtmrs = Some([[0; 48], [0xb2; 48], [0; 48], [0; 48]]);
    // The container image is bound through the report data: without it, or another image,
    // the TD does not activate as "batch".
    assert!(matches!(
        m.match_workload("batch", &t),
        Err(Mismatch::MissingClaim {
            claim: "image measurement",
            ..
        })
    ));
    t.image_measurement = Some([0xc4; 32]);
    assert!(matches!(
        m.match_workload("batch", &t),
        Err(Mismatch::Measurement {
            register: "image measurement",
            ..
        })
    ));
    t.image_measurement = Some([0xc3; 32]);
    assert!(m.match_workload("batch", &t).is_ok());
    // No service TD bound (zero), and collateral from a recent enough TCB recovery.
    {
        let p = m.packages.get_mut("batch").unwrap();
        p.mrservicetd = Some("00".repeat(48));
        p.min_tcb_evaluation_data_number = Some(17);
    }
    t.mrservicetd = Some([0; 48]);
    t.tcb_evaluation_data_number = Some(17);
    assert!(m.match_workload("batch", &t).is_ok());
    t.mrservicetd = Some([0x5e; 48]);
    assert!(matches!(
        m.match_workload("batch", &t),
        Err(Mismatch::Measurement {
            register: "MRSERVICETD",
            ..
        })
    ));
    t.mrservicetd = Some([0; 48]);
    t.tcb_evaluation_data_number = Some(16);
    assert!(matches!(
        m.match_workload("batch", &t),
        Err(Mismatch::TcbEvaluationTooOld {
            got: 16,
            minimum: 17,
            ..
        })
    ));
    t.tcb_evaluation_data_number = Some(17);
    {
        let p = m.packages.get_mut("batch").unwrap();
        p.mrservicetd = None;
        p.min_tcb_evaluation_data_number = None;
    }
    t.rtmrs = Some([[0; 48]; 4]);
    assert!(matches!(
        m.match_workload("batch", &t),
        Err(Mismatch::Measurement {
            register: "RTMR1",
            ..
        })
    ));
    t.rtmrs = Some([[0; 48], [0xb2; 48], [0; 48], [0; 48]]);
    t.debug = true;
    assert_eq!(
        m.match_workload("batch", &t).unwrap_err().to_string(),
        "debug TD not allowed by package batch"
    );
    m.packages.get_mut("batch").unwrap().debug = true;
    assert!(m.match_workload("batch", &t).is_ok());

    assert_eq!(
        m.match_workload("ghost", &c).unwrap_err(),
        Mismatch::UnknownWorkload("ghost".into())
    );
}

/// A secret source as the Coordinator would be, with fixed test values.
struct Values;

impl SecretSource for Values {
    fn resolve(&self, target: &Target) -> Result<SecretValue, SourceError> {
        Ok(match target {
            Target::Secret {
                name,
                field: SecretField::Key,
            } if name == "session_key" => SecretValue::bytes(vec![0x5e; 32]),
            Target::Secret {
                name,
                field: SecretField::Key,
            } if name == "db_image_key" => SecretValue::bytes(vec![0x1d; 32]),
            Target::Secret {
                name,
                field: SecretField::Value,
            } if name == "db_password" => {
                SecretValue::bytes(b"correct horse battery staple".to_vec())
            }
            Target::Secret {
                field: SecretField::Private,
                ..
            } => SecretValue::bytes(vec![0x30, 0x01, 0x02]),
            Target::Secret {
                field: SecretField::Cert,
                ..
            }
            | Target::RootCa => SecretValue::bytes(vec![0x30, 0x03]),
            Target::WorkloadChain => SecretValue::der_chain(vec![vec![0x30, 1], vec![0x30, 2]]),
            other => return Err(SourceError(format!("test source has no {other:?}"))),
        })
    }
}

#[test]
fn render_workload_fills_placeholders_and_debug_shows_no_secret() {
    let m = Manifest::parse(EXAMPLE).unwrap();
    let r = m.render_workload("web", &Values).unwrap();
    let env: Vec<(String, String)> = r
        .env
        .clone()
        .into_iter()
        .map(|(k, v)| (k, v.into_string().unwrap()))
        .collect();
    assert!(env.contains(&("DB_PASSWORD".into(), "correct horse battery staple".into())));
    assert!(env.contains(&("SIGNING_KEY".into(), "MAEC".into())));
    let argv: Vec<String> = r
        .argv
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    assert_eq!(argv[4], "5e".repeat(32));
    let session = r
        .files
        .iter()
        .find(|f| f.path == "/etc/web/session.key")
        .unwrap();
    assert_eq!(session.content.as_bytes(), &[0x5e; 32]);
    assert_eq!(session.mode, 0o400);
    let chain = r
        .files
        .iter()
        .find(|f| f.path == "/etc/web/mtls/chain.pem")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(chain.content.as_bytes())
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );

    let shown = format!("{r:?}");
    assert!(!shown.contains("correct horse"), "{shown}");
    assert!(!shown.contains(&"5e".repeat(8)), "{shown}");
    assert!(!shown.contains("MAEC"), "{shown}");

    let db = m.render_workload("db", &Values).unwrap();
    assert_eq!(
        db.image_key.unwrap().into_string().unwrap(),
        "1d".repeat(32)
    );

    let targets = m.referenced_targets("db").unwrap();
    assert!(targets.contains(&Target::RootCa));
    assert!(targets.contains(&Target::Secret {
        name: "db_image_key".into(),
        field: SecretField::Key
    }));
    assert!(matches!(
        m.render_workload("ghost", &Values),
        Err(Error::UnknownWorkload(_))
    ));
}

#[test]
fn render_failure_names_placeholder_not_value() {
    struct Failing;
    impl SecretSource for Failing {
        fn resolve(&self, _: &Target) -> Result<SecretValue, SourceError> {
            Err(SourceError("not generated yet".into()))
        }
    }
    let m = Manifest::parse(EXAMPLE).unwrap();
    let e = m.render_workload("db", &Failing).unwrap_err();
    assert!(matches!(e, Error::Source { .. }));
    assert!(e.to_string().contains("not generated yet"), "{e}");
}

#[test]
fn roles_and_users() {
    let m = Manifest::parse(EXAMPLE).unwrap();
    assert!(m.user_may(
        "alice",
        ResourceKind::Secrets,
        Some("db_password"),
        Action::Write
    ));
    assert!(m.user_may("alice", ResourceKind::Packages, Some("web"), Action::Update));
    assert!(!m.user_may(
        "alice",
        ResourceKind::Packages,
        Some("batch"),
        Action::Update
    ));
    assert!(!m.user_may("alice", ResourceKind::Manifest, None, Action::Update));
    assert!(!m.user_may("alice", ResourceKind::Audit, None, Action::Read));
    assert!(m.user_may("bob", ResourceKind::Audit, None, Action::Read));
    assert!(!m.user_may(
        "bob",
        ResourceKind::Secrets,
        Some("db_password"),
        Action::Read
    ));
    assert!(!m.user_may("mallory", ResourceKind::Audit, None, Action::Read));

    let der = coffer_manifest::certificate_der(&m.users["bob"].certificate).unwrap();
    assert_eq!(m.user_for_certificate(&der), Some("bob"));
    let mut other = der.clone();
    let last = other.len() - 1;
    other[last] ^= 1;
    assert_eq!(m.user_for_certificate(&other), None);
}

#[test]
fn user_values_are_checked_against_the_declaration() {
    let m = Manifest::parse(EXAMPLE).unwrap();
    assert!(m.check_user_value("db_password", b"pw").is_ok());
    assert!(m.check_user_value("api_token", &[0; 32]).is_ok());
    let e = m.check_user_value("api_token", &[0; 16]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "value for secret \"api_token\" refused: expected exactly 32 bytes (256 bits), got 16"
    );
    assert!(matches!(
        m.check_user_value("session_key", b"x"),
        Err(Error::UserValue { .. })
    ));
    assert!(matches!(
        m.check_user_value("nope", b"x"),
        Err(Error::UnknownSecret(_))
    ));
    let big = vec![b'a'; coffer_manifest::MAX_USER_VALUE_BYTES + 1];
    assert!(matches!(
        m.check_user_value("db_password", &big),
        Err(Error::UserValue { .. })
    ));
}

#[test]
fn update_check_reports_and_refuses() {
    let old = Manifest::parse(EXAMPLE).unwrap();
    assert!(Manifest::check_update(&old, &old).unwrap().is_empty());

    let mut new = old.clone();
    new.packages.get_mut("db").unwrap().isv_svn = Some(5);
    let s = Manifest::check_update(&old, &new).unwrap();
    assert_eq!(
        s.changes,
        vec![Change::PackageSvnRaised {
            package: "db".into(),
            from: 3,
            to: 5
        }]
    );
    assert!(s.only_svn_upgrades() && s.only_packages());
    assert_eq!(s.packages().into_iter().collect::<Vec<_>>(), vec!["db"]);
    assert_eq!(s.to_string(), "package db: minimum ISVSVN 3 -> 5");

    new.packages.get_mut("db").unwrap().isv_svn = Some(2);
    let e = Manifest::check_update(&old, &new).unwrap_err();
    assert!(
        e.to_string()
            .contains("lowers its minimum ISVSVN from 3 to 2"),
        "{e}"
    );

    let mut new = old.clone();
    new.secrets.get_mut("session_key").unwrap().size = Some(512);
    let e = Manifest::check_update(&old, &new).unwrap_err();
    assert!(
        e.to_string()
            .contains("secret session_key changes its declaration"),
        "{e}"
    );

    let mut new = old.clone();
    new.workloads.get_mut("web").unwrap().max_activations = Some(20);
    new.packages.get_mut("web").unwrap().debug = true;
    let s = Manifest::check_update(&old, &new).unwrap();
    assert!(!s.only_packages());
    assert!(s.changes.contains(&Change::WorkloadChanged("web".into())));
    assert!(s.changes.contains(&Change::PackageChanged {
        package: "web".into(),
        fields: vec!["debug"]
    }));
}

#[test]
fn schema_is_json_and_names_every_top_level_field() {
    let schema = Manifest::json_schema();
    let text = serde_json::to_string(&schema).unwrap();
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    let props = back["properties"].as_object().expect("properties");
    let example: serde_json::Value = serde_json::from_slice(EXAMPLE).unwrap();
    for key in example.as_object().unwrap().keys() {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
    for key in [
        "packages",
        "workloads",
        "secrets",
        "users",
        "roles",
        "recovery_keys",
        "recovery_threshold",
        "tls",
    ] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
    assert_eq!(back["additionalProperties"], serde_json::Value::Bool(false));
    structural::check(&back, &back, &example, "$");
}

/// A small structural JSON Schema checker (type, properties, required, additionalProperties,
/// items, enum, $ref, anyOf/oneOf), enough to show the example fits the published schema.
mod structural {
    use serde_json::Value;

    fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.trim_start_matches('#');
                resolve(
                    root,
                    root.pointer(pointer)
                        .unwrap_or_else(|| panic!("dangling $ref {r}")),
                )
            }
            None => schema,
        }
    }

    fn type_ok(t: &str, v: &Value) -> bool {
        match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        }
    }

    fn matches(root: &Value, schema: &Value, v: &Value) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(root, schema, v, "?")))
            .is_ok()
    }

    pub(super) fn check(root: &Value, schema: &Value, v: &Value, path: &str) {
        let s = resolve(root, schema);
        if s == &Value::Bool(true) {
            return;
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = s.get(key).and_then(Value::as_array) {
                assert!(
                    alts.iter().any(|a| matches(root, a, v)),
                    "{path}: no {key} alternative fits"
                );
            }
        }
        match s.get("type") {
            Some(Value::String(t)) => assert!(type_ok(t, v), "{path}: expected {t}, got {v}"),
            Some(Value::Array(ts)) => {
                assert!(
                    ts.iter().any(|t| type_ok(t.as_str().unwrap_or(""), v)),
                    "{path}: type"
                )
            }
            _ => {}
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array) {
            assert!(e.contains(v), "{path}: {v} not in enum");
        }
        if let Some(c) = s.get("const") {
            assert_eq!(c, v, "{path}: const");
        }
        if let Value::Object(obj) = v {
            let props = s.get("properties").and_then(Value::as_object);
            if let Some(req) = s.get("required").and_then(Value::as_array) {
                for r in req {
                    assert!(
                        obj.contains_key(r.as_str().unwrap()),
                        "{path}: required {r} missing"
                    );
                }
            }
            for (k, val) in obj {
                let sub = format!("{path}.{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => check(root, ps, val, &sub),
                    None => match s.get("additionalProperties") {
                        Some(Value::Bool(false)) => panic!("{sub}: not allowed by the schema"),
                        Some(ap @ Value::Object(_)) => check(root, ap, val, &sub),
                        _ => {}
                    },
                }
            }
        }
        if let (Value::Array(items), Some(is)) = (v, s.get("items")) {
            for (i, item) in items.iter().enumerate() {
                check(root, is, item, &format!("{path}[{i}]"));
            }
        }
    }
}

#[test]
fn fuzz_harness_holds_on_the_corpus_and_mutations() {
    coffer_manifest::fuzzing::check_parse(EXAMPLE);
    coffer_manifest::fuzzing::check_parse(MINIMAL_YAML.as_bytes());
    for ((_, bytes), _, _) in BROKEN {
        coffer_manifest::fuzzing::check_parse(bytes);
    }
    // Truncations and single-byte flips of the example (a cheap deterministic fuzz).
    for cut in (0..EXAMPLE.len()).step_by(97) {
        coffer_manifest::fuzzing::check_parse(&EXAMPLE[..cut]);
    }
    for i in (0..EXAMPLE.len()).step_by(53) {
        let mut m = EXAMPLE.to_vec();
        m[i] ^= 0x20;
        coffer_manifest::fuzzing::check_parse(&m);
    }
}

#[test]
fn yaml_alias_expansion_is_bounded() {
    // One 512 KiB string used through aliases 2000 times would be 1 GiB expanded; it must be
    // refused with an error, never a huge allocation or a panic.
    let mut y = String::from("packages:\n  app: {tee: sgx, mrenclave: &big \"");
    y.push_str(&"a".repeat(512 * 1024));
    y.push_str("\"}\nworkloads:\n  app:\n    package: app\n    parameters:\n      env:\n");
    for i in 0..2000 {
        y.push_str(&format!("        V{i}: *big\n"));
    }
    let errs = Manifest::parse(y.as_bytes()).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs}");
    assert!(
        errs.errors()[0].message.contains("expands to more than"),
        "{errs}"
    );
    // The same document without the repetition is judged on its content as usual.
    let small = y.split("      env:").next().unwrap();
    let errs = Manifest::parse(small.as_bytes()).unwrap_err();
    assert!(errs.has_path("$.packages.app.mrenclave"), "{errs}");
}
