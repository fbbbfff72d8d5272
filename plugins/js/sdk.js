// distributary's JavaScript plugin SDK: the columnar batch of the contract
// (wit/plugin.wit) as record objects, decisions built by calls, and typed
// config. Bundled into each plugin by componentize-js (see
// examples/js-plugin and scripts/build-js-plugin).
//
//   import { definePlugin } from "./sdk.js";
//   export const { init, route } = definePlugin({
//     init(config, outputs) { ... return state; },   // throw to refuse
//     route(state, batch, decide) { for (const r of batch.records()) decide.send(r.index, 0); },
//   });

import { log as hostLog } from "distributary:plugin/log@0.1.0";

const decoder = new TextDecoder();

/** Host logging, tagged with the pipeline and rate-limited by the host. */
export const log = {
  trace: (m) => hostLog("trace", String(m)),
  debug: (m) => hostLog("debug", String(m)),
  info: (m) => hostLog("info", String(m)),
  warn: (m) => hostLog("warn", String(m)),
  error: (m) => hostLog("error", String(m)),
};

/** Span `i` of a packed column: [start, end). */
function span(ends, i) {
  return [i === 0 ? 0 : ends[i - 1], ends[i]];
}

/** One record of a batch; fields are decoded only when read. */
export class Record {
  constructor(batch, index) {
    this.batch = batch;
    this.index = index;
  }
  /** The data, as bytes (a view into the batch: no copy). */
  get data() {
    const [s, e] = span(this.batch.raw.dataEnds, this.index);
    return this.batch.raw.data.subarray(s, e);
  }
  /** The data decoded as UTF-8 text. */
  get text() {
    return decoder.decode(this.data);
  }
  /** The data parsed as JSON, or undefined when it is not JSON. */
  json() {
    try {
      return JSON.parse(this.text);
    } catch {
      return undefined;
    }
  }
  get partitionKey() {
    const [s, e] = span(this.batch.raw.partitionKeyEnds, this.index);
    return this.batch.raw.partitionKeys.slice(s, e);
  }
  get explicitHashKey() {
    const [s, e] = span(this.batch.raw.explicitHashKeyEnds, this.index);
    return s === e ? undefined : this.batch.raw.explicitHashKeys.slice(s, e);
  }
  get sequenceNumber() {
    const [s, e] = span(this.batch.raw.sequenceNumberEnds, this.index);
    return this.batch.raw.sequenceNumbers.slice(s, e);
  }
  get arrivalTime() {
    return Number(this.batch.raw.arrivalTimes[this.index]);
  }
}

/** A batch of one source shard, in source order. */
export class Batch {
  constructor(raw) {
    this.raw = raw;
    this.source = raw.source;
    this.shardId = raw.shardId;
    this.length = raw.dataEnds.length;
  }
  *records() {
    for (let i = 0; i < this.length; i++) yield new Record(this, i);
  }
}

/** The answer for one batch: deliveries, optionally with rewritten fields. */
export class Decisions {
  constructor() {
    this.records = [];
    this.outputs = [];
    this.rewrites = [];
  }
  /** Sends record `index` to output number `output` (its place in `outputs`). */
  send(index, output) {
    this.records.push(index);
    this.outputs.push(output);
    return this.records.length - 1;
  }
  /** Sends it with new data (bytes or text), partition key or explicit hash key. */
  sendChanged(index, output, { data, partitionKey, explicitHashKey } = {}) {
    const delivery = this.send(index, output);
    this.rewrites.push({
      delivery,
      data: data === undefined ? undefined : typeof data === "string" ? new TextEncoder().encode(data) : data,
      partitionKey,
      explicitHashKey,
    });
    return delivery;
  }
}

/** The pipeline's output names, with lookups that explain a wrong name. */
export class Outputs {
  constructor(names) {
    this.names = names;
  }
  /** The number of output `name`; throws naming `key` when it is not one. */
  index(name, key) {
    const i = this.names.indexOf(name);
    if (i < 0) {
      throw `plugin_config.${key}: output ${JSON.stringify(name)} is not one of the pipeline's outputs [${this.names.join(", ")}]`;
    }
    return i;
  }
}

/**
 * Wraps a plugin definition into the contract's `init` and `route` exports.
 * `init(config, outputs)` gets `plugin_config` parsed and an `Outputs`; what
 * it returns is the state handed to every `route(state, batch, decisions)`.
 * Throwing a string (or an Error) from either is the contract's error.
 */
export function definePlugin({ init, route }) {
  let state;
  return {
    init(configText, names) {
      let config;
      try {
        config = JSON.parse(configText);
      } catch (e) {
        throw `plugin_config: not JSON: ${e}`;
      }
      try {
        state = init(config, new Outputs(names));
      } catch (e) {
        throw typeof e === "string" ? e : String(e?.message ?? e);
      }
    },
    route(raw) {
      const decisions = new Decisions();
      try {
        route(state, new Batch(raw), decisions);
      } catch (e) {
        throw typeof e === "string" ? e : String(e?.message ?? e);
      }
      return decisions;
    },
  };
}
