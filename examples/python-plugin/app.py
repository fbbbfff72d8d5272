"""route_by_field, in Python: sends each JSON record to the output its field names.

plugin_config = { field = "tenant", routes = { a = "out-a" }, default = "rest" }
works as for the Rust route_by_field plugin: a record whose top-level field
value (strings as they are, numbers and booleans as JSON text) is in `routes`
goes there; anything else, or a record that is not a JSON object, goes to
`default`, or is dropped without one.

Built into a WebAssembly component by scripts/build-python-plugin with
componentize-py, against the same contract (wit/plugin.wit) as Rust plugins.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import types
from wit_world.imports.log import Level, log


def as_route_key(value):
    """A JSON scalar as route-table text, or None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return value if isinstance(value, str) else json.dumps(value)
    return None


class Table:
    """The routing table, built by `init` (componentize-py makes a fresh
    WitWorld object for each call, so state lives at module level)."""

    field = None
    routes = {}
    default = None


TABLE = Table()


class WitWorld(wit_world.WitWorld):
    def init(self, config: str, outputs: list[str]) -> None:
        try:
            settings = json.loads(config)
        except ValueError as e:
            raise Err(f"plugin_config: {e}")
        if not isinstance(settings, dict) or not isinstance(settings.get("field"), str):
            raise Err("plugin_config.field: missing (the JSON field to route by)")

        def index(name, key):
            if name not in outputs:
                raise Err(f"plugin_config.{key}: output {name!r} is not one of the pipeline's outputs {outputs}")
            return outputs.index(name)

        TABLE.field = settings["field"]
        TABLE.routes = {
            value: index(output, f"routes.{value}")
            for value, output in (settings.get("routes") or {}).items()
        }
        default = settings.get("default")
        TABLE.default = index(default, "default") if default is not None else None
        log(Level.INFO, f"python route_by_field ready: field {TABLE.field!r}, {len(TABLE.routes)} routes")

    def route(self, batch: types.Batch) -> types.Decisions:
        records, outputs = [], []
        start = 0
        for i, end in enumerate(batch.data_ends):
            data = batch.data[start:end]
            start = end
            output = TABLE.default
            try:
                document = json.loads(data)
            except ValueError:
                document = None
            if isinstance(document, dict) and TABLE.field in document:
                key = as_route_key(document[TABLE.field])
                if key is not None and key in TABLE.routes:
                    output = TABLE.routes[key]
            if output is not None:
                records.append(i)
                outputs.append(output)
        return types.Decisions(records=records, outputs=outputs, rewrites=[])
