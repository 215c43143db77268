//! Which container images the pod runner runs, and as what program. The same table decides, in
//! kwok's stages, which pods kwok leaves alone: both sides derive their test from [`PROGRAMS`].

use std::path::{Path, PathBuf};

/// A program the runner can play a container image with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// Images this program plays; `*` matches any run of characters.
    pub image: &'static str,
    /// The executable, in the directory cargo builds the workspace's binaries into.
    pub binary: &'static str,
    /// The variable that tells the program where to listen; the runner sets it to
    /// `0.0.0.0:<the container's first declared port>` unless the container's `env` sets it.
    pub listen_env: &'static str,
}

/// The table. Only a pod's first container counts (see [`program_for`]).
pub const PROGRAMS: &[Program] = &[Program {
    image: "*/demo-app:*",
    binary: "demo-app",
    listen_env: "DEMO_LISTEN",
}];

/// The program for `image`, if the table has one.
pub fn program_for(image: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| glob_matches(p.image, image))
}

/// The program's executable in `dir`.
pub fn executable(program: &Program, dir: &Path) -> PathBuf {
    dir.join(program.binary)
}

/// A jq expression (kwok's selector language) that is `true` exactly for pods whose first
/// container's image [`program_for`] maps: kwok's stages select on it.
pub fn kwok_selector() -> String {
    // Backslashes doubled: the expression is a jq string literal.
    format!(
        "(.spec.containers[0].image // \"\") | test(\"{}\")",
        image_regex().replace('\\', "\\\\")
    )
}

/// An anchored regular expression (RE2 and jq alike) matching exactly the images
/// [`program_for`] maps: what Prometheus' service discovery keeps.
pub fn image_regex() -> String {
    let alternatives: Vec<String> = PROGRAMS.iter().map(|p| glob_to_regex(p.image)).collect();
    alternatives.join("|")
}

/// `*` matches any run of characters, everything else itself.
fn glob_matches(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return glob == text;
    };
    if parts.len() == 1 {
        return glob == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The same language as [`glob_matches`], as an anchored regular expression.
fn glob_to_regex(glob: &str) -> String {
    let mut regex = String::from("^");
    for c in glob.chars() {
        match c {
            '*' => regex.push_str(".*"),
            c if c.is_ascii_alphanumeric() || c == '/' || c == '-' || c == '_' || c == ':' => {
                regex.push(c)
            }
            c => {
                regex.push('\\');
                regex.push(c);
            }
        }
    }
    regex.push('$');
    regex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_app_images_of_any_registry_and_tag_map() {
        assert!(program_for("registry.example.com/demo-app:v1").is_some());
        assert!(program_for("example.com/team/demo-app:3").is_some());
        assert!(program_for("demo-app:v1").is_none());
        assert!(program_for("registry.example.com/web:3").is_none());
        assert!(program_for("example.com/demo-app-two:1").is_none());
    }

    #[test]
    fn globs() {
        assert!(glob_matches("a*b*c", "aXbYc"));
        assert!(glob_matches("a*", "a"));
        assert!(!glob_matches("a*b", "ab-"));
        assert!(glob_matches("abc", "abc"));
        assert!(!glob_matches("*ab*ab", "ab"));
    }

    #[test]
    fn the_kwok_selector_is_the_same_test() {
        assert_eq!(
            kwok_selector(),
            "(.spec.containers[0].image // \"\") | test(\"^.*/demo-app:.*$\")"
        );
        assert_eq!(glob_to_regex("a.b*"), "^a\\.b.*$");
        assert_eq!(image_regex(), "^.*/demo-app:.*$");
    }
}
