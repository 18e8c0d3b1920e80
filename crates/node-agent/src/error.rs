//! The one error type of this crate.

/// What went wrong, split by cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a local file or socket failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or socket.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    // ---- EPC capacity (epc.rs, agent.rs) ----
    /// CPUID does not report SGX (`CPUID.(EAX=7,ECX=0):EBX[2]` clear, or leaf 7 absent).
    #[error(
        "this processor does not report SGX (CPUID leaf 7 EBX bit 2 is clear): run the node \
         agent only on SGX nodes (label feature.node.kubernetes.io/cpu-security.sgx.enabled)"
    )]
    SgxNotSupported,
    /// SGX is reported but the maximum basic CPUID leaf is below `0x12`.
    #[error(
        "CPUID reports SGX but its maximum basic leaf is {max_leaf:#x}, below the SGX leaf 0x12"
    )]
    SgxLeafAbsent {
        /// The maximum basic leaf (`CPUID.(EAX=0):EAX`).
        max_leaf: u32,
    },
    /// SGX is reported but SGX1 is not (`CPUID.(EAX=0x12,ECX=0):EAX[0]` clear).
    #[error(
        "CPUID reports SGX but not SGX1 (leaf 0x12 sub-leaf 0 EAX bit 0 is clear): enable SGX \
         in the BIOS/firmware"
    )]
    SgxDisabled,
    /// Leaf `0x12` lists no EPC section.
    #[error("CPUID leaf 0x12 lists no EPC section: set the PRM/EPC size in the BIOS/firmware")]
    NoEpcSections,
    /// An EPC section sub-leaf is not laid out as the SDM says.
    #[error("CPUID leaf 0x12 sub-leaf {subleaf}: {reason}")]
    EpcSubleafMalformed {
        /// The sub-leaf (2, 3, …).
        subleaf: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// The EPC list is not terminated by an invalid sub-leaf within the bound.
    #[error("CPUID leaf 0x12 lists more than {max} EPC sub-leaves without an invalid one ending the list")]
    TooManyEpcSubleaves {
        /// The bound.
        max: u32,
    },
    /// The EPC section sizes do not add up within 64 bits.
    #[error("the EPC section sizes add up to more than 2^64 bytes")]
    EpcOverflow,
    /// A recorded-CPUID file is malformed.
    #[error("recorded CPUID, line {line}: {reason}")]
    CpuidRecord {
        /// 1-based line number (0: the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The node name is not a valid Kubernetes object name.
    #[error(
        "node name {name:?} is not a valid Kubernetes node name (DNS subdomain): set NODE_NAME \
         from the downward API (fieldRef spec.nodeName)"
    )]
    InvalidNodeName {
        /// The name as given (truncated).
        name: String,
    },
    /// The API server refused or failed a request about this node.
    #[error("{action} Node {node}: {}", crate::error::describe_kube(.source))]
    NodeApi {
        /// The Node.
        node: String,
        /// What was being done ("patching the status of", …).
        action: &'static str,
        /// The cause.
        source: Box<kube::Error>,
    },
    /// No Kubernetes client configuration (in-cluster service account or kubeconfig).
    #[error(
        "cannot configure a Kubernetes client (in-cluster service account or kubeconfig): {source}"
    )]
    KubeClient {
        /// The cause.
        source: Box<kube::Error>,
    },
    // ---- device plugin (device_plugin.rs) ----
    /// The device plugin configuration cannot work (zero interval, device count out of range,
    /// a path that is not UTF-8).
    #[error("device plugin configuration: {reason}")]
    DevicePluginConfig {
        /// What is wrong.
        reason: String,
    },
    /// Something other than a Unix socket is where a plugin socket goes: the agent refuses
    /// to delete it.
    #[error(
        "{path} exists and is not a Unix socket: the device plugin will not delete it; remove \
         it or point the plugin directory elsewhere"
    )]
    SocketPathOccupied {
        /// The socket path.
        path: String,
    },
    /// The plugin socket is served by another process (a second node agent, or another
    /// install of the chart); deleting it would cut that plugin off from the kubelet.
    #[error(
        "{path} is served by another running device plugin; stop that plugin (another node \
         agent or chart install on this node) or set nodeAgent.devicePlugin=off"
    )]
    SocketInUse {
        /// The socket path.
        path: String,
    },
    /// Registering a resource with the kubelet failed.
    #[error("registering {resource} with the kubelet at {socket}: {reason}")]
    Registration {
        /// The resource name (`sgx.intel.com/enclave`, …).
        resource: &'static str,
        /// The kubelet's socket.
        socket: String,
        /// The transport error or the kubelet's answer.
        reason: String,
    },
    /// A device plugin gRPC server stopped with an error.
    #[error("device plugin server for {resource}: {reason}")]
    DevicePluginServe {
        /// The resource name.
        resource: &'static str,
        /// The cause.
        reason: String,
    },
    /// An agent setting is unusable.
    #[error("node agent configuration: {reason}")]
    AgentConfig {
        /// What is wrong.
        reason: String,
    },
}

/// The API server's answer in words: status code, reason and message for an API error (a 403
/// says which permission is missing), the error itself otherwise.
pub(crate) fn describe_kube(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => format!(
            "API server answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => other.to_string(),
    }
}
