//! A seeded generator of OpenTelemetry-demo-like traffic for benchmarks: about ten services with Kubernetes,
//! process and SDK resource attributes, HTTP/RPC/DB/messaging semantic-convention attributes
//! (<https://opentelemetry.io/docs/specs/semconv/>), log-normal latencies, fan-out and error propagation.
//!
//! The pseudo-random source is SplitMix64, written out here so a seed gives the same traces with every build
//! (benchmark reports stay comparable across dependency updates).

use std::sync::Arc;

use skein_model::{Event, KeyValue, Resource, Scope, Span, SpanId, SpanKind, StatusCode, TraceId, Value};

/// SplitMix64 (Steele, Lea, Flood 2014).
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Log-normal with median `median_nanos` and shape `sigma`, ns.
    pub fn lognormal(&mut self, median_nanos: f64, sigma: f64) -> u64 {
        let (u1, u2) = (self.f64().max(1e-12), self.f64());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        (median_nanos * (sigma * z).exp()).max(1_000.0) as u64
    }
}

struct Svc {
    name: &'static str,
    lang: &'static str,
    instances: Vec<Arc<Resource>>,
    scope: Arc<Scope>,
}

const SERVICES: [(&str, &str, &str); 11] = [
    ("frontend-proxy", "cpp", "envoy"),
    ("frontend", "nodejs", "@opentelemetry/instrumentation-http"),
    ("cart", "dotnet", "OpenTelemetry.Instrumentation.AspNetCore"),
    ("checkout", "go", "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"),
    ("product-catalog", "go", "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"),
    ("currency", "cpp", "opentelemetry-cpp"),
    ("payment", "nodejs", "@opentelemetry/instrumentation-grpc"),
    ("shipping", "rust", "tracing-opentelemetry"),
    ("recommendation", "python", "opentelemetry.instrumentation.grpc"),
    ("ad", "java", "io.opentelemetry.grpc-1.6"),
    ("email", "ruby", "OpenTelemetry::Instrumentation::Sinatra"),
];

fn kv(k: &str, v: impl Into<Value>) -> KeyValue {
    KeyValue::new(k, v.into())
}

/// The generator.
pub struct Generator {
    rng: Rng,
    services: Vec<Svc>,
    products: Vec<String>,
    now_nanos: u64,
    spacing_nanos: u64,
}

/// One call in a request's call tree.
struct Call {
    svc: usize,
    name: &'static str,
    kind: SpanKind,
    shape: Shape,
    median_ms: f64,
    children: Vec<Call>,
}

#[derive(Clone, Copy)]
enum Shape {
    HttpServer(&'static str, &'static str),
    HttpClient(&'static str, &'static str),
    RpcServer(&'static str, &'static str),
    RpcClient(&'static str, &'static str),
    Db(&'static str, &'static str),
    Produce(&'static str),
    Internal,
}

fn call(svc: usize, name: &'static str, kind: SpanKind, shape: Shape, median_ms: f64, children: Vec<Call>) -> Call {
    Call { svc, name, kind, shape, median_ms, children }
}

fn rpc(client: usize, server: usize, service: &'static str, method: &'static str, ms: f64, inner: Vec<Call>) -> Call {
    let name: &'static str = Box::leak(format!("oteldemo.{service}/{method}").into_boxed_str());
    call(
        client,
        name,
        SpanKind::CLIENT,
        Shape::RpcClient(service, method),
        ms * 1.1,
        vec![call(server, name, SpanKind::SERVER, Shape::RpcServer(service, method), ms, inner)],
    )
}

impl Generator {
    /// A generator whose traces start at `start_unix_nanos`, about `traces_per_sec` per second.
    pub fn new(seed: u64, start_unix_nanos: u64, traces_per_sec: u64) -> Self {
        let mut rng = Rng::new(seed);
        let services = SERVICES
            .iter()
            .map(|&(name, lang, lib)| {
                let pods = 2 + rng.below(2) as usize;
                let instances = (0..pods)
                    .map(|i| {
                        let pod =
                            format!("{name}-{:08x}-{:05x}", rng.next_u64() as u32, rng.next_u64() as u32 & 0xfffff);
                        Arc::new(Resource {
                            attributes: vec![
                                kv("service.name", Value::Str(name.into())),
                                kv("service.namespace", Value::Str("opentelemetry-demo".into())),
                                kv("service.version", Value::Str("2.0.2".into())),
                                kv(
                                    "service.instance.id",
                                    Value::Str(
                                        format!(
                                            "{:032x}",
                                            u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())
                                        )
                                        .into(),
                                    ),
                                ),
                                kv("k8s.namespace.name", Value::Str("otel-demo".into())),
                                kv("k8s.deployment.name", Value::Str(name.into())),
                                kv("k8s.pod.name", Value::Str(pod.clone().into())),
                                kv("k8s.node.name", Value::Str(format!("gke-demo-pool-{}", i % 3).into())),
                                kv("host.name", Value::Str(pod.into())),
                                kv(
                                    "container.id",
                                    Value::Str(format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64()).into()),
                                ),
                                kv("process.pid", Value::Int(1 + rng.below(30_000) as i64)),
                                kv("process.runtime.name", Value::Str(lang.into())),
                                kv("telemetry.sdk.name", Value::Str("opentelemetry".into())),
                                kv("telemetry.sdk.language", Value::Str(lang.into())),
                                kv("telemetry.sdk.version", Value::Str("1.38.0".into())),
                            ],
                            dropped_attributes_count: 0,
                            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                        })
                    })
                    .collect();
                let scope = Arc::new(Scope { name: lib.into(), version: "0.57.0".into(), ..Scope::default() });
                Svc { name, lang, instances, scope }
            })
            .collect();
        let products = (0..40).map(|_| format!("{:010X}", rng.next_u64() % 10_000_000_000)).collect();
        Self {
            rng,
            services,
            products,
            now_nanos: start_unix_nanos,
            spacing_nanos: 1_000_000_000 / traces_per_sec.max(1),
        }
    }

    fn request(&mut self) -> Call {
        use Shape::*;
        let (proxy, fe, cart, checkout, catalog, currency, payment, shipping, reco, ad, email) =
            (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
        let redis = |svc, op: &'static str| call(svc, op, SpanKind::CLIENT, Db("redis", op), 0.4, vec![]);
        let pick = self.rng.below(100);
        let (route, method, fe_children): (&'static str, &'static str, Vec<Call>) = if pick < 35 {
            (
                "/api/products/{productId}",
                "GET",
                vec![
                    rpc(fe, catalog, "ProductCatalogService", "GetProduct", 2.0, vec![]),
                    rpc(fe, currency, "CurrencyService", "Convert", 0.8, vec![]),
                ],
            )
        } else if pick < 55 {
            (
                "/api/recommendations",
                "GET",
                vec![rpc(
                    fe,
                    reco,
                    "RecommendationService",
                    "ListRecommendations",
                    6.0,
                    vec![rpc(reco, catalog, "ProductCatalogService", "ListProducts", 3.0, vec![])],
                )],
            )
        } else if pick < 70 {
            ("/api/data", "GET", vec![rpc(fe, ad, "AdService", "GetAds", 4.0, vec![])])
        } else if pick < 88 {
            (
                "/api/cart",
                "GET",
                vec![rpc(fe, cart, "CartService", "GetCart", 3.0, vec![redis(cart, "HGET"), redis(cart, "EXPIRE")])],
            )
        } else {
            (
                "/api/checkout",
                "POST",
                vec![rpc(
                    fe,
                    checkout,
                    "CheckoutService",
                    "PlaceOrder",
                    40.0,
                    vec![
                        rpc(checkout, cart, "CartService", "GetCart", 3.0, vec![redis(cart, "HGET")]),
                        rpc(checkout, catalog, "ProductCatalogService", "GetProduct", 2.0, vec![]),
                        rpc(checkout, catalog, "ProductCatalogService", "GetProduct", 2.0, vec![]),
                        rpc(checkout, currency, "CurrencyService", "Convert", 0.8, vec![]),
                        rpc(
                            checkout,
                            shipping,
                            "ShippingService",
                            "GetQuote",
                            5.0,
                            vec![call(
                                shipping,
                                "POST /getquote",
                                SpanKind::CLIENT,
                                HttpClient("POST", "/getquote"),
                                3.0,
                                vec![],
                            )],
                        ),
                        rpc(
                            checkout,
                            payment,
                            "PaymentService",
                            "Charge",
                            12.0,
                            vec![call(payment, "charge", SpanKind::INTERNAL, Internal, 8.0, vec![])],
                        ),
                        rpc(checkout, shipping, "ShippingService", "ShipOrder", 4.0, vec![]),
                        rpc(checkout, cart, "CartService", "EmptyCart", 2.0, vec![redis(cart, "DEL")]),
                        call(checkout, "orders publish", SpanKind::PRODUCER, Produce("orders"), 1.5, vec![]),
                        call(
                            checkout,
                            "POST /send_order_confirmation",
                            SpanKind::CLIENT,
                            HttpClient("POST", "/send_order_confirmation"),
                            9.0,
                            vec![call(
                                email,
                                "POST /send_order_confirmation",
                                SpanKind::SERVER,
                                HttpServer("POST", "/send_order_confirmation"),
                                8.0,
                                vec![],
                            )],
                        ),
                    ],
                )],
            )
        };
        let name: &'static str = Box::leak(format!("{method} {route}").into_boxed_str());
        call(
            proxy,
            "ingress",
            SpanKind::SERVER,
            HttpServer(method, route),
            30.0,
            vec![call(
                proxy,
                "router frontend egress",
                SpanKind::CLIENT,
                HttpClient(method, route),
                28.0,
                vec![call(fe, name, SpanKind::SERVER, HttpServer(method, route), 25.0, fe_children)],
            )],
        )
    }

    /// The next trace, its spans in start order.
    pub fn next_trace(&mut self) -> Vec<Span> {
        let tree = self.request();
        let trace_id =
            TraceId(((u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64())).to_be_bytes());
        self.now_nanos += self.rng.below(2 * self.spacing_nanos);
        let start = self.now_nanos;
        let mut spans = Vec::with_capacity(24);
        self.emit(&tree, trace_id, None, start, &mut spans);
        spans.sort_by_key(|s| s.start_unix_nanos);
        spans
    }

    /// Emits a call and its subtree; returns (end, error).
    fn emit(
        &mut self,
        c: &Call,
        trace_id: TraceId,
        parent: Option<SpanId>,
        start: u64,
        out: &mut Vec<Span>,
    ) -> (u64, bool) {
        let span_id = SpanId(self.rng.next_u64().max(1).to_be_bytes());
        let svc = &self.services[c.svc];
        let resource = svc.instances[self.rng.below(svc.instances.len() as u64) as usize].clone();
        let scope = svc.scope.clone();
        let lang = svc.lang;
        let svc_name = svc.name;
        let idx = out.len();
        out.push(Span::minimal(trace_id, span_id, c.name, resource));
        let own = self.rng.lognormal(c.median_ms * 1e6 / (1.0 + c.children.len() as f64), 0.6);
        let mut t = start + self.rng.below(200_000);
        let mut child_error = false;
        let mut end = t;
        for child in &c.children {
            let (e, err) = self.emit(child, trace_id, Some(span_id), t, out);
            child_error |= err;
            end = end.max(e);
            // Checkout calls in sequence; the others fan out in parallel.
            if c.children.len() > 3 {
                t = e + self.rng.below(100_000);
            }
        }
        let leaf_error = c.children.is_empty() && self.rng.below(1000) < 15;
        let error = leaf_error || (child_error && self.rng.below(10) < 8);
        let end = end.max(start + own) + self.rng.below(50_000);
        let product = self.products[self.rng.below(self.products.len() as u64) as usize].clone();
        let s = &mut out[idx];
        s.parent_span_id = parent.map(|p| p.0.to_vec()).unwrap_or_default();
        s.kind = c.kind;
        s.start_unix_nanos = start;
        s.end_unix_nanos = end;
        s.scope = scope;
        s.flags = 0x101;
        let a = &mut s.attributes;
        match c.shape {
            Shape::HttpServer(method, route) | Shape::HttpClient(method, route) => {
                let path = route.replace("{productId}", &product);
                a.push(kv("http.request.method", Value::Str(method.into())));
                a.push(kv("url.path", Value::Str(path.into())));
                if matches!(c.shape, Shape::HttpServer(..)) {
                    a.push(kv("http.route", Value::Str(route.into())));
                    a.push(kv("url.scheme", Value::Str("http".into())));
                    a.push(kv("user_agent.original", Value::Str("python-requests/2.31.0".into())));
                    a.push(kv(
                        "client.address",
                        Value::Str(format!("10.4.{}.{}", self.rng.below(4), self.rng.below(250)).into()),
                    ));
                } else {
                    a.push(kv("server.address", Value::Str(svc_name.into())));
                    a.push(kv("server.port", Value::Int(8080)));
                }
                a.push(kv("network.protocol.version", Value::Str("1.1".into())));
                a.push(kv("http.response.status_code", Value::Int(if error { 500 } else { 200 })));
            }
            Shape::RpcServer(service, method) | Shape::RpcClient(service, method) => {
                a.push(kv("rpc.system", Value::Str("grpc".into())));
                a.push(kv("rpc.service", Value::Str(format!("oteldemo.{service}").into())));
                a.push(kv("rpc.method", Value::Str(method.into())));
                a.push(kv("rpc.grpc.status_code", Value::Int(if error { 13 } else { 0 })));
                if matches!(c.shape, Shape::RpcClient(..)) {
                    a.push(kv(
                        "server.address",
                        Value::Str(format!("{}.otel-demo.svc", service.to_lowercase()).into()),
                    ));
                    a.push(kv("server.port", Value::Int(8080)));
                } else if method == "GetProduct" {
                    a.push(kv("app.product.id", Value::Str(product.into())));
                }
            }
            Shape::Db(system, op) => {
                a.push(kv("db.system", Value::Str(system.into())));
                a.push(kv("db.operation.name", Value::Str(op.into())));
                a.push(kv("db.query.text", Value::Str(format!("{op} cart:{:08x}", self.rng.next_u64() as u32).into())));
                a.push(kv("server.address", Value::Str("valkey-cart".into())));
                a.push(kv("server.port", Value::Int(6379)));
            }
            Shape::Produce(topic) => {
                a.push(kv("messaging.system", Value::Str("kafka".into())));
                a.push(kv("messaging.destination.name", Value::Str(topic.into())));
                a.push(kv("messaging.operation.type", Value::Str("publish".into())));
            }
            Shape::Internal => {
                a.push(kv(
                    "app.payment.card_type",
                    Value::Str(if self.rng.below(2) == 0 { "visa" } else { "mastercard" }.into()),
                ));
                a.push(kv("app.payment.charged", Value::Bool(!error)));
            }
        }
        if error {
            s.status_code = StatusCode::ERROR;
            if leaf_error {
                s.status_message = "context deadline exceeded".into();
                s.events.push(Event {
                    time_unix_nanos: end.saturating_sub(1_000),
                    name: "exception".into(),
                    attributes: vec![
                        kv("exception.type", Value::Str(format!("{lang}.TimeoutError").into())),
                        kv("exception.message", Value::Str("context deadline exceeded".into())),
                    ],
                    dropped_attributes_count: 0,
                });
            }
        }
        (end, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_are_deterministic_connected_and_realistic() {
        let a: Vec<Vec<Span>> = {
            let mut g = Generator::new(7, 1_700_000_000_000_000_000, 100);
            (0..200).map(|_| g.next_trace()).collect()
        };
        let b: Vec<Vec<Span>> = {
            let mut g = Generator::new(7, 1_700_000_000_000_000_000, 100);
            (0..200).map(|_| g.next_trace()).collect()
        };
        assert_eq!(a, b, "same seed, same traces");
        let spans: usize = a.iter().map(Vec::len).sum();
        assert!(spans > 200 * 5, "fan-out: {spans} spans");
        let services: std::collections::HashSet<&str> = a.iter().flatten().map(|s| s.service_name()).collect();
        assert!(services.len() >= 10, "{services:?}");
        assert!(a.iter().flatten().any(|s| s.status_code == StatusCode::ERROR), "some errors");
        for t in &a {
            let ids: std::collections::HashSet<[u8; 8]> = t.iter().map(|s| s.span_id.0).collect();
            assert_eq!(t.iter().filter(|s| s.parent_span_id.is_empty()).count(), 1, "one root");
            assert!(t.iter().all(|s| s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_slice())));
            assert!(t.iter().all(|s| s.end_unix_nanos >= s.start_unix_nanos));
        }
    }
}
