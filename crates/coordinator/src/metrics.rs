//! Prometheus metrics with bounded label sets: workload names come from the manifest (anything
//! else is `_unknown`) and reasons are error kinds, never instance UUIDs or free text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the activation counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActivationLabels {
    /// Workload name from the manifest, or `_unknown`.
    pub workload: String,
    /// `accepted`, or the refusal's error kind (snake case).
    pub result: String,
}

/// The Coordinator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Activations by workload and result.
    pub activations: Family<ActivationLabels, Counter>,
    /// Activation latency, seconds.
    pub latency: Histogram,
    /// 1 when running on the simulated platform.
    pub simulation: Gauge,
    /// Times the stored state was found tampered with.
    pub tamper_detected: Counter,
    /// 1 while the Coordinator refuses to serve a tampered state.
    pub tampered: Gauge,
    /// Activations refused at once because their address caused too many refusals without
    /// verified evidence.
    pub rate_limited: Counter,
}

impl Metrics {
    /// Registers all metrics.
    pub fn new(simulation: bool) -> Self {
        let mut registry = Registry::with_prefix("coffer_coordinator");
        let activations = Family::<ActivationLabels, Counter>::default();
        registry.register(
            "activations",
            "Activations by workload and result (accepted or refusal kind)",
            activations.clone(),
        );
        let latency = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        registry.register(
            "activation_duration_seconds",
            "Time to decide an activation",
            latency.clone(),
        );
        let sim = Gauge::default();
        sim.set(i64::from(simulation));
        registry.register(
            "simulation",
            "1 if the Coordinator runs on the simulated platform (no protection)",
            sim.clone(),
        );
        let tamper_detected = Counter::default();
        registry.register(
            "tamper_detected",
            "Times the stored state did not match its authenticated head",
            tamper_detected.clone(),
        );
        let tampered = Gauge::default();
        registry.register(
            "tampered",
            "1 while the Coordinator serves nothing because its state was tampered with",
            tampered.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "activations_rate_limited",
            "Activations refused unheard: their address caused too many refusals without verified evidence",
            rate_limited.clone(),
        );
        Self {
            registry,
            activations,
            latency,
            simulation: sim,
            tamper_detected,
            tampered,
            rate_limited,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}
