use super::*;

#[test]
fn families_from_ids_and_inference_profiles() {
    let cases = [
        (
            "anthropic.claude-3-sonnet-20240229-v1:0",
            ModelFamily::Claude,
            200_000,
        ),
        (
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            ModelFamily::Claude,
            200_000,
        ),
        (
            "global.anthropic.claude-sonnet-4-20250514-v1:0",
            ModelFamily::Claude,
            200_000,
        ),
        (
            "global.anthropic.claude-opus-4-6-v1",
            ModelFamily::Claude,
            1_000_000,
        ),
        ("anthropic.claude-v2", ModelFamily::ClaudeText, 100_000),
        ("anthropic.claude-v2:1", ModelFamily::ClaudeText, 200_000),
        (
            "anthropic.claude-instant-v1",
            ModelFamily::ClaudeText,
            100_000,
        ),
        ("meta.llama2-70b-chat-v1", ModelFamily::Llama2, 4_096),
        ("meta.llama3-8b-instruct-v1:0", ModelFamily::Llama3, 8_192),
        (
            "eu.meta.llama3-2-3b-instruct-v1:0",
            ModelFamily::Llama3,
            128_000,
        ),
        (
            "apac.meta.llama3-3-70b-instruct-v1:0",
            ModelFamily::Llama3,
            128_000,
        ),
        (
            "amazon.titan-text-express-v1",
            ModelFamily::TitanText,
            8_192,
        ),
        (
            "mistral.mixtral-8x7b-instruct-v0:1",
            ModelFamily::Mistral,
            32_000,
        ),
        (
            "mistral.mistral-7b-instruct-v0:2",
            ModelFamily::Mistral,
            32_000,
        ),
        (
            "mistral.mistral-large-2402-v1:0",
            ModelFamily::Mistral,
            32_000,
        ),
        (
            "mistral.mistral-large-2407-v1:0",
            ModelFamily::Chat,
            128_000,
        ),
        ("us.amazon.nova-pro-v1:0", ModelFamily::Chat, 300_000),
        ("us.deepseek.r1-v1:0", ModelFamily::Chat, 128_000),
    ];
    for (id, family, window) in cases {
        let profile = ModelProfile::for_model_id(id).unwrap();
        assert_eq!(
            (profile.family, profile.context_window),
            (family, window),
            "{id}"
        );
        assert_eq!(profile.route, route_for_model_id(id), "{id}");
    }
}

#[test]
fn routes_follow_the_table_and_default_to_converse() {
    for (id, route) in [
        ("anthropic.claude-3-haiku-20240307-v1:0", Route::Native),
        ("meta.llama3-1-70b-instruct-v1:0", Route::Native),
        ("mistral.mistral-small-2402-v1:0", Route::Native),
        ("mistral.mistral-large-2407-v1:0", Route::Converse),
        ("amazon.nova-micro-v1:0", Route::Converse),
        ("meta.llama4-scout-17b-instruct-v1:0", Route::Converse),
        ("cohere.command-r-plus-v1:0", Route::Converse),
        ("openai.gpt-oss-120b-1:0", Route::Converse),
        ("qwen.qwen3-32b-v1:0", Route::Converse),
    ] {
        assert_eq!(route_for_model_id(id), route, "{id}");
    }
}

#[test]
fn every_native_entry_is_a_family_with_a_native_body() {
    for entry in table::entries() {
        match entry.route {
            Route::Native => assert_ne!(entry.family, ModelFamily::Chat, "{}", entry.prefix),
            Route::Converse => assert_eq!(entry.family, ModelFamily::Chat, "{}", entry.prefix),
        }
        assert!(
            entry.max_output_tokens <= entry.context_window,
            "{}",
            entry.prefix
        );
    }
    // Specific prefixes come before the general ones that would shadow them.
    for (i, a) in table::entries().iter().enumerate() {
        for b in &table::entries()[i + 1..] {
            assert!(
                !b.prefix.starts_with(a.prefix),
                "{} is shadowed by the earlier {}",
                b.prefix,
                a.prefix
            );
        }
    }
}

#[test]
fn claude_4_5_and_later_refuse_temperature_with_top_p() {
    let both = GenerationParams::default()
        .with_temperature(0.5)
        .with_top_p(0.9);
    for id in [
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
        "us.anthropic.claude-haiku-4-5-20251001-v1:0",
        "anthropic.claude-opus-4-1-20250805-v1:0",
        "global.anthropic.claude-opus-4-6-v1",
        "anthropic.claude-sonnet-4-6",
        "anthropic.claude-opus-4-7",
    ] {
        let profile = ModelProfile::for_model_id(id).unwrap();
        let err = profile.check_params(id, &both).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: "params.top_p",
                    ..
                }
            ),
            "{id}: {err}"
        );
        profile
            .check_params(id, &GenerationParams::default().with_temperature(0.5))
            .unwrap();
        profile
            .check_params(id, &GenerationParams::default().with_top_p(0.9))
            .unwrap();
    }
    for id in [
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        "anthropic.claude-opus-4-20250514-v1:0",
    ] {
        let profile = ModelProfile::for_model_id(id).unwrap();
        profile.check_params(id, &both).unwrap();
    }
}

#[test]
fn llama4_is_known_not_to_stream() {
    let profile = ModelProfile::for_model_id("us.meta.llama4-maverick-17b-instruct-v1:0").unwrap();
    assert!(!profile.streams);
    assert!(
        ModelProfile::for_model_id("meta.llama3-8b-instruct-v1:0")
            .unwrap()
            .streams
    );
}

#[test]
fn answer_limits_are_checked() {
    let profile = ModelProfile::for_model_id("meta.llama3-8b-instruct-v1:0").unwrap();
    let err = profile
        .check_params("llama", &GenerationParams::default().with_max_tokens(4_096))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidInput {
            field: "params.max_tokens",
            ..
        }
    ));
}

#[test]
fn arns_of_models_and_inference_profiles() {
    let cases = [
        (
            "arn:aws:bedrock:us-east-1::foundation-model/meta.llama3-8b-instruct-v1:0",
            ModelFamily::Llama3,
        ),
        (
            "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
            ModelFamily::Claude,
        ),
    ];
    for (arn, family) in cases {
        assert_eq!(
            ModelProfile::for_model_id(arn).unwrap().family,
            family,
            "{arn}"
        );
    }
    assert!(ModelProfile::for_model_id(
        "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123"
    )
    .is_err());
}

#[test]
fn unknown_ids_name_the_known_families() {
    let err = ModelProfile::for_model_id("cohere.command-r-v1:0").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cohere.command-r-v1:0"), "{msg}");
    for family in ModelFamily::ALL {
        assert!(msg.contains(family.name()), "{msg} lacks {family}");
    }
    let custom = ModelProfile::custom("llama3".parse().unwrap(), 32_000, 1_000);
    assert_eq!(custom.family, ModelFamily::Llama3);
    assert_eq!(custom.route, Route::Native);
    assert_eq!(
        ModelProfile::custom(ModelFamily::Chat, 1, 1).route,
        Route::Converse
    );
}

#[test]
fn titan_takes_no_system_prompt() {
    assert!(
        !ModelProfile::for_model_id("amazon.titan-text-lite-v1")
            .unwrap()
            .system_prompt
    );
    assert!(
        ModelProfile::for_model_id("anthropic.claude-3-haiku-20240307-v1:0")
            .unwrap()
            .system_prompt
    );
}

#[test]
fn the_reserve_scales_with_the_window() {
    assert_eq!(default_reserve(8_192), 81);
    assert_eq!(default_reserve(200_000), 2_000);
    assert_eq!(default_reserve(1_000), 16);
}

#[test]
fn which_models_take_images() {
    let native = [
        ("anthropic.claude-3-haiku-20240307-v1:0", true),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", true),
        // "No" in the Vision column of Bedrock's Converse feature table.
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", false),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", true),
        ("anthropic.claude-v2:1", false),
        // Llama 3.2 Vision's native prompt is text.
        ("us.meta.llama3-2-90b-instruct-v1:0", false),
        ("amazon.nova-lite-v1:0", true),
        ("us.amazon.nova-pro-v1:0", true),
        ("amazon.nova-micro-v1:0", false),
        ("meta.llama4-scout-17b-instruct-v1:0", true),
        ("deepseek.r1-v1:0", false),
    ];
    for (id, images) in native {
        assert_eq!(
            ModelProfile::for_model_id(id).unwrap().images,
            images,
            "{id}"
        );
    }
    let converse = [
        ("us.meta.llama3-2-11b-instruct-v1:0", Some(true)),
        ("us.meta.llama3-2-90b-instruct-v1:0", Some(true)),
        ("us.meta.llama3-2-3b-instruct-v1:0", Some(false)),
        ("us.amazon.nova-premier-v1:0", Some(true)),
        ("us.mistral.pixtral-large-2502-v1:0", Some(true)),
        ("amazon.nova-micro-v1:0", Some(false)),
        ("anthropic.claude-3-5-haiku-20241022-v1:0", Some(false)),
        ("anthropic.claude-3-opus-20240229-v1:0", Some(true)),
        ("cohere.command-r-plus-v1:0", None),
    ];
    for (id, images) in converse {
        assert_eq!(converse_takes_images(id), images, "{id}");
    }
}
