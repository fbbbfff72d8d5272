// route_by_field, in JavaScript: sends each JSON record to the output its
// field names. plugin_config = { field = "tenant", routes = { a = "out-a" },
// default = "rest" } works as for the Rust route_by_field plugin: a record
// whose top-level field value (strings as they are, numbers and booleans as
// JSON text) is in `routes` goes there; anything else, or a record that is
// not a JSON object, goes to `default`, or is dropped without one.
//
// Built into a WebAssembly component by scripts/build-js-plugin
// (componentize-js), against the same contract (wit/plugin.wit) as Rust and
// Python plugins.

import { definePlugin, log } from "../../plugins/js/sdk.js";

function routeKey(value) {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return JSON.stringify(value);
  return undefined;
}

export const { init, route } = definePlugin({
  init(config, outputs) {
    if (typeof config?.field !== "string") {
      throw "plugin_config.field: missing (the JSON field to route by)";
    }
    const routes = new Map();
    for (const [value, output] of Object.entries(config.routes ?? {})) {
      routes.set(value, outputs.index(output, `routes.${value}`));
    }
    const fallback = config.default === undefined ? undefined : outputs.index(config.default, "default");
    log.info(`js route_by_field ready: field ${JSON.stringify(config.field)}, ${routes.size} routes`);
    return { field: config.field, routes, fallback };
  },
  route({ field, routes, fallback }, batch, decisions) {
    for (const record of batch.records()) {
      const document = record.json();
      let output = fallback;
      if (document !== null && typeof document === "object" && !Array.isArray(document) && field in document) {
        const key = routeKey(document[field]);
        if (key !== undefined && routes.has(key)) output = routes.get(key);
      }
      if (output !== undefined) decisions.send(record.index, output);
    }
  },
});
