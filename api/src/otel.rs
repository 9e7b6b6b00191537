//! Optional OpenTelemetry export (cargo feature `otel`): the `tracing` spans — `request`,
//! `command`, `project` — go to an OTLP/HTTP collector when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. Without the feature, or without the
//! variable, nothing is exported and nothing extra runs.

use tracing_subscriber::registry::LookupSpan;
#[cfg(feature = "otel")]
use tracing_subscriber::Layer;

/// Keeps the exporter alive; dropping it flushes the spans still buffered.
pub struct Guard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("escrow: flushing OpenTelemetry spans failed: {e}");
            }
        }
    }
}

/// Whether the environment asks for export.
pub fn requested() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()))
}

/// The export layer, if the feature is built in and the environment asks for it.
#[cfg(feature = "otel")]
pub fn layer<S>() -> (Option<impl Layer<S>>, Guard)
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    use opentelemetry::trace::TracerProvider as _;
    if !requested() {
        return (None, Guard { provider: None });
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("escrow: OpenTelemetry export disabled: {e}");
            return (None, Guard { provider: None });
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("escrow-ledger")
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("escrow");
    (
        Some(tracing_opentelemetry::layer().with_tracer(tracer)),
        Guard {
            provider: Some(provider),
        },
    )
}

/// Built without the `otel` feature: says so if export was asked for.
#[cfg(not(feature = "otel"))]
pub fn layer<S>() -> (Option<tracing_subscriber::layer::Identity>, Guard)
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    if requested() {
        eprintln!(
            "escrow: OTEL_EXPORTER_OTLP_ENDPOINT is set but this binary was built without \
             the `otel` feature (cargo build --release --features api/otel); not exporting"
        );
    }
    (None, Guard {})
}
