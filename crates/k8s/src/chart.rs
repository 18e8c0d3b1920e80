//! The Helm chart (`deploy/helm/coffer`) and `coffer k8s render`.
//!
//! The chart's templates are the one source of Coffer's Kubernetes manifests. This module embeds
//! them (`include_str!`) and evaluates them with [`template`](self), a strict implementation of
//! the subset of Helm's template language they use, so `coffer k8s render` gives the objects
//! `helm template` gives without needing Helm, and cannot drift from the chart: there is no
//! second copy of the manifests. A template using anything outside the subset fails to render
//! with an error naming the file and line (and a test renders every file of the chart).
//!
//! ```
//! use coffer_k8s::chart::{self, Release};
//! let mut overrides = serde_yaml::Value::Null;
//! chart::merge_values(&mut overrides, chart::parse_set("store.type=embedded")?);
//! let yaml = chart::render(&Release::new("coffer", "coffer")?, &overrides)?;
//! assert!(yaml.contains("kind: Deployment"));
//! # Ok::<(), coffer_k8s::Error>(())
//! ```
//!
//! Values work as in Helm: the chart's `values.yaml` deep-merged with overrides (maps merge key
//! by key, anything else replaces). One difference, on purpose: an override naming a key that
//! `values.yaml` does not have is refused (Helm ignores it silently), except under the free-form
//! maps listed in [`FREE_FORM_VALUES`], so a typo such as `--set simulaton=true` cannot go
//! unnoticed.

mod template;

use serde_yaml::{Mapping, Value};

use crate::Error;
use template::{Template, Val};

/// The chart's name, as `helm template` writes it in `# Source: <chart>/templates/<file>`.
pub const CHART_NAME: &str = "coffer";

/// The chart's `values.yaml`.
const VALUES_YAML: &str = include_str!("../../../deploy/helm/coffer/values.yaml");
/// The chart's `Chart.yaml` (for `.Chart`).
const CHART_YAML: &str = include_str!("../../../deploy/helm/coffer/Chart.yaml");
/// The chart's `templates/NOTES.txt` (printed by `helm install`, not part of the objects).
const NOTES_TXT: &str = include_str!("../../../deploy/helm/coffer/templates/NOTES.txt");

/// Every manifest template of the chart (`templates/*.yaml`), by file name, sorted.
/// A test compares this list with the chart's directory, so a template added to the chart
/// without being added here fails the build's tests.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "coordinator.yaml",
        include_str!("../../../deploy/helm/coffer/templates/coordinator.yaml"),
    ),
    (
        "etcd.yaml",
        include_str!("../../../deploy/helm/coffer/templates/etcd.yaml"),
    ),
    (
        "node-agent.yaml",
        include_str!("../../../deploy/helm/coffer/templates/node-agent.yaml"),
    ),
    (
        "rbac.yaml",
        include_str!("../../../deploy/helm/coffer/templates/rbac.yaml"),
    ),
    (
        "runtimeclasses.yaml",
        include_str!("../../../deploy/helm/coffer/templates/runtimeclasses.yaml"),
    ),
    (
        "serviceaccounts.yaml",
        include_str!("../../../deploy/helm/coffer/templates/serviceaccounts.yaml"),
    ),
    (
        "webhook-cert-manager.yaml",
        include_str!("../../../deploy/helm/coffer/templates/webhook-cert-manager.yaml"),
    ),
    (
        "webhook.yaml",
        include_str!("../../../deploy/helm/coffer/templates/webhook.yaml"),
    ),
];

/// Value paths under which overrides may add keys `values.yaml` does not have (maps handed to
/// Kubernetes as they are: resources, node selectors, RuntimeClass overhead).
pub const FREE_FORM_VALUES: &[&str] = &[
    "coordinator.resources",
    "coordinator.nodeSelector",
    "webhook.resources",
    "nodeAgent.nodeSelector",
    "nodeAgent.resources",
    "runtimeClasses.tdx.overhead",
    "runtimeClasses.snp.overhead",
    "etcd.resources",
];

/// Kinds in the order Helm installs (and `helm template` prints) them; other kinds follow,
/// sorted by name. Copied from Helm's `releaseutil.InstallOrder`.
const INSTALL_ORDER: &[&str] = &[
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// Bound on a values file: values are small; a huge file is a mistake, not a chart.
const MAX_VALUES_BYTES: usize = 1 << 20;

/// The release: Helm's `.Release.Name` and `.Release.Namespace`.
///
/// Object names are fixed (`coffer-coordinator`, `coffer-webhook`, …) rather than derived from
/// the release name, because the cluster-scoped objects (the MutatingWebhookConfiguration, the
/// RuntimeClasses, the ClusterRoles) allow one Coffer per cluster and the other components find
/// each other by these names. The release name appears in the `app.kubernetes.io/instance`
/// label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    name: String,
    namespace: String,
}

impl Release {
    /// Checks the names as Kubernetes and Helm would: the namespace is a DNS label
    /// (RFC 1123, at most 63 characters), the release name a DNS label of at most 53.
    pub fn new(name: &str, namespace: &str) -> Result<Self, Error> {
        check_dns_label("release name", name, 53)?;
        check_dns_label("namespace", namespace, 63)?;
        Ok(Release {
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// The release name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

fn check_dns_label(what: &'static str, value: &str, max: usize) -> Result<(), Error> {
    let reason = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > max {
        Some("it is too long")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("only lower-case letters, digits and '-' are allowed")
    } else if value.starts_with('-') || value.ends_with('-') {
        Some("it must start and end with a letter or digit")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidRelease {
            what,
            value: value.chars().take(80).collect(),
            reason: if value.len() > max {
                format!("{reason} (at most {max} characters)")
            } else {
                reason.to_string()
            },
        }),
    }
}

/// The chart's default values (`values.yaml`).
pub fn default_values() -> Value {
    // The file is part of this crate's source and a unit test parses it, so this cannot fail
    // in a build whose tests passed; fall back to an empty map rather than panic.
    serde_yaml::from_str(VALUES_YAML).unwrap_or(Value::Mapping(Mapping::new()))
}

/// Parses a values file (`-f`): a YAML map, or an empty document.
pub fn parse_values_file(name: &str, text: &str) -> Result<Value, Error> {
    if text.len() > MAX_VALUES_BYTES {
        return Err(Error::Values(format!(
            "{name}: {} bytes, more than the {MAX_VALUES_BYTES} a values file may have",
            text.len()
        )));
    }
    let v: Value =
        serde_yaml::from_str(text).map_err(|e| Error::Values(format!("{name}: not YAML: {e}")))?;
    match v {
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        Value::Mapping(_) => Ok(v),
        _ => Err(Error::Values(format!(
            "{name}: the values must be a YAML map"
        ))),
    }
}

/// Parses one `--set` argument as Helm does: `a.b=v[,c=w…]`; values `true`/`false`/`null`,
/// decimal integers (without a leading zero), `{x,y}` lists, otherwise strings; `\` escapes
/// `,` `.` `=` `{` `}` and itself. List indices (`a[0]=v`) are not supported: use `a={x,y}`.
pub fn parse_set(expr: &str) -> Result<Value, Error> {
    if expr.len() > MAX_VALUES_BYTES {
        return Err(Error::Values("--set argument too long".into()));
    }
    let mut out = Value::Mapping(Mapping::new());
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        // Key: dotted path up to '='.
        let mut path = vec![String::new()];
        loop {
            let Some(&c) = chars.get(i) else {
                return Err(Error::Values(format!(
                    "--set {expr:?}: key {:?} has no '=value'",
                    path.join(".")
                )));
            };
            i += 1;
            match c {
                '\\' => match chars.get(i) {
                    Some(&e) => {
                        if let Some(s) = path.last_mut() {
                            s.push(e);
                        }
                        i += 1;
                    }
                    None => return Err(Error::Values(format!("--set {expr:?}: trailing '\\'"))),
                },
                '=' => break,
                '.' => path.push(String::new()),
                '[' | ']' => {
                    return Err(Error::Values(format!(
                        "--set {expr:?}: list indices are not supported; set the whole list with key={{a,b}}"
                    )))
                }
                ',' => {
                    return Err(Error::Values(format!(
                        "--set {expr:?}: key {:?} has no '=value'",
                        path.join(".")
                    )))
                }
                c => {
                    if let Some(s) = path.last_mut() {
                        s.push(c);
                    }
                }
            }
        }
        if path.iter().any(String::is_empty) {
            return Err(Error::Values(format!(
                "--set {expr:?}: empty key segment in {:?}",
                path.join(".")
            )));
        }
        // Value: a {list} or a scalar up to an unescaped ','.
        let value = if chars.get(i) == Some(&'{') {
            i += 1;
            let mut items = Vec::new();
            let mut cur = String::new();
            loop {
                let Some(&c) = chars.get(i) else {
                    return Err(Error::Values(format!("--set {expr:?}: unclosed '{{'")));
                };
                i += 1;
                match c {
                    '\\' => {
                        if let Some(&e) = chars.get(i) {
                            cur.push(e);
                            i += 1;
                        }
                    }
                    ',' => items.push(typed(std::mem::take(&mut cur))),
                    '}' => {
                        if !cur.is_empty() || !items.is_empty() {
                            items.push(typed(std::mem::take(&mut cur)));
                        }
                        break;
                    }
                    c => cur.push(c),
                }
            }
            match chars.get(i) {
                None => {}
                Some(',') => i += 1,
                Some(_) => {
                    return Err(Error::Values(format!(
                        "--set {expr:?}: text after a '}}' must be ','"
                    )))
                }
            }
            Value::Sequence(items)
        } else {
            let mut cur = String::new();
            while let Some(&c) = chars.get(i) {
                i += 1;
                match c {
                    '\\' => {
                        if let Some(&e) = chars.get(i) {
                            cur.push(e);
                            i += 1;
                        }
                    }
                    ',' => break,
                    c => cur.push(c),
                }
            }
            typed(cur)
        };
        let mut nested = value;
        for key in path.into_iter().rev() {
            let mut m = Mapping::new();
            m.insert(Value::String(key), nested);
            nested = Value::Mapping(m);
        }
        merge_values(&mut out, nested);
    }
    Ok(out)
}

/// Helm's `typedVal` for `--set`.
fn typed(s: String) -> Value {
    match s.as_str() {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" => return Value::Null,
        _ => {}
    }
    if let Ok(n) = s.parse::<i64>() {
        if s == "0" || !(s.starts_with('0') || s.starts_with("-0") || s.starts_with('+')) {
            return Value::Number(n.into());
        }
    }
    Value::String(s)
}

/// Deep-merges `overlay` into `base` as Helm coalesces values: maps merge key by key, anything
/// else in `overlay` replaces what `base` had.
pub fn merge_values(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge_values(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Refuses override keys that `values.yaml` does not have (see the module docs).
fn check_known(defaults: &Value, overrides: &Value, path: &str) -> Result<(), Error> {
    let (Value::Mapping(d), Value::Mapping(o)) = (defaults, overrides) else {
        return Ok(());
    };
    if FREE_FORM_VALUES.contains(&path) {
        return Ok(());
    }
    for (k, v) in o {
        let Value::String(key) = k else {
            return Err(Error::Values(format!(
                "key {k:?} under {:?} is not a string",
                if path.is_empty() { "." } else { path }
            )));
        };
        let child = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match d.get(k) {
            Some(dv) => check_known(dv, v, &child)?,
            None => {
                return Err(Error::Values(format!(
                    "unknown value {child:?}: the chart has no such value (see deploy/helm/coffer/README.md)"
                )))
            }
        }
    }
    Ok(())
}

/// `.` of the templates: `.Values`, `.Release`, `.Chart`, as Helm builds it.
fn root_context(release: &Release, overrides: &Value) -> Result<Val, Error> {
    let defaults = default_values();
    check_known(&defaults, overrides, "")?;
    let mut values = defaults;
    if !overrides.is_null() {
        merge_values(&mut values, overrides.clone());
    }
    let chart: Value =
        serde_yaml::from_str(CHART_YAML).map_err(|e| Error::Values(format!("Chart.yaml: {e}")))?;
    let field = |k: &str| chart.get(k).cloned().unwrap_or(Value::Null);
    let mut root = Mapping::new();
    root.insert("Values".into(), values);
    let mut rel = Mapping::new();
    rel.insert("Name".into(), release.name.clone().into());
    rel.insert("Namespace".into(), release.namespace.clone().into());
    rel.insert("Service".into(), "Helm".into());
    root.insert("Release".into(), Value::Mapping(rel));
    let mut ch = Mapping::new();
    ch.insert("Name".into(), field("name"));
    ch.insert("Version".into(), field("version"));
    ch.insert("AppVersion".into(), field("appVersion"));
    root.insert("Chart".into(), Value::Mapping(ch));
    Val::from_yaml(&Value::Mapping(root)).map_err(|e| Error::Values(format!("values: {e}")))
}

fn source_name(file: &str) -> String {
    format!("{CHART_NAME}/templates/{file}")
}

fn execute(file: &str, src: &str, root: &Val) -> Result<String, Error> {
    let to_err = |e: template::TplError| {
        if e.fail {
            Error::ChartRefused {
                template: source_name(file),
                line: e.line,
                message: e.message,
            }
        } else {
            Error::Template {
                template: source_name(file),
                line: e.line,
                message: e.message,
            }
        }
    };
    Template::parse(src)
        .map_err(to_err)?
        .execute(root)
        .map_err(to_err)
}

/// Evaluates one template file of the chart (a name from [`TEMPLATES`], or `NOTES.txt`) and
/// returns its text as rendered, before splitting into documents.
pub fn render_template(file: &str, release: &Release, overrides: &Value) -> Result<String, Error> {
    let src = if file == "NOTES.txt" {
        NOTES_TXT
    } else {
        TEMPLATES
            .iter()
            .find(|(name, _)| *name == file)
            .map(|(_, src)| *src)
            .ok_or_else(|| Error::Values(format!("the chart has no template {file:?}")))?
    };
    execute(file, src, &root_context(release, overrides)?)
}

/// Evaluates template text that is not (yet) part of the chart, named `file`, with the chart's
/// values: for checking a template with the same evaluator before adding it to the chart.
pub fn render_source(
    file: &str,
    src: &str,
    release: &Release,
    overrides: &Value,
) -> Result<String, Error> {
    execute(file, src, &root_context(release, overrides)?)
}

/// The chart's NOTES.txt for these values (what `helm install` prints afterwards).
pub fn render_notes(release: &Release, overrides: &Value) -> Result<String, Error> {
    render_template("NOTES.txt", release, overrides)
}

/// Splits rendered text into YAML documents as Helm does (lines `---`), dropping empty ones.
fn split_documents(file: &str, text: &str) -> Result<Vec<String>, Error> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("---") {
            if !rest.trim().is_empty() {
                return Err(Error::Template {
                    template: source_name(file),
                    line: n + 1,
                    message: "text after a '---' document separator (rendered output)".into(),
                });
            }
            docs.push(std::mem::take(&mut cur));
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    docs.push(cur);
    Ok(docs
        .into_iter()
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect())
}

/// Renders every manifest template with the chart's values merged with `overrides`, as
/// `helm template --namespace <ns> <name> deploy/helm/coffer` does: a YAML stream of
/// documents, each `---` and `# Source: coffer/templates/<file>` then the object, in Helm's
/// install order by kind.
///
/// `overrides` is a YAML map (or null): build it with [`parse_values_file`], [`parse_set`] and
/// [`merge_values`], in the order Helm applies them (`-f` files first, then `--set`).
pub fn render(release: &Release, overrides: &Value) -> Result<String, Error> {
    let root = root_context(release, overrides)?;
    let mut docs: Vec<(usize, String, String, String)> = Vec::new();
    for (file, src) in TEMPLATES {
        let text = execute(file, src, &root)?;
        for doc in split_documents(file, &text)? {
            let parsed: Value = serde_yaml::from_str(&doc).map_err(|e| Error::RenderedYaml {
                template: source_name(file),
                message: e.to_string(),
            })?;
            if parsed.is_null() {
                // Only comments: Helm keeps nothing installable from it either.
                continue;
            }
            let kind = parsed
                .get("kind")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::RenderedYaml {
                    template: source_name(file),
                    message: "a document without kind".into(),
                })?
                .to_string();
            let order = INSTALL_ORDER
                .iter()
                .position(|k| *k == kind)
                .unwrap_or(INSTALL_ORDER.len());
            docs.push((order, kind, source_name(file), doc));
        }
    }
    // Stable: same kind keeps template order; unknown kinds last, by kind name, as Helm sorts.
    docs.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            if a.0 == INSTALL_ORDER.len() {
                a.1.cmp(&b.1)
            } else {
                std::cmp::Ordering::Equal
            }
        })
    });
    let mut out = String::new();
    for (_, _, source, doc) in docs {
        out.push_str("---\n# Source: ");
        out.push_str(&source);
        out.push('\n');
        out.push_str(&doc);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> Release {
        Release::new("coffer", "coffer").unwrap()
    }

    #[test]
    fn values_yaml_parses_to_a_map() {
        let v: Value = serde_yaml::from_str(VALUES_YAML).unwrap();
        assert!(v.is_mapping());
        assert_eq!(default_values(), v);
    }

    #[test]
    fn set_parses_like_helm() {
        let v = parse_set("a.b=1,c=true,d=null,e=007,f={x,2},g=a\\,b,h\\.i=z").unwrap();
        let want: Value = serde_yaml::from_str(
            "a: {b: 1}\nc: true\nd: null\ne: '007'\nf: [x, 2]\ng: 'a,b'\nh.i: z",
        )
        .unwrap();
        assert_eq!(v, want);
        assert!(parse_set("a[0]=1")
            .unwrap_err()
            .to_string()
            .contains("list indices"));
        assert!(parse_set("a.b")
            .unwrap_err()
            .to_string()
            .contains("no '=value'"));
        assert!(parse_set("a..b=1")
            .unwrap_err()
            .to_string()
            .contains("empty key"));
    }

    #[test]
    fn merge_is_deep() {
        let mut base: Value = serde_yaml::from_str("a: {b: 1, c: 2}\nd: [1]").unwrap();
        merge_values(
            &mut base,
            serde_yaml::from_str("a: {c: 3}\nd: [2, 3]").unwrap(),
        );
        assert_eq!(
            base,
            serde_yaml::from_str::<Value>("a: {b: 1, c: 3}\nd: [2, 3]").unwrap()
        );
    }

    #[test]
    fn unknown_values_are_refused_but_free_form_maps_accept_keys() {
        let e = render(&release(), &parse_set("simulaton=true").unwrap()).unwrap_err();
        assert!(
            matches!(&e, Error::Values(m) if m.contains("\"simulaton\"")),
            "{e}"
        );
        render(
            &release(),
            &parse_set("nodeAgent.nodeSelector.extra=yes,etcd.resources.limits.cpu=1").unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn release_names_are_dns_labels() {
        assert!(Release::new("coffer", "Bad_NS").is_err());
        assert!(Release::new("-x", "ns").is_err());
        assert!(Release::new("x", &"a".repeat(64)).is_err());
        assert!(Release::new("x", &"a".repeat(63)).is_ok());
    }

    #[test]
    fn documents_split_on_separator_lines_only() {
        let docs = split_documents("t", "a: 1\n---\n\n---   \nb: '---'\n").unwrap();
        assert_eq!(docs, vec!["a: 1".to_string(), "b: '---'".to_string()]);
        assert!(split_documents("t", "---x\n").is_err());
    }

    #[test]
    fn fail_in_a_template_is_a_refusal_of_the_values() {
        let e = render(&release(), &parse_set("store.type=sqlite").unwrap()).unwrap_err();
        match e {
            Error::ChartRefused {
                template, message, ..
            } => {
                assert_eq!(template, "coffer/templates/coordinator.yaml");
                assert_eq!(message, "store.type must be etcd or embedded");
            }
            other => panic!("{other}"),
        }
    }
}
