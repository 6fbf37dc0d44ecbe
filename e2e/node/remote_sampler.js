// Points @opentelemetry/sampler-jaeger-remote at a Skein collector and reports the sampling decisions it makes
// once it has fetched the strategy. Usage: node remote_sampler.js <endpoint> <service>
// Prints {"sampler": "...", "sampled": {"checkout": n, "/health": n}} for 1000 random trace IDs per operation.
'use strict';
const { JaegerRemoteSampler } = require('@opentelemetry/sampler-jaeger-remote');
const { AlwaysOffSampler } = require('@opentelemetry/sdk-trace');
const { ROOT_CONTEXT, SpanKind } = require('@opentelemetry/api');
const crypto = require('node:crypto');

const [endpoint, service] = process.argv.slice(2);
const sampler = new JaegerRemoteSampler({
  endpoint,
  serviceName: service,
  poolingInterval: 100,
  initialSampler: new AlwaysOffSampler(),
});

setTimeout(() => {
  const sampled = {};
  for (const op of ['checkout', '/health']) {
    let n = 0;
    for (let i = 0; i < 1000; i++) {
      const traceId = crypto.randomBytes(16).toString('hex');
      const r = sampler.shouldSample(ROOT_CONTEXT, traceId, op, SpanKind.SERVER, {}, []);
      if (r.decision === 2) n++; // SamplingDecision.RECORD_AND_SAMPLED
    }
    sampled[op] = n;
  }
  console.log(JSON.stringify({ sampler: sampler.toString(), sampled }));
  process.exit(0);
}, 1500);
