//! The checked-in CRD manifests must be exactly what the Rust types generate.

use std::path::Path;

use skein_operator::crd::TracingPipelineStatus;

#[test]
fn checked_in_crds_match_the_types() {
    let generated = skein_operator::crdgen::crd_yaml().expect("generate");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for dir in ["crds", "charts/skein/crds"] {
        let path = root.join(dir).join(skein_operator::crdgen::CRD_FILE);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == generated,
            "{} is out of date with operator/src/crd.rs; regenerate it with \
             `cargo run -p skein-operator --bin skein-crdgen {dir}` (for both crds and charts/skein/crds)",
            path.display()
        );
        checked += 1;
    }
    assert_eq!(checked, 2);
    // The chart ships exactly the generated CRDs, nothing more.
    for dir in ["crds", "charts/skein/crds"] {
        let files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, [skein_operator::crdgen::CRD_FILE], "{dir}");
    }
}

#[test]
fn crd_is_structural_with_no_refs_and_names_the_resource() {
    let generated = skein_operator::crdgen::crd_yaml().expect("generate");
    let crd: serde_json::Value = serde_yaml::from_str(&generated).expect("yaml");
    assert_eq!(crd["spec"]["group"], "skein.dev");
    assert_eq!(crd["spec"]["names"]["kind"], "TracingPipeline");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "tp");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns = version["additionalPrinterColumns"].as_array().expect("columns");
    let shown = |wide: bool| -> Vec<&str> {
        columns
            .iter()
            .filter(|c| wide || c["priority"].as_i64().unwrap_or(0) == 0)
            .filter_map(|c| c["name"].as_str())
            .collect()
    };
    assert_eq!(shown(false), ["Ready", "Reason", "Collectors", "Namespaces", "Pods", "Age"], "kubectl get tp");
    assert_eq!(
        shown(true),
        ["Ready", "Reason", "Collectors", "Namespaces", "Pods", "Age", "Storage", "Sampling", "Stale", "Uninjected"],
        "kubectl get tp -o wide"
    );
    // Every column reads a field the status has.
    let status = serde_json::to_value(TracingPipelineStatus {
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "PipelineReady".into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            observed_generation: None,
        }],
        collectors: Some("1/1".into()),
        storage: Some("embedded".into()),
        sampling: Some("tail".into()),
        agents: Some(Default::default()),
        ..Default::default()
    })
    .expect("status");
    for c in columns {
        let path = c["jsonPath"].as_str().expect("jsonPath");
        let Some(field) = path.strip_prefix(".status.") else { continue };
        let top = field.split(['.', '[']).next().expect("field");
        assert!(status.get(top).is_some(), "{path}: status has no {top}");
        if let Some(rest) = field.strip_prefix("agents.") {
            assert!(status["agents"].get(rest).is_some(), "{path}: status.agents has no {rest}");
        }
    }
    // Kubernetes rejects `$ref`, `definitions` and `additionalProperties: false` in CRD schemas.
    fn walk(v: &serde_json::Value, path: &str) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, child) in m {
                    assert!(
                        k != "$ref" && k != "definitions" && k != "$defs",
                        "{path}.{k} is not allowed in a CRD schema"
                    );
                    if k == "additionalProperties" {
                        assert!(child.is_object(), "{path}.additionalProperties must be a schema");
                    }
                    walk(child, &format!("{path}.{k}"));
                }
            }
            serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| walk(c, &format!("{path}[{i}]"))),
            _ => {}
        }
    }
    walk(&version["schema"], "schema");
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    // The collector's own tail-sampling types are embedded, with their OpenTelemetry field names.
    let policy = &spec["sampling"]["properties"]["tail"]["properties"]["policies"]["items"]["properties"];
    assert!(policy["probabilistic"]["properties"]["sampling_percentage"].is_object(), "{policy}");
    assert!(policy["and"]["properties"]["and_sub_policy"]["items"]["properties"]["latency"].is_object());
    assert!(spec["storage"]["properties"]["scylla"]["properties"]["reclaimPolicy"]["enum"].is_array());
    assert!(spec["redaction"]["items"]["properties"]["action"]["enum"].is_array());
}
