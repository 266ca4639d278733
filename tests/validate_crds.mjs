// Validates ServiceMonitor, PodMonitor and PrometheusRule objects (a JSON array on stdin)
// against the Prometheus operator's own CRD schemas (@kubernetes-models/prometheus-operator).
// Run from target/tools/node, where `cargo xtask setup` installs the schemas.
import { readFileSync } from "node:fs";
import { PodMonitor, PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = { PodMonitor, PrometheusRule, ServiceMonitor };
for (const doc of JSON.parse(readFileSync(0, "utf8"))) {
  const Kind = kinds[doc.kind];
  if (!Kind) continue;
  try {
    new Kind(doc).validate();
    console.log(`valid ${doc.kind}/${doc.metadata.name}`);
  } catch (e) {
    console.log(`invalid ${doc.kind}/${doc.metadata.name}: ${e.message}`);
    process.exitCode = 1;
  }
}
