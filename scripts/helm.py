#!/usr/bin/env python3
"""Real Helm (the Go SDK, through helm-sdkpy) for Skein's tests: lint, install and uninstall the chart.

    helm.py lint <chart-dir>
        Prints one line per lint message ("<SEVERITY> <path>") and exits 1 when any is an error.
    helm.py install <release> <chart-dir> <namespace> [<values.json>]
        Installs without waiting (the review cluster has no kubelet, so pods stay Pending), creating the namespace.
    helm.py uninstall <release> <namespace>
        Uninstalls without waiting (the caller checks that the objects are gone).

Install helm-sdkpy with `pip install --ignore-requires-python helm-sdkpy` (its Go library is in the wheel).
"""

import asyncio
import json
import sys

import helm_sdkpy

# helm.sh/helm/v4/pkg/chart/v2/lint/support: UnknownSev, InfoSev, WarningSev, ErrorSev.
SEVERITIES = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def lint(chart: str) -> int:
    config = helm_sdkpy.Configuration(namespace="default")
    result = asyncio.run(helm_sdkpy.Lint(config).run(chart))
    errors = 0
    for message in result.get("Messages") or []:
        severity = message.get("Severity", 0)
        errors += severity >= 3
        print(f"{SEVERITIES.get(severity, severity)} {message.get('Path', '?')}")
    # helm-sdkpy serialises Go errors as {}: the message text is lost, the count is not.
    errors = max(errors, len(result.get("Errors") or []))
    print(f"{result.get('TotalChartsLinted', 0)} chart(s) linted, {errors} error(s)")
    return 1 if errors else 0


def install(release: str, chart: str, namespace: str, values_file: str | None) -> int:
    values = None
    if values_file:
        with open(values_file, encoding="utf-8") as f:
            values = json.load(f)
    config = helm_sdkpy.Configuration(namespace=namespace)
    result = asyncio.run(
        helm_sdkpy.Install(config).run(
            release, chart, values=values, create_namespace=True, wait=False, timeout=120
        )
    )
    print(json.dumps({"name": result.get("name"), "version": result.get("version")}))
    return 0


def uninstall(release: str, namespace: str) -> int:
    config = helm_sdkpy.Configuration(namespace=namespace)
    asyncio.run(helm_sdkpy.Uninstall(config).run(release, wait=False, timeout=120))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[1] == "lint" and len(argv) == 3:
        return lint(argv[2])
    if len(argv) in (5, 6) and argv[1] == "install":
        return install(argv[2], argv[3], argv[4], argv[5] if len(argv) == 6 else None)
    if len(argv) == 4 and argv[1] == "uninstall":
        return uninstall(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
