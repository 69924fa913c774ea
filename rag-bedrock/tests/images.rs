//! Images through the real SDK client against the loopback Bedrock: image parts in Claude
//! Messages and Converse requests, refused before any call for models that take none; and
//! `BedrockImageGenerator` on InvokeModel for Amazon Nova Canvas and Titan Image Generator v2.

mod support;

use std::time::Duration;

use base64::Engine as _;
use rag_bedrock::{BedrockGenerator, BedrockImageGenerator};
use rag_core::testing::TINY_PNG;
use rag_core::{
    Error, GenerationParams, Generator, Image, ImageGenerator, ImageRequest, Message, Prompt,
};
use serde_json::json;
use support::families;
use support::{
    chunk, client, collect, converse_event, decoded_path, image_answer, Reply, TestServer,
};

fn png() -> Image {
    Image::from_bytes(TINY_PNG).unwrap()
}

fn b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(TINY_PNG)
}

fn prompt_with_image() -> Prompt {
    Prompt::Chat {
        system: Some("Describe images.".into()),
        messages: vec![Message::user("What is in the picture?").with_image(png())],
    }
}

fn field(err: Error) -> &'static str {
    match err {
        Error::InvalidInput { field, .. } => field,
        other => panic!("expected InvalidInput, got {other}"),
    }
}

#[tokio::test]
async fn claude_messages_carry_the_image_block_before_the_text() {
    let case = families::claude();
    let server = TestServer::start([Reply::frames(case.chunks.iter().map(|c| chunk(c)))]).await;
    let generator = BedrockGenerator::builder(case.model_id)
        .with_client(client::runtime(&server.url()))
        .build()
        .unwrap();
    assert_eq!(generator.takes_images(), Some(true));
    let stream = generator
        .generate(
            &prompt_with_image(),
            &GenerationParams::default().with_max_tokens(100),
        )
        .await
        .unwrap();
    let (_, err) = collect(stream).await;
    assert!(err.is_none(), "{err:?}");
    let request = &server.requests()[0];
    assert_eq!(
        decoded_path(request),
        format!("/model/{}/invoke-with-response-stream", case.model_id)
    );
    assert_eq!(
        request.json(),
        json!({
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 100,
            "system": "Describe images.",
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64()}},
                {"type": "text", "text": "What is in the picture?"}
            ]}]
        })
    );
}

#[tokio::test]
async fn converse_carries_the_image_block_before_the_text() {
    let events = [
        converse_event("messageStart", json!({"role": "assistant"})),
        converse_event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "A pixel."}}),
        ),
        converse_event("messageStop", json!({"stopReason": "end_turn"})),
    ];
    let server = TestServer::start([Reply::frames(events)]).await;
    let generator = BedrockGenerator::builder("us.amazon.nova-lite-v1:0")
        .with_client(client::runtime(&server.url()))
        .build()
        .unwrap();
    assert!(generator.is_converse());
    let stream = generator
        .generate(
            &prompt_with_image(),
            &GenerationParams::default().with_max_tokens(100),
        )
        .await
        .unwrap();
    let (chunks, err) = collect(stream).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(support::text(&chunks), "A pixel.");
    let request = &server.requests()[0];
    assert_eq!(
        decoded_path(request),
        "/model/us.amazon.nova-lite-v1:0/converse-stream"
    );
    assert_eq!(
        request.json()["messages"],
        json!([{"role": "user", "content": [
            {"image": {"format": "png", "source": {"bytes": b64()}}},
            {"text": "What is in the picture?"}
        ]}])
    );
}

#[tokio::test]
async fn images_for_a_model_that_takes_none_are_refused_before_any_request() {
    let server = TestServer::start([]).await;
    for (id, converse) in [
        ("amazon.nova-micro-v1:0", false),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", false),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", true),
        ("meta.llama3-1-70b-instruct-v1:0", true),
    ] {
        let builder = if converse {
            BedrockGenerator::converse(id)
        } else {
            BedrockGenerator::builder(id)
        };
        let generator = builder
            .with_client(client::runtime(&server.url()))
            .build()
            .unwrap();
        assert_eq!(generator.takes_images(), Some(false), "{id}");
        let err = generator
            .generate(&prompt_with_image(), &GenerationParams::default())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("takes no images"), "{err}");
        assert_eq!(field(err), "prompt.images", "{id}");
    }
    // Llama 3.2 Vision takes images through Converse; an assistant's image is refused there.
    let vision = BedrockGenerator::converse("us.meta.llama3-2-90b-instruct-v1:0")
        .with_client(client::runtime(&server.url()))
        .build()
        .unwrap();
    assert_eq!(vision.takes_images(), Some(true));
    let assistant_image = Prompt::Chat {
        system: None,
        messages: vec![
            Message::user("hi"),
            Message::assistant("look").with_image(png()),
            Message::user("and?"),
        ],
    };
    let err = vision
        .generate(&assistant_image, &GenerationParams::default())
        .await
        .err()
        .unwrap();
    assert_eq!(field(err), "prompt.images");
    let mut many = Message::user("compare them");
    many.images = vec![png(); 21];
    let err = vision
        .generate(
            &Prompt::Chat {
                system: None,
                messages: vec![many],
            },
            &GenerationParams::default(),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(field(err), "prompt.images");
    assert_eq!(server.hits(), 0);
}

fn image_generator(model_id: &str, server: &TestServer) -> BedrockImageGenerator {
    BedrockImageGenerator::builder(model_id)
        .with_client(client::runtime(&server.url()))
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

#[tokio::test]
async fn nova_canvas_and_titan_v2_send_text_image_bodies_and_decode_the_image() {
    let cases = [
        (
            "amazon.nova-canvas-v1:0",
            ImageRequest {
                negative_prompt: Some("people".into()),
                cfg_scale: Some(6.5),
                seed: Some(858_993_459),
                ..ImageRequest::new("A lighthouse at dusk", 1280, 720)
            },
            json!({
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "A lighthouse at dusk", "negativeText": "people"},
                "imageGenerationConfig": {"numberOfImages": 1, "width": 1280, "height": 720, "cfgScale": 6.5, "seed": 858_993_459}
            }),
        ),
        (
            "us.amazon.titan-image-generator-v2:0",
            ImageRequest {
                cfg_scale: Some(8.0),
                seed: Some(2_147_483_646),
                ..ImageRequest::new("A red bicycle", 1173, 640)
            },
            json!({
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "A red bicycle"},
                "imageGenerationConfig": {"numberOfImages": 1, "width": 1173, "height": 640, "cfgScale": 8.0, "seed": 2_147_483_646}
            }),
        ),
        (
            "amazon.titan-image-generator-v2:0",
            ImageRequest::new("A red bicycle", 512, 512),
            json!({
                "taskType": "TEXT_IMAGE",
                "textToImageParams": {"text": "A red bicycle"},
                "imageGenerationConfig": {"numberOfImages": 1, "width": 512, "height": 512}
            }),
        ),
    ];
    for (model_id, request, body) in cases {
        let server = TestServer::start([image_answer(TINY_PNG)]).await;
        let image = image_generator(model_id, &server)
            .generate_image(&request)
            .await
            .unwrap();
        assert_eq!(image.bytes(), TINY_PNG, "{model_id}");
        assert_eq!(image, png());
        let requests = server.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "POST");
        assert_eq!(
            decoded_path(&requests[0]),
            format!("/model/{model_id}/invoke")
        );
        assert_eq!(requests[0].headers["content-type"], "application/json");
        assert_eq!(requests[0].json(), body, "{model_id}");
    }
}

#[tokio::test]
async fn out_of_range_image_requests_are_refused_before_any_call() {
    let server = TestServer::start([]).await;
    let nova = image_generator("amazon.nova-canvas-v1:0", &server);
    let titan = image_generator("amazon.titan-image-generator-v2:0", &server);
    let cases: [(&BedrockImageGenerator, ImageRequest, &str); 7] = [
        (&nova, ImageRequest::new("x", 1000, 1024), "image.width"),
        (&nova, ImageRequest::new("x", 320, 1600), "image.height"),
        (
            &nova,
            ImageRequest::new("x".repeat(1_025), 1024, 1024),
            "image.prompt",
        ),
        (
            &nova,
            ImageRequest {
                seed: Some(858_993_460),
                ..ImageRequest::new("x", 1024, 1024)
            },
            "image.seed",
        ),
        (
            &nova,
            ImageRequest {
                cfg_scale: Some(11.0),
                ..ImageRequest::new("x", 1024, 1024)
            },
            "image.cfg_scale",
        ),
        (&titan, ImageRequest::new("x", 1280, 720), "image.height"),
        (
            &titan,
            ImageRequest::new("x".repeat(513), 512, 512),
            "image.prompt",
        ),
    ];
    for (generator, request, expected) in cases {
        let err = generator.check(&request).unwrap_err();
        assert_eq!(field(err), expected);
        let err = generator.generate_image(&request).await.unwrap_err();
        assert_eq!(field(err), expected, "{request:?}");
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn refusals_and_failures_are_classified() {
    let blocked = "This request has been blocked by our content filters.";
    let request = ImageRequest::new("A lighthouse at dusk", 1024, 1024);
    // A content-filter refusal, as a ValidationException or in the answer's `error`.
    for reply in [
        Reply::error(400, "ValidationException", blocked),
        Reply::ok_json(json!({"images": [], "error": blocked})),
    ] {
        let server = TestServer::start([reply]).await;
        let err = image_generator("amazon.nova-canvas-v1:0", &server)
            .generate_image(&request)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Generation { .. }), "{err}");
        assert!(!err.is_retryable(), "{err}");
        let message = err.to_string();
        assert!(message.contains("content filters blocked"), "{message}");
        assert!(message.contains(blocked), "{message}");
        assert_eq!(server.hits(), 1);
    }
    let cases = [
        (
            Reply::error(429, "ThrottlingException", "Too many requests"),
            true,
        ),
        (
            Reply::error(400, "ValidationException", "Malformed input request"),
            false,
        ),
        (
            Reply::ok_json(json!({"images": ["bm90IGFuIGltYWdl"]})),
            false,
        ),
        (Reply::ok_json(json!({"images": []})), false),
    ];
    for (reply, retryable) in cases {
        let server = TestServer::start([reply]).await;
        let err = image_generator("amazon.titan-image-generator-v2:0", &server)
            .generate_image(&request)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Generation { .. }), "{err}");
        assert_eq!(err.is_retryable(), retryable, "{err}");
        assert_eq!(server.hits(), 1);
    }
}
