//! Checks the SAM template (`rag-lambda/template.yaml`) against what the functions need and
//! no more: each function's IAM actions and the kind of resource each is allowed on, the
//! WebSocket routes and their integrations (the asynchronous `$default` one included, whose
//! request template must render to the proxy event the ask handler reads), the history table,
//! the build metadata against `Cargo.toml`'s `[[bin]]`s, and the dead-letter configuration.
//!
//! yaml-rust2 keeps the value of a tagged scalar and drops the tag, so `!Ref Table` would read
//! as the string "Table": the template writes every intrinsic in its long form, and
//! [`short_form_tags`] makes sure it stays that way.
//!
//! Every check returns its problems rather than panicking, so the `*_is_caught` tests can run
//! it on a broken copy of the template and see that it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use base64::Engine as _;
use yaml_rust2::{Yaml, YamlLoader};

const AUTHORIZER: &str = "AuthorizerFunction";
const CONNECTION: &str = "ConnectionFunction";
const ASK: &str = "AskFunction";

/// The resource an action may be granted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `arn:…:bedrock:region::foundation-model/${ModelId}`.
    FoundationModel,
    /// `arn:…:bedrock:region:account:knowledge-base/${KnowledgeBaseId}`.
    KnowledgeBase,
    /// An `AWS::DynamoDB::Table`'s ARN.
    Table,
    /// The WebSocket API's `@connections` endpoint in the stage.
    Connections,
    /// An `AWS::SQS::Queue`'s ARN.
    Queue,
}

/// A function's binary, and exactly the actions it may use, each with its resource kind.
type Expected = (&'static str, Vec<(&'static str, Kind)>);

/// Each function's [`Expected`].
fn expected_functions() -> BTreeMap<&'static str, Expected> {
    BTreeMap::from([
        (AUTHORIZER, ("rag-lambda-authorizer", vec![])),
        (CONNECTION, ("rag-lambda-connect", vec![])),
        (
            ASK,
            (
                "rag-lambda-ask",
                vec![
                    (
                        "bedrock:InvokeModelWithResponseStream",
                        Kind::FoundationModel,
                    ),
                    ("bedrock:Retrieve", Kind::KnowledgeBase),
                    ("dynamodb:Query", Kind::Table),
                    ("dynamodb:PutItem", Kind::Table),
                    ("execute-api:ManageConnections", Kind::Connections),
                    ("sqs:SendMessage", Kind::Queue),
                ],
            ),
        ),
    ])
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn template_text() -> String {
    let path = manifest_dir().join("template.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn cargo_toml_text() -> String {
    let path = manifest_dir().join("Cargo.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn parse(text: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(text).expect("template.yaml is not valid YAML");
    assert_eq!(docs.len(), 1, "template.yaml should hold one YAML document");
    docs.remove(0)
}

/// Panics with every problem found, one a line.
fn assert_clean(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s) in rag-lambda/template.yaml:\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

// ------------------------------------------------------------------ reading the template

/// A mapping's value by key (`Yaml::BadValue` when absent, as yaml-rust2's indexing gives).
fn get<'a>(node: &'a Yaml, key: &str) -> &'a Yaml {
    &node[key]
}

fn resources(t: &Yaml) -> Vec<(String, &Yaml)> {
    t["Resources"]
        .as_hash()
        .expect("template.yaml has no Resources mapping")
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
        .collect()
}

fn resources_of_type<'a>(t: &'a Yaml, ty: &str) -> Vec<(String, &'a Yaml)> {
    resources(t)
        .into_iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(ty))
        .collect()
}

fn resource_type<'a>(t: &'a Yaml, name: &str) -> Option<&'a str> {
    t["Resources"][name]["Type"].as_str()
}

/// The logical id a `{Ref: X}` names.
fn ref_of(node: &Yaml) -> Option<&str> {
    node["Ref"].as_str()
}

/// The logical id a `{Fn::GetAtt: [X, Arn]}` (or `X.Arn`) names.
fn get_att_arn_of(node: &Yaml) -> Option<&str> {
    match &node["Fn::GetAtt"] {
        Yaml::Array(parts) if parts.len() == 2 && parts[1].as_str() == Some("Arn") => {
            parts[0].as_str()
        }
        Yaml::String(s) => s.strip_suffix(".Arn"),
        _ => None,
    }
}

/// The string of a `{Fn::Sub: "…"}`.
fn sub_of(node: &Yaml) -> Option<&str> {
    node["Fn::Sub"].as_str()
}

/// A string or a list of strings, as IAM's `Action` is written.
fn strings(node: &Yaml) -> Option<Vec<&str>> {
    match node {
        Yaml::String(s) => Some(vec![s.as_str()]),
        Yaml::Array(items) => items.iter().map(Yaml::as_str).collect(),
        _ => None,
    }
}

/// A function's property, from the function or else from `Globals.Function`.
fn function_property<'a>(t: &'a Yaml, function: &'a Yaml, key: &str) -> &'a Yaml {
    let own = &function["Properties"][key];
    if own.is_badvalue() {
        &t["Globals"]["Function"][key]
    } else {
        own
    }
}

// ------------------------------------------------------------------ the checks

/// Short-form intrinsic tags (`!Sub`, `!Ref`, …) outside comments: yaml-rust2 would drop them.
fn short_form_tags(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = match line.find(" #") {
            _ if line.trim_start().starts_with('#') => "",
            Some(at) => &line[..at],
            None => line,
        };
        for token in code.split_whitespace() {
            let token = token.trim_start_matches(['-', '[', '{']);
            if token.len() > 1
                && token.starts_with('!')
                && token[1..].starts_with(|c: char| c.is_ascii_alphabetic())
            {
                problems.push(format!(
                    "line {}: short-form tag {token}; write the long form (e.g. `Fn::Sub:`), \
                     which the test's YAML reader keeps",
                    i + 1
                ));
            }
        }
    }
    problems
}

/// The kind of resource `node` (a statement's `Resource`) is, if it is one of [`Kind`].
fn resource_kind(t: &Yaml, node: &Yaml) -> Result<Kind, String> {
    if node.as_str().is_some_and(|r| r.contains('*')) {
        return Err(format!("{node:?}, a wildcard"));
    }
    if let Some(name) = get_att_arn_of(node) {
        return match resource_type(t, name) {
            Some("AWS::DynamoDB::Table") => Ok(Kind::Table),
            Some("AWS::SQS::Queue") => Ok(Kind::Queue),
            other => Err(format!(
                "the ARN of {name} (a {other:?}), not a table or a queue"
            )),
        };
    }
    let Some(sub) = sub_of(node) else {
        return Err(format!(
            "{node:?}, neither `Fn::GetAtt: [X, Arn]` nor `Fn::Sub`"
        ));
    };
    if sub == "arn:${AWS::Partition}:bedrock:${AWS::Region}::foundation-model/${ModelId}" {
        return Ok(Kind::FoundationModel);
    }
    if sub
        == "arn:${AWS::Partition}:bedrock:${AWS::Region}:${AWS::AccountId}:knowledge-base/${KnowledgeBaseId}"
    {
        return Ok(Kind::KnowledgeBase);
    }
    if let Some(api) = sub
        .strip_prefix("arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${")
        .and_then(|rest| rest.strip_suffix("}/${StageName}/POST/@connections/*"))
    {
        return match resource_type(t, api) {
            Some("AWS::ApiGatewayV2::Api") => Ok(Kind::Connections),
            other => Err(format!(
                "@connections of {api} (a {other:?}), not the WebSocket API"
            )),
        };
    }
    Err(format!(
        "`Fn::Sub: {sub}`, not an ARN this template grants on"
    ))
}

/// Each function's statements: exactly its actions, each on one resource of its kind.
fn policy_problems(t: &Yaml) -> Vec<String> {
    let mut problems = Vec::new();
    let expected = expected_functions();
    let functions = resources_of_type(t, "AWS::Serverless::Function");
    let names: BTreeSet<&str> = functions.iter().map(|(n, _)| n.as_str()).collect();
    let wanted: BTreeSet<&str> = expected.keys().copied().collect();
    if names != wanted {
        problems.push(format!("the functions are {names:?}, not {wanted:?}"));
    }
    for key in ["Policies", "Role"] {
        if !t["Globals"]["Function"][key].is_badvalue() {
            problems.push(format!(
                "Globals.Function.{key} would grant every function the same"
            ));
        }
    }
    for (name, function) in &functions {
        let Some((_, allowed)) = expected.get(name.as_str()) else {
            continue;
        };
        if !function["Properties"]["Role"].is_badvalue() {
            problems.push(format!("{name}: a Role of its own escapes these checks"));
        }
        let mut granted: Vec<(String, Kind)> = Vec::new();
        let policies = &function["Properties"]["Policies"];
        let policies: &[Yaml] = match policies {
            Yaml::BadValue => &[],
            Yaml::Array(items) => items,
            other => {
                problems.push(format!("{name}: Policies is {other:?}, not a list"));
                continue;
            }
        };
        for (p, policy) in policies.iter().enumerate() {
            let Some(statements) = policy["Statement"].as_vec() else {
                problems.push(format!(
                    "{name}: policy {p} is not a document of explicit Statements \
                     (a managed policy or a SAM policy template cannot be read here): {policy:?}"
                ));
                continue;
            };
            for (s, statement) in statements.iter().enumerate() {
                let at = format!("{name}: policy {p} statement {s}");
                if statement["Effect"].as_str() != Some("Allow") {
                    problems.push(format!(
                        "{at}: Effect is {:?}, not Allow",
                        statement["Effect"]
                    ));
                }
                for key in ["NotAction", "NotResource", "Condition"] {
                    if !statement[key].is_badvalue() {
                        problems.push(format!("{at}: {key} is not expected here"));
                    }
                }
                let Some(actions) = strings(&statement["Action"]) else {
                    problems.push(format!("{at}: Action is not a string or a list of strings"));
                    continue;
                };
                for action in &actions {
                    if action.contains('*') || action.contains('?') {
                        problems.push(format!("{at}: action {action} has a wildcard"));
                    }
                }
                let kind = match &statement["Resource"] {
                    Yaml::Array(items) if items.len() == 1 => resource_kind(t, &items[0]),
                    Yaml::Array(items) => Err(format!(
                        "{} resources (each statement grants on one)",
                        items.len()
                    )),
                    Yaml::BadValue => Err("no Resource".to_string()),
                    one => resource_kind(t, one),
                };
                for action in actions {
                    match &kind {
                        Ok(kind) => granted.push((action.to_string(), *kind)),
                        Err(why) => problems.push(format!("{at}: {action} is granted on {why}")),
                    }
                }
            }
        }
        let granted_actions: BTreeSet<&str> = granted.iter().map(|(a, _)| a.as_str()).collect();
        let allowed_actions: BTreeSet<&str> = allowed.iter().map(|(a, _)| *a).collect();
        if granted_actions != allowed_actions || granted.len() != granted_actions.len() {
            problems.push(format!(
                "{name}: grants {:?}, should grant exactly {allowed_actions:?}, each once",
                granted.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>()
            ));
        }
        for (action, kind) in &granted {
            if let Some((_, want)) = allowed.iter().find(|(a, _)| a == action) {
                if kind != want {
                    problems.push(format!("{name}: {action} is on a {kind:?}, not a {want:?}"));
                }
            }
        }
    }
    problems
}

/// The `[[bin]]` names of a Cargo.toml, read as text.
fn bin_names(cargo_toml: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_bin = false;
    for line in cargo_toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin {
            if let Some(value) = line.strip_prefix("name").map(str::trim_start) {
                if let Some(value) = value.strip_prefix('=') {
                    names.insert(value.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    names
}

/// Each function is built by cargo lambda from one of the crate's binaries, for arm64 AL2023.
fn build_problems(t: &Yaml, cargo_toml: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let bins = bin_names(cargo_toml);
    for (name, (binary, _)) in expected_functions() {
        let function = &t["Resources"][name];
        if function.is_badvalue() {
            problems.push(format!("no {name}"));
            continue;
        }
        let metadata = &function["Metadata"];
        if metadata["BuildMethod"].as_str() != Some("rust-cargolambda") {
            problems.push(format!(
                "{name}: Metadata.BuildMethod is not rust-cargolambda"
            ));
        }
        let built = metadata["BuildProperties"]["Binary"].as_str();
        if built != Some(binary) {
            problems.push(format!(
                "{name}: Metadata.BuildProperties.Binary is {built:?}, not {binary}"
            ));
        }
        // What cargo lambda is asked for must be a binary of the crate.
        if let Some(built) = built.filter(|b| !bins.contains(*b)) {
            problems.push(format!(
                "{name}: rag-lambda/Cargo.toml has no [[bin]] named {built} (it has {bins:?})"
            ));
        }
        for (key, want) in [("Runtime", "provided.al2023"), ("Handler", "bootstrap")] {
            let got = function_property(t, function, key).as_str();
            if got != Some(want) {
                problems.push(format!("{name}: {key} is {got:?}, not {want}"));
            }
        }
        let arch = strings(function_property(t, function, "Architectures"));
        if arch != Some(vec!["arm64"]) {
            problems.push(format!("{name}: Architectures is {arch:?}, not [arm64]"));
        }
        if function_property(t, function, "CodeUri").as_str() != Some(".") {
            problems.push(format!(
                "{name}: CodeUri should be `.`, the crate's folder that holds its Cargo.toml"
            ));
        }
    }
    problems
}

/// The function whose ARN an integration's (or authorizer's) Lambda invocation URI names.
fn invoked_function(uri: &Yaml) -> Option<&str> {
    let sub = sub_of(uri)?;
    let rest = sub.strip_prefix(
        "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${",
    )?;
    rest.strip_suffix(".Arn}/invocations")
}

/// The integration a route's `Target` (`integrations/${X}`) names.
fn target_integration(target: &Yaml) -> Option<&str> {
    sub_of(target)?
        .strip_prefix("integrations/${")?
        .strip_suffix('}')
}

/// The three routes, their integrations and functions, and the authorizer on `$connect`.
fn route_problems(t: &Yaml) -> Vec<String> {
    let mut problems = Vec::new();
    let routes: BTreeMap<String, &Yaml> = resources_of_type(t, "AWS::ApiGatewayV2::Route")
        .into_iter()
        .filter_map(|(_, r)| Some((r["Properties"]["RouteKey"].as_str()?.to_string(), r)))
        .collect();
    let keys: BTreeSet<&str> = routes.keys().map(String::as_str).collect();
    let wanted = BTreeSet::from(["$connect", "$disconnect", "$default"]);
    if keys != wanted {
        problems.push(format!("the routes are {keys:?}, not {wanted:?}"));
    }
    let apis = resources_of_type(t, "AWS::ApiGatewayV2::Api");
    match apis.as_slice() {
        [(_, api)] if api["Properties"]["ProtocolType"].as_str() == Some("WEBSOCKET") => {}
        _ => problems.push("there should be one AWS::ApiGatewayV2::Api, a WEBSOCKET one".into()),
    }

    for (key, function, integration_type) in [
        ("$connect", CONNECTION, "AWS_PROXY"),
        ("$disconnect", CONNECTION, "AWS_PROXY"),
        ("$default", ASK, "AWS"),
    ] {
        let Some(route) = routes.get(key) else {
            continue;
        };
        let props = &route["Properties"];
        let Some(integration_name) = target_integration(&props["Target"]) else {
            problems.push(format!(
                "{key}: Target is not `Fn::Sub: integrations/${{X}}`"
            ));
            continue;
        };
        if resource_type(t, integration_name) != Some("AWS::ApiGatewayV2::Integration") {
            problems.push(format!(
                "{key}: Target {integration_name} is not an integration"
            ));
            continue;
        }
        let integration = &t["Resources"][integration_name]["Properties"];
        if integration["IntegrationType"].as_str() != Some(integration_type) {
            problems.push(format!(
                "{key}: integration {integration_name} is {:?}, not {integration_type}",
                integration["IntegrationType"]
            ));
        }
        if invoked_function(&integration["IntegrationUri"]) != Some(function) {
            problems.push(format!(
                "{key}: integration {integration_name} does not invoke {function}"
            ));
        }
        let authorized = props["AuthorizationType"].as_str();
        if key == "$connect" {
            if authorized != Some("CUSTOM") {
                problems.push(format!(
                    "$connect: AuthorizationType is {authorized:?}, not CUSTOM"
                ));
            }
            problems.extend(authorizer_problems(t, &props["AuthorizerId"]));
        } else if authorized != Some("NONE") {
            problems.push(format!(
                "{key}: AuthorizationType is {authorized:?}, not NONE"
            ));
        }
        if key == "$default" {
            let header = get(
                &integration["RequestParameters"],
                "integration.request.header.X-Amz-Invocation-Type",
            );
            if header.as_str() != Some("'Event'") {
                problems.push(format!(
                    "$default: X-Amz-Invocation-Type is {header:?}, not 'Event' (asynchronous)"
                ));
            }
            if integration["IntegrationMethod"].as_str() != Some("POST") {
                problems.push("$default: IntegrationMethod is not POST".into());
            }
            if integration["TemplateSelectionExpression"].as_str() != Some("\\$default") {
                problems.push("$default: TemplateSelectionExpression is not \\$default".into());
            }
            if integration["RequestTemplates"]["$default"]
                .as_str()
                .is_none()
            {
                problems.push("$default: no RequestTemplates.$default".into());
            }
        }
    }
    problems
}

/// `$connect`'s authorizer: a REQUEST one, run by AuthorizerFunction on the subprotocol header.
fn authorizer_problems(t: &Yaml, id: &Yaml) -> Vec<String> {
    let Some(name) = ref_of(id) else {
        return vec!["$connect: AuthorizerId is not a Ref".into()];
    };
    if resource_type(t, name) != Some("AWS::ApiGatewayV2::Authorizer") {
        return vec![format!(
            "$connect: AuthorizerId {name} is not an authorizer"
        )];
    }
    let props = &t["Resources"][name]["Properties"];
    let mut problems = Vec::new();
    if props["AuthorizerType"].as_str() != Some("REQUEST") {
        problems.push(format!("{name}: AuthorizerType is not REQUEST"));
    }
    if invoked_function(&props["AuthorizerUri"]) != Some(AUTHORIZER) {
        problems.push(format!(
            "{name}: AuthorizerUri does not invoke {AUTHORIZER}"
        ));
    }
    if strings(&props["IdentitySource"])
        != Some(vec!["route.request.header.Sec-WebSocket-Protocol"])
    {
        problems.push(format!(
            "{name}: IdentitySource is {:?}, not [route.request.header.Sec-WebSocket-Protocol]",
            props["IdentitySource"]
        ));
    }
    problems
}

/// API Gateway may invoke each function, and only from this API.
fn permission_problems(t: &Yaml) -> Vec<String> {
    let permissions = resources_of_type(t, "AWS::Lambda::Permission");
    let mut problems = Vec::new();
    for function in [AUTHORIZER, CONNECTION, ASK] {
        let found = permissions.iter().any(|(_, p)| {
            let p = &p["Properties"];
            ref_of(&p["FunctionName"]) == Some(function)
                && p["Action"].as_str() == Some("lambda:InvokeFunction")
                && p["Principal"].as_str() == Some("apigateway.amazonaws.com")
                && sub_of(&p["SourceArn"]).is_some_and(|arn| {
                    arn.starts_with(
                        "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}/",
                    )
                })
        });
        if !found {
            problems.push(format!(
                "{function}: no AWS::Lambda::Permission for apigateway.amazonaws.com with a \
                 SourceArn in the WebSocket API"
            ));
        }
    }
    problems
}

/// The history table: on demand, keyed session_id/turn_id (strings), TTL on expires_at.
fn table_problems(t: &Yaml) -> Vec<String> {
    let tables = resources_of_type(t, "AWS::DynamoDB::Table");
    let [(name, table)] = tables.as_slice() else {
        return vec![format!("{} DynamoDB tables, not one", tables.len())];
    };
    let props = &table["Properties"];
    let mut problems = Vec::new();
    if props["BillingMode"].as_str() != Some("PAY_PER_REQUEST") {
        problems.push(format!("{name}: BillingMode is not PAY_PER_REQUEST"));
    }
    let keys: Vec<(Option<&str>, Option<&str>)> = props["KeySchema"]
        .as_vec()
        .map(|keys| {
            keys.iter()
                .map(|k| (k["AttributeName"].as_str(), k["KeyType"].as_str()))
                .collect()
        })
        .unwrap_or_default();
    let want_keys = vec![
        (Some("session_id"), Some("HASH")),
        (Some("turn_id"), Some("RANGE")),
    ];
    if keys != want_keys {
        problems.push(format!(
            "{name}: KeySchema is {keys:?}, not session_id HASH, turn_id RANGE"
        ));
    }
    let attributes: BTreeSet<(Option<&str>, Option<&str>)> = props["AttributeDefinitions"]
        .as_vec()
        .map(|a| {
            a.iter()
                .map(|a| (a["AttributeName"].as_str(), a["AttributeType"].as_str()))
                .collect()
        })
        .unwrap_or_default();
    let want_attributes = BTreeSet::from([
        (Some("session_id"), Some("S")),
        (Some("turn_id"), Some("S")),
    ]);
    if attributes != want_attributes {
        problems.push(format!(
            "{name}: AttributeDefinitions are {attributes:?}, not two strings"
        ));
    }
    let ttl = &props["TimeToLiveSpecification"];
    if ttl["AttributeName"].as_str() != Some("expires_at") || ttl["Enabled"].as_bool() != Some(true)
    {
        problems.push(format!("{name}: TTL is not enabled on expires_at"));
    }
    problems
}

/// AskFunction's asynchronous invocations: no retry, failures to the dead-letter queue.
fn event_invoke_problems(t: &Yaml) -> Vec<String> {
    let config = &t["Resources"][ASK]["Properties"]["EventInvokeConfig"];
    let mut problems = Vec::new();
    if config["MaximumRetryAttempts"].as_i64() != Some(0) {
        problems.push(format!(
            "{ASK}: EventInvokeConfig.MaximumRetryAttempts is {:?}, not 0",
            config["MaximumRetryAttempts"]
        ));
    }
    let on_failure = &config["DestinationConfig"]["OnFailure"];
    let queue = get_att_arn_of(&on_failure["Destination"]);
    if on_failure["Type"].as_str() != Some("SQS")
        || queue.and_then(|q| resource_type(t, q)) != Some("AWS::SQS::Queue")
    {
        problems.push(format!(
            "{ASK}: EventInvokeConfig has no OnFailure destination of Type SQS on a queue's ARN"
        ));
    }
    let dead_letters =
        &t["Resources"][ASK]["Properties"]["Environment"]["Variables"]["RAG_DEAD_LETTER_QUEUE_URL"];
    if queue.is_some() && ref_of(dead_letters) != queue {
        problems.push(format!(
            "{ASK}: RAG_DEAD_LETTER_QUEUE_URL is not the OnFailure queue ({queue:?})"
        ));
    }
    if t["Resources"][ASK]["Properties"]["Timeout"].as_i64() != Some(300) {
        problems.push(format!("{ASK}: Timeout is not 300"));
    }
    problems
}

/// The `$context` variables API Gateway documents for WebSocket APIs (those a template here
/// may use), from "WebSocket API mapping template reference for API Gateway".
const WEBSOCKET_CONTEXT: &[&str] = &[
    "apiId",
    "connectedAt",
    "connectionId",
    "domainName",
    "eventType",
    "extendedRequestId",
    "messageId",
    "requestId",
    "requestTime",
    "requestTimeEpoch",
    "routeKey",
    "stage",
    "status",
];

/// `$default`'s request template, rendered with sample values as API Gateway would.
fn render_ask_template(t: &Yaml, message: &str) -> Result<String, Vec<String>> {
    let integration =
        routes_integration(t, "$default").ok_or_else(|| vec!["no $default".into()])?;
    let template = integration["RequestTemplates"]["$default"]
        .as_str()
        .ok_or_else(|| vec!["no RequestTemplates.$default".to_string()])?;
    let samples = BTreeMap::from([
        ("apiId", "abcdef1234"),
        ("connectedAt", "1733150000000"),
        ("connectionId", "L0SM9cOFvHcCIhw="),
        (
            "domainName",
            "abcdef1234.execute-api.us-east-1.amazonaws.com",
        ),
        ("eventType", "MESSAGE"),
        ("messageId", "L0SM9dvavHcCIhw="),
        ("requestId", "L0SM9GNdvHcFqEQ="),
        ("requestTimeEpoch", "1733150001234"),
        ("routeKey", "$default"),
        ("stage", "prod"),
        ("authorizer.principalId", "user-1"),
        ("authorizer.groups", "admins,staff"),
        ("authorizer.session", "0193c1b5-7f1e-7000-8000-000000000001"),
    ]);
    let mut problems = Vec::new();
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$util.base64Encode($input.body)") {
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(message));
            rest = after;
        } else if let Some(after) = rest.strip_prefix("$context.") {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
                .unwrap_or(after.len());
            let name = &after[..len];
            let documented = WEBSOCKET_CONTEXT.contains(&name)
                || name
                    .strip_prefix("authorizer.")
                    .is_some_and(|k| !k.is_empty());
            if !documented {
                problems.push(format!(
                    "$context.{name} is not a WebSocket API context variable"
                ));
            }
            match samples.get(name) {
                Some(value) => out.push_str(value),
                None => problems.push(format!("the test has no sample for $context.{name}")),
            }
            rest = &after[len..];
        } else {
            problems.push(format!(
                "unexpected reference in the request template at {rest:.40}"
            ));
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn routes_integration<'a>(t: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    let (_, route) = resources_of_type(t, "AWS::ApiGatewayV2::Route")
        .into_iter()
        .find(|(_, r)| r["Properties"]["RouteKey"].as_str() == Some(key))?;
    let name = target_integration(&route["Properties"]["Target"])?;
    Some(&t["Resources"][name]["Properties"])
}

/// The rendered `$default` template is the proxy event the ask handler deserializes.
fn ask_event_problems(t: &Yaml) -> Vec<String> {
    // Quotes, backslashes, a newline and non-ASCII: the base64 body must carry them intact.
    let message = "{\"action\":\"ask\",\"q\":\"a \\\"quoted\\\" \\\\ line\\nnext — ünïcode\"}";
    let rendered = match render_ask_template(t, message) {
        Ok(rendered) => rendered,
        Err(problems) => return problems,
    };
    let event: ApiGatewayWebsocketProxyRequest = match serde_json::from_str(&rendered) {
        Ok(event) => event,
        Err(e) => {
            return vec![format!(
                "the rendered $default template is not an API Gateway WebSocket proxy event: \
                 {e}\n{rendered}"
            )]
        }
    };
    let mut problems = Vec::new();
    let context = &event.request_context;
    let expect = [
        (
            "connectionId",
            context.connection_id.as_deref(),
            "L0SM9cOFvHcCIhw=",
        ),
        (
            "domainName",
            context.domain_name.as_deref(),
            "abcdef1234.execute-api.us-east-1.amazonaws.com",
        ),
        ("stage", context.stage.as_deref(), "prod"),
        ("routeKey", context.route_key.as_deref(), "$default"),
        ("eventType", context.event_type.as_deref(), "MESSAGE"),
        (
            "requestId",
            context.request_id.as_deref(),
            "L0SM9GNdvHcFqEQ=",
        ),
        (
            "messageId",
            context.message_id.as_deref(),
            "L0SM9dvavHcCIhw=",
        ),
        ("apiId", context.apiid.as_deref(), "abcdef1234"),
    ];
    for (field, got, want) in expect {
        if got != Some(want) {
            problems.push(format!("requestContext.{field} is {got:?}, not {want:?}"));
        }
    }
    if context.connected_at != 1_733_150_000_000 || context.request_time_epoch != 1_733_150_001_234
    {
        problems.push("requestContext.connectedAt/requestTimeEpoch are not the numbers".into());
    }
    for (key, want) in [
        ("principalId", "user-1"),
        ("groups", "admins,staff"),
        ("session", "0193c1b5-7f1e-7000-8000-000000000001"),
    ] {
        let got = context.authorizer.fields.get(key).and_then(|v| v.as_str());
        if got != Some(want) {
            problems.push(format!(
                "requestContext.authorizer.{key} is {got:?}, not {want:?}"
            ));
        }
    }
    if !event.is_base64_encoded {
        problems.push("isBase64Encoded is not true".into());
    }
    let body = event
        .body
        .as_deref()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    if body.as_deref() != Some(message.as_bytes()) {
        problems.push(format!(
            "body does not decode to the message sent: {:?}",
            event.body
        ));
    }
    problems
}

// ------------------------------------------------------------------ the tests

#[test]
fn template_uses_no_short_form_tags() {
    assert_clean("short-form tags", short_form_tags(&template_text()));
}

#[test]
fn each_function_has_exactly_its_actions_on_its_resources() {
    assert_clean("IAM policies", policy_problems(&parse(&template_text())));
}

#[test]
fn each_function_is_built_from_a_crate_binary_by_cargo_lambda() {
    let problems = build_problems(&parse(&template_text()), &cargo_toml_text());
    assert_clean("build metadata", problems);
}

#[test]
fn the_three_routes_reach_their_functions_and_default_is_asynchronous() {
    let t = parse(&template_text());
    let mut problems = route_problems(&t);
    problems.extend(permission_problems(&t));
    assert_clean("routes", problems);
}

#[test]
fn the_default_request_template_renders_the_proxy_event() {
    assert_clean(
        "$default request template",
        ask_event_problems(&parse(&template_text())),
    );
}

#[test]
fn the_history_table_is_on_demand_with_ttl() {
    assert_clean("history table", table_problems(&parse(&template_text())));
}

#[test]
fn failed_asks_are_not_retried_and_are_dead_lettered() {
    assert_clean(
        "EventInvokeConfig",
        event_invoke_problems(&parse(&template_text())),
    );
}

#[test]
fn the_outputs_name_the_url_table_and_queue() {
    let t = parse(&template_text());
    let outputs = &t["Outputs"];
    let url = sub_of(&outputs["WebSocketUrl"]["Value"]).unwrap_or_default();
    assert!(
        url.starts_with("wss://${WebSocketApi}.execute-api."),
        "WebSocketUrl is {url:?}"
    );
    assert!(url.ends_with("/${StageName}"), "WebSocketUrl is {url:?}");
    assert_eq!(
        ref_of(&outputs["HistoryTableName"]["Value"]),
        Some("HistoryTable")
    );
    assert_eq!(
        ref_of(&outputs["DeadLetterQueueUrl"]["Value"]),
        Some("DeadLetterQueue")
    );
}

// The checks can fail: each runs on a copy of the template broken in one way.

/// The template with `from` replaced by `to`, once; panics if `from` is not there.
fn broken(from: &str, to: &str) -> String {
    let text = template_text();
    assert!(
        text.contains(from),
        "the template no longer contains {from:?}"
    );
    text.replacen(from, to, 1)
}

fn assert_caught(what: &str, problems: Vec<String>, needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "{what} was not caught; problems: {problems:?}"
    );
}

#[test]
fn a_wildcard_resource_is_caught() {
    let text = broken(
        "              Resource:\n                Fn::GetAtt: [HistoryTable, Arn]\n",
        "              Resource: \"*\"\n",
    );
    assert_caught(
        "Resource: \"*\"",
        policy_problems(&parse(&text)),
        ", a wildcard",
    );
}

#[test]
fn a_wildcard_action_and_an_extra_action_are_caught() {
    let t = parse(&broken("Action: dynamodb:Query", "Action: dynamodb:*"));
    assert_caught("dynamodb:*", policy_problems(&t), "has a wildcard");
    let t = parse(&broken(
        "Action: dynamodb:Query",
        "Action: [dynamodb:Query, dynamodb:DeleteItem]",
    ));
    assert_caught(
        "dynamodb:DeleteItem",
        policy_problems(&t),
        "should grant exactly",
    );
}

#[test]
fn an_action_on_the_wrong_resource_is_caught() {
    let t = parse(&broken(
        "Action: sqs:SendMessage\n              Resource:\n                Fn::GetAtt: [DeadLetterQueue, Arn]",
        "Action: sqs:SendMessage\n              Resource:\n                Fn::GetAtt: [HistoryTable, Arn]",
    ));
    assert_caught(
        "sqs:SendMessage on the table",
        policy_problems(&t),
        "not a Queue",
    );
}

#[test]
fn a_policy_on_the_connection_function_is_caught() {
    let t = parse(&broken(
        "      # No Policies: logs only.\n",
        "      Policies:\n        - AWSLambdaBasicExecutionRole\n",
    ));
    assert_caught(
        "a managed policy",
        policy_problems(&t),
        "ConnectionFunction",
    );
}

#[test]
fn a_synchronous_default_route_is_caught() {
    let t = parse(&broken("\"'Event'\"", "\"'RequestResponse'\""));
    assert_caught(
        "RequestResponse",
        route_problems(&t),
        "X-Amz-Invocation-Type",
    );
}

#[test]
fn an_unknown_context_variable_is_caught() {
    let t = parse(&broken("$context.stage", "$context.stageName"));
    assert_caught(
        "$context.stageName",
        ask_event_problems(&t),
        "$context.stageName",
    );
}

#[test]
fn a_short_form_tag_is_caught() {
    let text = broken(
        "        Fn::Sub: /aws/lambda/${AskFunction}",
        "        !Sub /aws/lambda/${AskFunction}",
    );
    assert_caught("!Sub", short_form_tags(&text), "short-form tag !Sub");
}

#[test]
fn retries_and_an_unknown_binary_are_caught() {
    let t = parse(&broken(
        "MaximumRetryAttempts: 0",
        "MaximumRetryAttempts: 2",
    ));
    assert_caught("retries", event_invoke_problems(&t), "MaximumRetryAttempts");
    let t = parse(&broken(
        "Binary: rag-lambda-ask",
        "Binary: rag-lambda-asker",
    ));
    assert_caught(
        "an unknown binary",
        build_problems(&t, &cargo_toml_text()),
        "no [[bin]]",
    );
}
