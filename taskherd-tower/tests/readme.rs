//! The README's "Web services" example is `examples/axum_quickstart.rs`, which is compiled with
//! the tests: this checks that the README shows it as it is.

#[test]
fn the_readme_shows_the_compiled_axum_example() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../examples/axum_quickstart.rs");
    let block = format!("```rust,ignore\n{example}```");
    assert!(
        readme.contains(&block),
        "README.md's \"Web services\" example differs from examples/axum_quickstart.rs: copy the file into it"
    );
}
