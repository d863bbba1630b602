//! Class names and prompt templates: the built-in lists of the 12 zero-shot datasets (spec
//! clip.md §10–§11, compiled in from `zeroshot_classnames_templates.json`) or a manifest's own.

use super::DataError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Prompts {
    pub classnames: Vec<String>,
    pub templates: Vec<String>,
}

const BUILTIN_JSON: &str = include_str!("zeroshot_classnames_templates.json");

fn builtin_table() -> &'static BTreeMap<String, Prompts> {
    static TABLE: OnceLock<BTreeMap<String, Prompts>> = OnceLock::new();
    TABLE.get_or_init(|| serde_json::from_str(BUILTIN_JSON).expect("built-in prompt table parses"))
}

impl Prompts {
    /// The built-in lists of a known dataset (`mnist`, `cifar100`, …).
    pub fn builtin(name: &str) -> Option<&'static Prompts> {
        builtin_table().get(name)
    }

    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        builtin_table().keys().map(String::as_str)
    }

    /// `template` with `{c}` replaced by the class name; no other formatting.
    pub fn render(template: &str, class: &str) -> String {
        template.replace("{c}", class)
    }

    /// Every template rendered for class `c`.
    pub fn class_prompts(&self, c: usize) -> Vec<String> {
        self.templates
            .iter()
            .map(|t| Self::render(t, &self.classnames[c]))
            .collect()
    }

    /// The calibration caption of class `c` (its first template).
    pub fn caption(&self, c: usize) -> String {
        Self::render(&self.templates[0], &self.classnames[c])
    }

    /// Checks the lists are usable for a dataset with `classes` labels.
    pub fn check(&self, classes: Option<usize>, origin: &std::path::Path) -> Result<(), DataError> {
        let bad = |reason: String| DataError::Invalid {
            path: origin.to_path_buf(),
            reason,
        };
        if self.classnames.is_empty() || self.templates.is_empty() {
            return Err(bad("class names and templates must not be empty".into()));
        }
        if let Some(t) = self
            .templates
            .iter()
            .find(|t| t.matches("{c}").count() != 1)
        {
            return Err(bad(format!(
                "template {t:?} must contain `{{c}}` exactly once"
            )));
        }
        if let Some(n) = classes
            && n != self.classnames.len()
        {
            return Err(bad(format!(
                "the data has {n} classes but {} class names are given",
                self.classnames.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_counts_match_the_spec() {
        let expect = [
            ("mnist", 10, 1),
            ("svhn", 10, 1),
            ("cifar10", 10, 18),
            ("cifar100", 100, 18),
            ("cars", 196, 8),
            ("gtsrb", 43, 3),
            ("flowers102", 102, 1),
            ("food101", 101, 1),
            ("eurosat", 10, 3),
            ("sun397", 397, 2),
            ("resisc45", 45, 18),
            ("dtd", 47, 8),
        ];
        assert_eq!(Prompts::builtin_names().count(), expect.len());
        for (name, c, t) in expect {
            let p = Prompts::builtin(name).unwrap();
            assert_eq!((p.classnames.len(), p.templates.len()), (c, t), "{name}");
            p.check(Some(c), std::path::Path::new(name)).unwrap();
            let unique: std::collections::BTreeSet<_> = p.classnames.iter().collect();
            assert_eq!(unique.len(), c, "{name} has duplicate class names");
        }
        let food = Prompts::builtin("food101").unwrap();
        assert_eq!(food.classnames[16], "Cheesecake");
        assert_eq!(
            Prompts::builtin("mnist").unwrap().caption(3),
            "a photo of the number: \"3\"."
        );
    }
}
