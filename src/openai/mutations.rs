//! Test inputs for the differential tests of what a relay reads: texts a few random
//! edits (a byte removed, inserted or replaced, by JSON's own characters) away from
//! real ones, the same every run.

/// The characters edits insert: JSON's punctuation, digits, the letters of its
/// literals and a few more.
const ALPHABET: &[u8] = b"{}[]\",:\\ 0123456789-+.eEnulltrufasx\t";

/// `each` mutations of every template in turn, from the xorshift state `seed`.
pub struct Mutations<'a> {
    templates: std::slice::Iter<'a, &'a str>,
    current: &'a str,
    left: usize,
    each: usize,
    seed: u64,
}

pub fn mutations<'a>(templates: &'a [&'a str], each: usize, seed: u64) -> Mutations<'a> {
    Mutations { templates: templates.iter(), current: "", left: 0, each, seed }
}

impl Mutations<'_> {
    fn below(&mut self, n: usize) -> usize {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        usize::try_from(self.seed % n as u64).unwrap()
    }
}

impl Iterator for Mutations<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        while self.left == 0 {
            self.current = self.templates.next()?;
            self.left = self.each;
        }
        self.left -= 1;
        let mut bytes = self.current.as_bytes().to_vec();
        for _ in 0..=self.below(2) {
            let at = self.below(bytes.len());
            match self.below(3) {
                0 => drop(bytes.remove(at)),
                1 => bytes.insert(at, ALPHABET[self.below(ALPHABET.len())]),
                _ => bytes[at] = ALPHABET[self.below(ALPHABET.len())],
            }
        }
        Some(bytes)
    }
}
