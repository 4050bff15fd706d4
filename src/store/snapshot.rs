//! A consistent, sorted copy of the store and its SHOW / backup text form.

use crate::protocol::text_rules;

/// The table at one instant, sorted by key (byte order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The deadlines of the keys that have one (Unix ms), by key.
    deadlines: Vec<(Vec<u8>, u64)>,
}

impl Snapshot {
    pub(crate) fn from_unsorted(
        mut pairs: Vec<(Vec<u8>, Vec<u8>)>,
        mut deadlines: Vec<(Vec<u8>, u64)>,
    ) -> Self {
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        deadlines.sort_unstable();
        Snapshot { pairs, deadlines }
    }

    pub fn pairs(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.pairs
    }

    pub fn deadlines(&self) -> &[(Vec<u8>, u64)] {
        &self.deadlines
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Appends SHOW's text, one `(key, value)` line per pair, to `out`.
    /// Backups use the same bytes, so a `.bck` always equals a SHOW. A key
    /// or value the job format cannot show as it is (a RESP client's) is
    /// quoted ([`text_rules::push_shown`]).
    pub fn render_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.pairs.iter().map(|(k, v)| k.len() + v.len() + 5).sum());
        for (k, v) in &self.pairs {
            out.push(b'(');
            text_rules::push_shown(out, k);
            out.extend_from_slice(b", ");
            text_rules::push_shown(out, v);
            out.extend_from_slice(b")\n");
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_show_format() {
        let s = Snapshot::from_unsorted(
            vec![("b".into(), "2".into()), ("a".into(), "1".into())],
            Vec::new(),
        );
        assert_eq!(s.render(), b"(a, 1)\n(b, 2)\n");
        assert!(Snapshot::default().render().is_empty());
        let odd = Snapshot::from_unsorted(vec![(b"k".to_vec(), b"a b\n".to_vec())], Vec::new());
        assert_eq!(odd.render(), b"(k, \"a b\\n\")\n");
    }
}
