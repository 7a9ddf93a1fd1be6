//! Keeps the template's twins in step with the files they stand in for.
//!
//! The repository builds as the concrete project `reservation-webhook` managing
//! `Switch Port`s. The few files that must carry the generated name or resource type have a
//! twin under `template/` with Liquid placeholders in their place, which the post-generation
//! hook moves over the original. Each twin is derived here from its original; this test
//! fails when one is stale, and `UPDATE_TEMPLATE=1 cargo test --test template`
//! (`scripts/sync-template.sh`) rewrites them. Not shipped to generated projects.

use std::path::Path;

const NAME: &str = "reservation-webhook";
const RESOURCE_TYPE: &str = "Switch Port";
/// The resource type inside a double-quoted dotenv value (where `$` would expand).
const DOTENV_TYPE: &str =
    r#"{{ resource_type | replace: '\', '\\' | replace: '"', '\"' | replace: '$', '\$' }}"#;
/// The resource type inside a double-quoted YAML string.
const YAML_TYPE: &str = r#"{{ resource_type | replace: '\', '\\' | replace: '"', '\"' }}"#;

/// An original's path, and how its text becomes its twin's.
type Twin = (&'static str, fn(&str) -> String);

/// Every twin.
fn twins() -> Vec<Twin> {
    vec![
        ("Cargo.toml", |text| {
            let text = replace_line(
                text,
                &format!("name = \"{NAME}\""),
                "name = \"{{project-name}}\"",
            );
            // The chosen example's feature is on by default.
            replace_line(
                &text,
                "default = []",
                r#"default = [{% if manager != "blank" %}"{{manager}}"{% endif %}]"#,
            )
        }),
        ("Cargo.lock", |text| {
            replace_line(
                text,
                &format!("name = \"{NAME}\""),
                "name = \"{{project-name}}\"",
            )
        }),
        ("src/resource_type.txt", |text| {
            replace_line(text, RESOURCE_TYPE, "{{resource_type}}")
        }),
        (".env.example", |text| {
            replace_line(
                text,
                &format!("RESOURCE_TYPE=\"{RESOURCE_TYPE}\""),
                &format!("RESOURCE_TYPE=\"{DOTENV_TYPE}\""),
            )
        }),
        ("docs/deploy.md", |text| {
            let text = replace_all(text, RESOURCE_TYPE, "{{resource_type}}");
            replace_all(&text, NAME, "{{project-name}}")
        }),
        ("k8s/base/kustomization.yaml", |text| {
            let text = replace_all(
                text,
                &format!("\"RESOURCE_TYPE={RESOURCE_TYPE}\""),
                &format!("\"RESOURCE_TYPE={YAML_TYPE}\""),
            );
            replace_all(&text, NAME, "{{project-name}}")
        }),
    ]
}

/// Replaces the one line that is exactly `from`; panics if there is none or several.
fn replace_line(text: &str, from: &str, to: &str) -> String {
    let hits = text.lines().filter(|l| *l == from).count();
    assert_eq!(hits, 1, "expected exactly one line {from:?}");
    text.lines()
        .map(|l| if l == from { to } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + if text.ends_with('\n') { "\n" } else { "" }
}

/// Replaces every occurrence of `from`; panics if there is none.
fn replace_all(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?}");
    text.replace(from, to)
}

#[test]
fn every_template_twin_matches_its_original() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_TEMPLATE").is_some();
    let mut stale = Vec::new();
    for (path, derive) in twins() {
        let original = root.join(path);
        let text = std::fs::read_to_string(&original)
            .unwrap_or_else(|e| panic!("{}: {e}", original.display()));
        let expected = derive(&text);
        let twin = root.join("template").join(format!("{path}.liquid"));
        if std::fs::read_to_string(&twin).ok().as_deref() == Some(expected.as_str()) {
            continue;
        }
        if update {
            std::fs::create_dir_all(twin.parent().unwrap()).unwrap();
            std::fs::write(&twin, expected).unwrap();
        } else {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "stale twins under template/ for {stale:?}: run scripts/sync-template.sh"
    );
}

#[test]
fn the_post_generation_hook_moves_every_twin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hook = std::fs::read_to_string(root.join("template/hooks/post.rhai")).unwrap();
    for (path, _) in twins() {
        assert!(
            hook.contains(&format!("\"{path}\"")),
            "post.rhai does not move {path}"
        );
    }
}

/// Every example of `examples/` is a `manager` choice, with the feature of its name, its
/// settings for `.env.example`, and a real-backend test; and every choice is an example.
#[test]
fn every_example_is_a_manager_choice_with_its_feature_settings_and_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut examples: Vec<String> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    examples.sort();
    let generate = std::fs::read_to_string(root.join("cargo-generate.toml")).unwrap();
    let choices = generate
        .lines()
        .find_map(|l| l.strip_prefix("choices = "))
        .expect("the manager question's choices");
    let mut listed: Vec<String> = choices
        .trim_matches(['[', ']'])
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_owned())
        .filter(|c| c != "blank")
        .collect();
    listed.sort();
    assert_eq!(listed, examples, "cargo-generate.toml's manager choices");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for example in &examples {
        assert!(
            manifest.contains(&format!("\n{example} = [")),
            "no feature {example} in Cargo.toml"
        );
        for file in [
            format!("examples/{example}.env"),
            format!("examples/tests/{example}.rs"),
        ] {
            assert!(root.join(&file).exists(), "{file} is missing");
        }
        let test =
            std::fs::read_to_string(root.join(format!("examples/tests/{example}.rs"))).unwrap();
        assert!(
            test.contains(&format!("#[path = \"../{example}.rs\"]")),
            "examples/tests/{example}.rs must include the example as post.rhai expects"
        );
    }
}
