//! The CRI's list filters.

use std::collections::HashMap;

/// Every selector label is present with its value.
pub(crate) fn labels_match(
    selector: &HashMap<String, String>,
    labels: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_needs_every_label_with_its_value() {
        let labels: HashMap<_, _> = [("a".to_string(), "1".to_string())].into();
        assert!(labels_match(&HashMap::new(), &labels));
        assert!(labels_match(&labels.clone(), &labels));
        let other: HashMap<_, _> = [("a".to_string(), "2".to_string())].into();
        assert!(!labels_match(&other, &labels));
        let missing: HashMap<_, _> = [("b".to_string(), "1".to_string())].into();
        assert!(!labels_match(&missing, &labels));
    }
}
