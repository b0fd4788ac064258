//! Short-answer scoring: VQAv2's normalized match (punctuation, number words, articles and
//! contractions as the official evaluation treats them; with ten human answers, the
//! average over the ten leave-one-out sets of min(1, matches / 3)) and ANLS for document
//! questions (1 − normalized edit distance, 0 from a distance of 0.5, best reference).

/// How short answers are scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Metric {
    /// VQAv2's normalized match.
    #[default]
    Vqa,
    /// Average normalized Levenshtein similarity (DocVQA, InfoVQA).
    Anls,
}

const PUNCT: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

const NUMBERS: [(&str, &str); 11] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
];

/// The official list's contractions written without their apostrophe.
const CONTRACTIONS: [(&str, &str); 44] = [
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itll", "it'll"),
    ("lets", "let's"),
    ("mightve", "might've"),
    ("mustve", "must've"),
    ("mustnt", "mustn't"),
    ("neednt", "needn't"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("wasnt", "wasn't"),
    ("werent", "weren't"),
    ("whats", "what's"),
    ("whos", "who's"),
    ("wont", "won't"),
    ("wouldnt", "wouldn't"),
    ("youd", "you'd"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// An answer as VQAv2's evaluation compares it.
pub fn normalize(answer: &str) -> String {
    let text = answer.replace(['\n', '\t'], " ");
    let text = text.trim();
    // A comma between digits (`1,000`) makes every punctuation mark vanish rather than
    // become a space, as it does next to a space.
    let comma_in_number = text
        .as_bytes()
        .windows(3)
        .any(|w| w[0].is_ascii_digit() && w[1] == b',' && w[2].is_ascii_digit());
    let mut out = text.to_string();
    for p in PUNCT {
        let spaced = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        out = out.replace(p, if spaced || comma_in_number { "" } else { " " });
    }
    // A period goes unless a digit follows it (`2.5` stays).
    let chars: Vec<char> = out.chars().collect();
    let out: String = chars
        .iter()
        .enumerate()
        .filter(|&(i, &c)| c != '.' || chars.get(i + 1).is_some_and(|n| n.is_ascii_digit()))
        .map(|(_, &c)| c)
        .collect();
    let lower = out.to_lowercase();
    let words: Vec<&str> = lower
        .split_whitespace()
        .map(|w| NUMBERS.iter().find(|(k, _)| *k == w).map_or(w, |(_, v)| v))
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(w))
                .map_or(w, |(_, v)| v)
        })
        .collect();
    words.join(" ")
}

/// VQAv2 accuracy of `prediction` against `references`: one reference is a plain
/// normalized match; several (the ten human answers) score the average over the
/// leave-one-out sets of min(1, matches / 3).
pub fn vqa_accuracy(prediction: &str, references: &[String]) -> f64 {
    let p = normalize(prediction);
    let refs: Vec<String> = references.iter().map(|r| normalize(r)).collect();
    match refs.len() {
        0 => 0.0,
        1 => f64::from(u8::from(p == refs[0])),
        n => {
            let matches = refs.iter().filter(|r| **r == p).count();
            let total: f64 = refs
                .iter()
                .map(|r| {
                    let others = matches - usize::from(*r == p);
                    (others as f64 / 3.0).min(1.0)
                })
                .sum();
            total / n as f64
        }
    }
}

/// ANLS of `prediction` against `references`: the best over the references of 1 − the
/// edit distance over the longer length (lowercased, spaces collapsed), 0 where that
/// distance is 0.5 or more.
pub fn anls(prediction: &str, references: &[String]) -> f64 {
    let clean = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let p: Vec<char> = clean(prediction).chars().collect();
    references
        .iter()
        .map(|r| {
            let r: Vec<char> = clean(r).chars().collect();
            let longest = p.len().max(r.len());
            if longest == 0 {
                return 1.0;
            }
            let d = levenshtein(&p, &r) as f64 / longest as f64;
            if d < 0.5 { 1.0 - d } else { 0.0 }
        })
        .fold(0.0, f64::max)
}

fn levenshtein(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_as_vqav2() {
        assert_eq!(normalize("Two dogs."), "2 dogs");
        assert_eq!(normalize("The cat"), "cat");
        assert_eq!(normalize("dont know"), "don't know");
        assert_eq!(normalize("2.5"), "2.5");
        assert_eq!(normalize("1,000"), "1000");
        assert_eq!(normalize("black-and-white"), "black and white");
        assert_eq!(normalize("yes !"), "yes");
        assert_eq!(normalize("  Red\n"), "red");
    }

    #[test]
    fn vqa_accuracy_counts_humans() {
        let refs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(vqa_accuracy("Two", &refs(&["2"])), 1.0);
        assert_eq!(vqa_accuracy("three", &refs(&["2"])), 0.0);
        // Ten answers: three or more matches are worth 1; one match 0.3 (three of the ten
        // leave-one-out sets lack it).
        let ten = refs(&[
            "red", "red", "red", "blue", "blue", "blue", "blue", "blue", "blue", "pink",
        ]);
        assert_eq!(vqa_accuracy("blue", &ten), 1.0);
        assert!((vqa_accuracy("red", &ten) - 0.9).abs() < 1e-12);
        assert!((vqa_accuracy("pink", &ten) - 0.3).abs() < 1e-12);
        assert_eq!(vqa_accuracy("green", &ten), 0.0);
    }

    #[test]
    fn anls_as_docvqa() {
        let refs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(anls("Invoice", &refs(&["invoice"])), 1.0);
        // One edit in ten characters: 0.9.
        assert!((anls("1234567890", &refs(&["1234567899"])) - 0.9).abs() < 1e-12);
        // Half or more wrong: 0.
        assert_eq!(anls("abcd", &refs(&["wxyz"])), 0.0);
        // The best reference counts.
        assert_eq!(anls("total", &refs(&["sum", "Total"])), 1.0);
        assert_eq!(anls("", &refs(&["x"])), 0.0);
    }
}
