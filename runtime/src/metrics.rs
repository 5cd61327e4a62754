//! Metrics both binaries export alike: which build runs, and the process's own CPU, memory
//! and descriptors.

/// Registers `revmesh_build_info{version,commit}` (value 1) and the `process_*` collector.
pub fn register_process(
    registry: &prometheus::Registry,
    version: &str,
    commit: &str,
) -> prometheus::Result<()> {
    let build = prometheus::IntGaugeVec::new(
        prometheus::Opts::new("revmesh_build_info", "The running build (value 1)"),
        &["version", "commit"],
    )?;
    build.with_label_values(&[version, commit]).set(1);
    registry.register(Box::new(build))?;
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
}
