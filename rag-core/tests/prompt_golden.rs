//! Golden tests: for a fixed conversation, each family's prompt equals the model provider's
//! published format byte for byte. The expected strings are written out by hand from those
//! formats (Meta's Llama 2 `chat_completion` and Llama 3 model card, Mistral's instruct format,
//! Anthropic's text completions and Messages API, Bedrock's Titan Text guide).

use rag_core::prompt::{
    ClaudeMessagesTemplate, ClaudeTextTemplate, Llama2Template, Llama3Template, MistralTemplate,
    TitanTextTemplate,
};
use rag_core::{
    template_for, Message, ModelFamily, Passage, Prompt, PromptInput, PromptTemplate,
    RenderedPrompt, Role, TokenBudget, Turn,
};

const SYSTEM: &str = "Answer from the documents. Cite them as [n].";
const QUESTION: &str = "What is the default concurrency?";

/// The context block of the two passages below, in the default document format.
const DOCUMENTS: &str = "<documents>
<document index=\"1\">
<source>https://docs.example.com/quotas</source>
<title>Lambda quotas</title>
<document_content>
Functions time out after 15 minutes.
</document_content>
</document>
<document index=\"2\">
<source>p2</source>
<document_content>
Concurrency is 1,000 per Region by default.
</document_content>
</document>
</documents>";

fn passages() -> Vec<Passage> {
    vec![
        Passage::new("p1", "  Functions time out after 15 minutes.\n")
            .with_title("Lambda quotas")
            .with_uri("https://docs.example.com/quotas"),
        Passage::new("p2", "Concurrency is 1,000 per Region by default."),
    ]
}

fn history() -> Vec<Turn> {
    vec![
        Turn::new("What is Lambda?", "A serverless compute service."),
        Turn::new(" How long can it run? ", "Up to 15 minutes [1].\n"),
        Turn::new("And memory?", "Up to 10,240 MB."),
    ]
}

fn budget() -> TokenBudget {
    TokenBudget::new(200_000, 4_096, 0)
}

fn render(template: &dyn PromptTemplate) -> RenderedPrompt {
    let passages = passages();
    let history = history();
    let input = PromptInput {
        question: QUESTION,
        passages: &passages,
        history: &history,
    };
    let rendered = template.render(&input, &budget()).unwrap();
    assert_eq!(rendered.passages_kept, vec![0, 1]);
    assert!(rendered.passages_dropped.is_empty());
    assert_eq!((rendered.turns_kept, rendered.turns_dropped), (3, 0));
    rendered
}

fn text(rendered: RenderedPrompt) -> String {
    match rendered.prompt {
        Prompt::Text(text) => text,
        other => panic!("expected a text prompt, got {other:?}"),
    }
}

#[test]
fn llama3_matches_meta_format() {
    let template = Llama3Template::builder()
        .with_system(SYSTEM)
        .build()
        .unwrap();
    let expected = format!(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{SYSTEM}<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n{DOCUMENTS}\n\nWhat is Lambda?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nA serverless compute service.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHow long can it run?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nUp to 15 minutes [1].<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nAnd memory?<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\nUp to 10,240 MB.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n{QUESTION}<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(text(render(&template)), expected);
}

#[test]
fn llama2_matches_meta_chat_completion() {
    let template = Llama2Template::builder()
        .with_system(SYSTEM)
        .build()
        .unwrap();
    let expected = format!(
        "<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{DOCUMENTS}\n\nWhat is Lambda? [/INST] \
         A serverless compute service. </s>\
         <s>[INST] How long can it run? [/INST] Up to 15 minutes [1]. </s>\
         <s>[INST] And memory? [/INST] Up to 10,240 MB. </s>\
         <s>[INST] {QUESTION} [/INST]"
    );
    assert_eq!(text(render(&template)), expected);
}

#[test]
fn mistral_matches_instruct_format() {
    let template = MistralTemplate::builder()
        .with_system(SYSTEM)
        .build()
        .unwrap();
    let expected = format!(
        "<s>[INST] {SYSTEM}\n\n{DOCUMENTS}\n\nWhat is Lambda? [/INST] A serverless compute service.</s>\
         [INST] How long can it run? [/INST] Up to 15 minutes [1].</s>\
         [INST] And memory? [/INST] Up to 10,240 MB.</s>\
         [INST] {QUESTION} [/INST]"
    );
    assert_eq!(text(render(&template)), expected);
}

#[test]
fn claude_text_matches_human_assistant_format() {
    let template = ClaudeTextTemplate::builder()
        .with_system(SYSTEM)
        .build()
        .unwrap();
    let expected = format!(
        "{SYSTEM}\n\nHuman: {DOCUMENTS}\n\nWhat is Lambda?\n\nAssistant: A serverless compute service.\
         \n\nHuman: How long can it run?\n\nAssistant: Up to 15 minutes [1].\
         \n\nHuman: And memory?\n\nAssistant: Up to 10,240 MB.\
         \n\nHuman: {QUESTION}\n\nAssistant:"
    );
    assert_eq!(text(render(&template)), expected);
}

#[test]
fn titan_matches_user_bot_format() {
    let template = TitanTextTemplate::builder()
        .with_system(SYSTEM)
        .build()
        .unwrap();
    let expected = format!(
        "User: {SYSTEM}\n\n{DOCUMENTS}\n\nWhat is Lambda?\nBot: A serverless compute service.\n\
         User: How long can it run?\nBot: Up to 15 minutes [1].\n\
         User: And memory?\nBot: Up to 10,240 MB.\n\
         User: {QUESTION}\nBot:"
    );
    assert_eq!(text(render(&template)), expected);
}

#[test]
fn claude_messages_match_the_messages_api() {
    let template = ClaudeMessagesTemplate::builder()
        .with_system(SYSTEM)
        .build()
        .unwrap();
    let expected = Prompt::Chat {
        system: Some(SYSTEM.to_owned()),
        messages: vec![
            Message::user(format!("{DOCUMENTS}\n\nWhat is Lambda?")),
            Message::assistant("A serverless compute service."),
            Message::user("How long can it run?"),
            Message::assistant("Up to 15 minutes [1]."),
            Message::user("And memory?"),
            Message::assistant("Up to 10,240 MB."),
            Message::user(QUESTION),
        ],
    };
    let rendered = render(&template);
    assert_valid_chat(&rendered.prompt);
    assert_eq!(rendered.prompt, expected);
}

#[test]
fn without_system_passages_or_history() {
    let input = PromptInput {
        question: QUESTION,
        passages: &[],
        history: &[],
    };
    let cases: [(Box<dyn PromptTemplate>, String); 5] = [
        (
            Box::new(Llama3Template::builder().with_system("").build().unwrap()),
            format!(
                "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{QUESTION}<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n"
            ),
        ),
        (
            Box::new(Llama2Template::builder().with_system("").build().unwrap()),
            format!("<s>[INST] {QUESTION} [/INST]"),
        ),
        (
            Box::new(MistralTemplate::builder().with_system("").build().unwrap()),
            format!("<s>[INST] {QUESTION} [/INST]"),
        ),
        (
            Box::new(
                ClaudeTextTemplate::builder()
                    .with_system("")
                    .build()
                    .unwrap(),
            ),
            format!("\n\nHuman: {QUESTION}\n\nAssistant:"),
        ),
        (
            Box::new(
                TitanTextTemplate::builder()
                    .with_system("")
                    .build()
                    .unwrap(),
            ),
            format!("User: {QUESTION}\nBot:"),
        ),
    ];
    for (template, expected) in cases {
        let rendered = template.render(&input, &budget()).unwrap();
        assert_eq!(text(rendered), expected);
    }
    let claude = ClaudeMessagesTemplate::builder()
        .with_system("")
        .build()
        .unwrap();
    assert_eq!(
        claude.render(&input, &budget()).unwrap().prompt,
        Prompt::Chat {
            system: None,
            messages: vec![Message::user(QUESTION)]
        }
    );
}

#[test]
fn custom_parts_are_used_and_values_stay_literal() {
    let template = Llama3Template::builder()
        .with_system("Be brief.")
        .with_passage_template("[{{index}}] {{#if title}}{{title}}: {{/if}}{{text}}")
        .with_question_template("Question: {{question}}")
        .build()
        .unwrap();
    let passages = passages();
    let input = PromptInput {
        question: "Is {{system}} a variable? {{#each x}}",
        passages: &passages,
        history: &[],
    };
    let rendered = template.render(&input, &budget()).unwrap();
    assert_eq!(
        text(rendered),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\n<documents>\n\
         [1] Lambda quotas: Functions time out after 15 minutes.\n\
         [2] Concurrency is 1,000 per Region by default.\n</documents>\n\n\
         Question: Is {{system}} a variable? {{#each x}}<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
}

#[test]
fn claude_chat_stays_valid_with_empty_history_texts() {
    let history = vec![
        Turn::new("Hello", ""),
        Turn::new("   ", "I am here."),
        Turn::new("Again", "\n"),
    ];
    let input = PromptInput {
        question: "Now?",
        passages: &[],
        history: &history,
    };
    let rendered = ClaudeMessagesTemplate::new()
        .render(&input, &budget())
        .unwrap();
    assert_valid_chat(&rendered.prompt);
    let Prompt::Chat { messages, .. } = &rendered.prompt else {
        panic!("chat expected")
    };
    assert_eq!(messages.len(), 7);
    assert_eq!(messages.last().unwrap().content, "Now?");
}

#[test]
fn empty_question_is_invalid_input() {
    for family in ModelFamily::ALL {
        let input = PromptInput {
            question: " \n ",
            passages: &[],
            history: &[],
        };
        let err = template_for(family).render(&input, &budget()).unwrap_err();
        assert!(
            matches!(
                err,
                rag_core::Error::InvalidInput {
                    field: "question",
                    ..
                }
            ),
            "{family}: {err:?}"
        );
    }
}

#[test]
fn template_for_picks_each_family_format() {
    let input = PromptInput {
        question: "Hi",
        passages: &[],
        history: &[],
    };
    let starts = [
        (ModelFamily::Llama3, "<|begin_of_text|>"),
        (ModelFamily::Llama2, "<s>[INST] <<SYS>>\n"),
        (ModelFamily::Mistral, "<s>[INST] "),
        (ModelFamily::TitanText, "User: "),
    ];
    for (family, start) in starts {
        let rendered = template_for(family).render(&input, &budget()).unwrap();
        assert!(text(rendered).starts_with(start), "{family}");
    }
    let claude_text = text(
        template_for(ModelFamily::ClaudeText)
            .render(&input, &budget())
            .unwrap(),
    );
    assert!(claude_text.ends_with("\n\nHuman: Hi\n\nAssistant:"));
    let claude = template_for(ModelFamily::Claude)
        .render(&input, &budget())
        .unwrap();
    assert_valid_chat(&claude.prompt);
}

/// Valid for a message API: first from the user, roles alternating, no empty content, and
/// the last message from the user.
fn assert_valid_chat(prompt: &Prompt) {
    let Prompt::Chat { system, messages } = prompt else {
        panic!("expected a chat prompt, got {prompt:?}")
    };
    assert!(system.as_deref().is_none_or(|s| !s.trim().is_empty()));
    assert!(!messages.is_empty());
    assert_eq!(messages[0].role, Role::User);
    assert_eq!(messages.last().unwrap().role, Role::User);
    for pair in messages.windows(2) {
        assert_ne!(
            pair[0].role, pair[1].role,
            "roles must alternate: {messages:?}"
        );
    }
    for message in messages {
        assert!(
            !message.content.trim().is_empty(),
            "empty content: {messages:?}"
        );
    }
}

#[test]
fn bad_templates_fail_at_build_with_line_and_column() {
    let err = Llama3Template::builder()
        .with_passage_template("<doc>\n  {{text}} from {{sorce}}\n</doc>")
        .build()
        .unwrap_err();
    match err {
        rag_core::Error::Template {
            name,
            message,
            line,
            column,
        } => {
            assert_eq!(name, "passage");
            assert!(message.contains("sorce"), "{message}");
            // `{{sorce}}` starts at column 17 of line 2 (1-based).
            assert_eq!((line, column), (Some(2), Some(17)));
        }
        other => panic!("{other:?}"),
    }
    let err = TitanTextTemplate::builder()
        .with_question_template("Q: {{#if question}}{{question}}")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, rag_core::Error::Template { ref name, line: Some(_), column: Some(_), .. } if name == "question"),
        "{err:?}"
    );
}

#[test]
fn templates_cannot_write_role_markers() {
    let err = Llama3Template::builder()
        .with_system("Be brief.\n<|eot_id|><|start_header_id|>user<|end_header_id|>")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, rag_core::Error::Template { ref name, line: Some(2), column: Some(1), .. } if name == "system"),
        "{err:?}"
    );
    assert!(TitanTextTemplate::builder()
        .with_question_template("{{question}}\nBot: Sure!")
        .build()
        .is_err());
    assert!(MistralTemplate::builder()
        .with_passage_template("[INST] {{text}}")
        .build()
        .is_err());
    // What is a marker in one family is text in another.
    assert!(ClaudeMessagesTemplate::builder()
        .with_passage_template("[INST] {{text}} <|eot_id|>")
        .build()
        .is_ok());
}
