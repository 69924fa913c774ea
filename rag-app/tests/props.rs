//! Properties: random valid apps round-trip through JSON with the same digest (whatever the key
//! order and whitespace); random input never panics the loader or the validator.

use proptest::prelude::*;
use rag_app::{validate, validate_json, AppDoc, Plan};
use serde_json::{json, Map, Value};

const TEXT_MODELS: &[&str] = &[
    "anthropic.claude-3-haiku-20240307-v1:0",
    "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "us.meta.llama3-3-70b-instruct-v1:0",
];
const VISION: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// Words for prompts and titles, none of them secret-shaped.
fn words() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "sum up",
            "the",
            "list",
            "ünïcode",
            "docs",
            "\n",
            "why",
            "{{ not a ref }}",
            "🙂",
        ]),
        0..6,
    )
    .prop_map(|w| w.join(" "))
}

fn unit() -> impl Strategy<Value = Option<f64>> {
    prop::option::of((0u32..=100).prop_map(|n| f64::from(n) / 100.0))
}

/// A node referring only to earlier nodes (so the app has no cycle), as JSON.
fn node(i: usize, earlier: Vec<(String, &'static str)>) -> BoxedStrategy<Value> {
    let texts: Vec<String> = earlier
        .iter()
        .filter(|(_, kind)| *kind != "image")
        .map(|(id, _)| id.clone())
        .collect();
    let images: Vec<String> = earlier
        .iter()
        .filter(|(_, kind)| *kind == "image")
        .map(|(id, _)| id.clone())
        .collect();
    let rags: Vec<String> = earlier
        .iter()
        .filter(|(_, kind)| *kind == "rag")
        .map(|(id, _)| id.clone())
        .collect();
    let text_ref = {
        let texts = texts.clone();
        let rags = rags.clone();
        (any::<prop::sample::Index>(), any::<bool>()).prop_map(move |(pick, cite)| {
            if cite && !rags.is_empty() {
                format!("{{{{@{}.citations}}}}", pick.get(&rags))
            } else if texts.is_empty() {
                String::new()
            } else {
                format!("{{{{@{}}}}}", pick.get(&texts))
            }
        })
    };
    let prompt = (words(), text_ref, words())
        .prop_map(|(a, r, b)| format!("{a} {r} {b}x"))
        .boxed();
    let sampling = (
        unit(),
        1u32..=2000,
        prop::collection::vec("[a-z]{1,5}", 0..3),
    )
        .prop_map(|(temperature, max_tokens, stop)| {
            let mut p = Map::new();
            if let Some(t) = temperature {
                p.insert("temperature".into(), json!(t));
            }
            p.insert("max_tokens".into(), json!(max_tokens));
            if !stop.is_empty() {
                p.insert("stop".into(), json!(stop));
            }
            Value::Object(p)
        })
        .boxed();
    let _ = i;
    let input =
        (prop::option::of(words()), prop::option::of(words())).prop_map(|(title, default)| {
            let mut n = json!({"kind": "input"});
            if let Some(t) = title {
                n["title"] = json!(t);
            }
            if let Some(d) = default {
                n["default"] = json!(d);
            }
            n
        });
    let text = words().prop_map(|t| json!({"kind": "text", "text": t}));
    let generate = (
        prop::sample::select(TEXT_MODELS.to_vec()),
        prompt.clone(),
        prop::option::of(words()),
        sampling.clone(),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(model, prompt, system, params, pick)| {
            let (model, prompt) = if images.is_empty() {
                (model, prompt)
            } else {
                (VISION, format!("{{{{@{}}}}}{prompt}", pick.get(&images)))
            };
            let mut n =
                json!({"kind": "generate", "model": model, "prompt": prompt, "params": params});
            if let Some(s) = system {
                n["system"] = json!(s);
            }
            n
        });
    let rag = (prompt.clone(), 1usize..=10, sampling.clone()).prop_map(|(query, k, params)| {
        json!({"kind": "rag", "retriever": "docs", "query": query, "top_k": k,
            "model": TEXT_MODELS[0], "params": params})
    });
    let chat = (prompt.clone(), words(), prompt.clone()).prop_map(|(first, reply, last)| {
        json!({"kind": "chat", "model": TEXT_MODELS[1], "messages": [
            {"role": "user", "content": first},
            {"role": "assistant", "content": format!("{reply}ok")},
            {"role": "user", "content": last}
        ]})
    });
    let image = (prompt, prop::sample::select(vec![(1024u32, 1024u32), (512, 768), (320, 1280)]), prop::option::of(0u32..1000))
        .prop_map(|(prompt, (w, h), seed)| {
            let mut n = json!({"kind": "image", "model": "amazon.nova-canvas-v1:0", "prompt": prompt, "width": w, "height": h});
            if let Some(s) = seed {
                n["seed"] = json!(s);
            }
            n
        });
    prop_oneof![input, text, generate, rag, chat, image].boxed()
}

fn kind_of(node: &Value) -> &'static str {
    match node["kind"].as_str() {
        Some("image") => "image",
        Some("rag") => "rag",
        _ => "text",
    }
}

/// A random valid app, as JSON.
fn app() -> impl Strategy<Value = Value> {
    (1usize..8)
        .prop_flat_map(|count| {
            // Nodes are drawn one after another so each may reference the ones before it.
            fn more(
                done: Vec<(String, Value)>,
                left: usize,
            ) -> BoxedStrategy<Vec<(String, Value)>> {
                if left == 0 {
                    return Just(done).boxed();
                }
                let earlier: Vec<(String, &'static str)> = done
                    .iter()
                    .map(|(id, n)| (id.clone(), kind_of(n)))
                    .collect();
                let i = done.len();
                node(i, earlier)
                    .prop_flat_map(move |n| {
                        let mut next = done.clone();
                        next.push((format!("n{i}"), n));
                        more(next, left - 1)
                    })
                    .boxed()
            }
            (
                more(Vec::new(), count),
                prop::collection::vec((-1e6f64..1e6, -1e6f64..1e6), count),
                any::<bool>(),
            )
        })
        .prop_map(|(nodes, positions, with_layout)| {
            let layout: Map<String, Value> = nodes
                .iter()
                .zip(positions)
                .map(|((id, _), (x, y))| (id.clone(), json!({"x": x, "y": y})))
                .collect();
            let mut app = json!({
                "format": "1.0", "id": "random", "name": "A random app",
                "nodes": nodes.into_iter().collect::<Map<String, Value>>(),
            });
            if with_layout {
                app["layout"] = Value::Object(layout);
            }
            app
        })
}

/// `value` written with every object's keys in reverse order, and indented.
fn reversed(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            out.push_str("{\n");
            let entries: Vec<_> = map.iter().rev().collect();
            for (i, (k, v)) in entries.iter().enumerate() {
                out.push_str(&format!("  {}: ", Value::String((*k).clone())));
                reversed(v, out);
                if i + 1 < entries.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(" , ");
                }
                reversed(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_apps_round_trip_with_the_same_digest(app in app()) {
        let text = app.to_string();
        let doc = AppDoc::from_json(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        prop_assert!(validate(&doc).is_empty());
        let digest = doc.digest();
        prop_assert!(digest.starts_with("sha256:") && digest.len() == 71);

        // Lossless: its own JSON reads back equal, with the same digest.
        let back = AppDoc::from_json(&doc.to_json_pretty()).unwrap();
        prop_assert_eq!(&back, &doc);
        prop_assert_eq!(back.digest(), digest.clone());

        // Key order, whitespace and layout do not change the digest.
        let mut shuffled = String::new();
        reversed(&app, &mut shuffled);
        let other = AppDoc::from_json(&shuffled).unwrap();
        prop_assert_eq!(&other, &doc);
        prop_assert_eq!(other.digest(), digest.clone());
        let mut without_layout = app.clone();
        without_layout.as_object_mut().unwrap().remove("layout");
        prop_assert_eq!(AppDoc::from_json(&without_layout.to_string()).unwrap().digest(), digest.clone());

        // A fork points at it.
        let fork = doc.fork();
        prop_assert_eq!(&fork.forked_from.as_ref().unwrap().digest, &digest);
        prop_assert!(Plan::new(fork).is_ok());
    }

    #[test]
    fn arbitrary_text_never_panics_the_loader(text in ".{0,400}") {
        let _ = validate_json(&text);
    }

    #[test]
    fn mangled_apps_never_panic_the_validator(app in app(), cuts in prop::collection::vec((any::<prop::sample::Index>(), 0u8..6), 1..6)) {
        // Replace random values of a valid app with values of the wrong shape.
        let mut value = app;
        for (pick, what) in cuts {
            let mut paths = Vec::new();
            collect_paths(&value, &mut Vec::new(), &mut paths);
            let path = pick.get(&paths).clone();
            let replacement = match what {
                0 => json!(null),
                1 => json!(-1),
                2 => json!("{{@n0}}{{@n1}}{{@"),
                3 => json!({"kind": "generate"}),
                4 => json!([1, "two", {"three": 3}]),
                _ => json!(1e300),
            };
            set(&mut value, &path, replacement);
        }
        let _ = validate_json(&value.to_string());
    }
}

fn collect_paths(value: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    if let Value::Object(map) = value {
        for (k, v) in map {
            at.push(k.clone());
            collect_paths(v, at, out);
            at.pop();
        }
    }
}

fn set(value: &mut Value, path: &[String], replacement: Value) {
    match path.split_first() {
        None => *value = replacement,
        Some((first, rest)) => {
            if let Some(child) = value.get_mut(first) {
                set(child, rest, replacement);
            }
        }
    }
}
