"""Emits one known three-service trace with the real OpenTelemetry Python SDK over OTLP/gRPC.

Usage: emit_trace.py HOST:PORT
Prints the trace ID (32 hex chars) on stdout.

frontend  "GET /checkout"        SERVER  http.request.method=GET, http.response.status_code=200, event "request received"
frontend  "POST /api/checkout"   CLIENT
checkout  "PlaceOrder"           SERVER  order.items=3
payments  "Charge"               SERVER  ERROR "card declined", payment.amount=42.5, payment.retry=true,
                                         event "exception" (exception.type=CardDeclined); lasts >= 50 ms
"""

import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def provider(service: str, endpoint: str) -> TracerProvider:
    p = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "e2e"}))
    p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    return p


def main() -> None:
    endpoint = sys.argv[1]
    providers = {name: provider(name, endpoint) for name in ("frontend", "checkout", "payments")}
    frontend = providers["frontend"].get_tracer("e2e.frontend", "1.0.0")
    checkout = providers["checkout"].get_tracer("e2e.checkout", "1.0.0")
    payments = providers["payments"].get_tracer("e2e.payments", "1.0.0")

    with frontend.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.request.method", "GET")
        root.set_attribute("http.response.status_code", 200)
        root.add_event("request received", {"user.id": "u-42"})
        with frontend.start_as_current_span("POST /api/checkout", kind=SpanKind.CLIENT):
            with checkout.start_as_current_span("PlaceOrder", kind=SpanKind.SERVER) as order:
                order.set_attribute("order.items", 3)
                with payments.start_as_current_span("Charge", kind=SpanKind.SERVER) as charge:
                    charge.set_attribute("payment.amount", 42.5)
                    charge.set_attribute("payment.retry", True)
                    charge.add_event("exception", {"exception.type": "CardDeclined"})
                    time.sleep(0.06)
                    charge.set_status(Status(StatusCode.ERROR, "card declined"))
        trace_id = root.get_span_context().trace_id

    for p in providers.values():
        p.force_flush()
        p.shutdown()
    print(format(trace_id, "032x"))


if __name__ == "__main__":
    main()
