//! Config text for tests: one source, outputs, one pipeline, all pointed at a local endpoint.

/// A config with source `input` (stream `input`), one output per `(name, stream)`, and a
/// pipeline `p` over all outputs; `extra` is appended to the pipeline (plugin lines).
pub fn simple(endpoint: &str, outputs: &[(&str, &str)], pipeline_extra: &str) -> String {
    split_endpoints(endpoint, endpoint, outputs, pipeline_extra)
}

/// Like `simple`, but the outputs write through `output_endpoint` (e.g. a fault-injecting proxy).
pub fn split_endpoints(
    source_endpoint: &str,
    output_endpoint: &str,
    outputs: &[(&str, &str)],
    pipeline_extra: &str,
) -> String {
    let mut text = format!(
        "[sources.input]\nstream = \"input\"\nendpoint_url = \"{source_endpoint}\"\npoll_interval_ms = 200\nshard_discovery_interval_s = 1\n\n"
    );
    for (name, stream) in outputs {
        text.push_str(&format!(
            "[outputs.{name}]\nstream = \"{stream}\"\nendpoint_url = \"{output_endpoint}\"\n\n"
        ));
    }
    let names: Vec<String> = outputs.iter().map(|(n, _)| format!("{n:?}")).collect();
    text.push_str(&format!(
        "[checkpoint]\npath = \"state\"\ninterval_ms = 200\n\n[[pipelines]]\nname = \"p\"\nsource = \"input\"\noutputs = [{}]\n{pipeline_extra}\n",
        names.join(", ")
    ));
    text
}

/// Like `simple`, with outputs `a`, `b`, `rest` (streams `tenant-a`,
/// `tenant-b`, `others`) and a route-by-field plugin at `plugin` routing the
/// JSON field `tenant`: `a` and `b` to their outputs, anything else to `rest`.
pub fn route_by_tenant(endpoint: &str, plugin: &std::path::Path) -> String {
    let extra = format!(
        "plugin = {:?}\nplugin_config = {{ field = \"tenant\", routes = {{ a = \"a\", b = \"b\" }}, default = \"rest\" }}\n",
        plugin.display().to_string()
    );
    simple(
        endpoint,
        &[("a", "tenant-a"), ("b", "tenant-b"), ("rest", "others")],
        &extra,
    )
}
