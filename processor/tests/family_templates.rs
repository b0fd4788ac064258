//! The real chat templates of Qwen2.5-VL, EXAONE 4.5, EXAONE 4.0 and HyperCLOVA X SEED Think
//! (`fixtures/families/*/processor/`, with their provenance in `SOURCE.md`) render every
//! conversation as transformers renders it (`renderings.json`, made by
//! `tools/reference/make_family_template_fixtures.py` with transformers' own Jinja2): Korean
//! and English, system prompts, images and videos, past reasoning, `enable_thinking` on and
//! off, tools, tool calls and results; a conversation the template refuses is an error here
//! too.

use std::path::Path;

use nuri_processor::template::{ChatTemplate, TemplateSource};
use serde_json::Value as Json;

fn check_family(family: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/families")
        .join(family)
        .join("processor");
    let renderings: Json = serde_json::from_str(
        &std::fs::read_to_string(dir.join("renderings.json")).expect("renderings.json"),
    )
    .expect("JSON");
    let tokens = renderings["special_tokens_map"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (file, template) in renderings["templates"].as_object().expect("templates") {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).expect("template file");
        let compiled = ChatTemplate::new(text, TemplateSource::File(path)).expect("compiles");
        for case in template["cases"].as_array().expect("cases") {
            let name = case["name"].as_str().unwrap_or("?");
            let mut kwargs = case["kwargs"].as_object().cloned().unwrap_or_default();
            let generation = kwargs
                .remove("add_generation_prompt")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let mut extra = tokens.clone();
            extra.extend(kwargs);
            let got = compiled.render(&case["messages"], generation, &extra);
            checked += 1;
            match (case.get("rendered").and_then(Json::as_str), got) {
                (Some(want), Ok(got)) if got == want => {}
                (Some(want), Ok(got)) => {
                    failures.push(format!("{file}/{name}:\n  want {want:?}\n  got  {got:?}"))
                }
                (Some(_), Err(e)) => failures.push(format!("{file}/{name}: error {e}")),
                (None, Ok(got)) => failures.push(format!(
                    "{file}/{name}: transformers refuses it, we rendered {got:?}"
                )),
                (None, Err(_)) => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{family}: {} of {checked} renderings differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn qwen2_5_vl_template_renders_as_transformers() {
    check_family("qwen2_5_vl");
}

#[test]
fn exaone_templates_render_as_transformers() {
    check_family("exaone4_5");
}

#[test]
fn hyperclovax_template_renders_as_transformers() {
    check_family("hyperclovax_vision_v2");
}
