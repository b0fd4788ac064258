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

const NUMBERS: [(&str, &str); 12] = [
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
    ("ten", "10"),
];

/// The official evaluation's contractions (words are lowercased before they are looked up,
/// so its capitalized keys never match, there as here).
const CONTRACTIONS: [(&str, &str); 120] = [
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldve", "could've"),
    ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt've", "couldn't've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hadn'tve", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("he'dve", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("Id've", "I'd've"),
    ("I'dve", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("isnt", "isn't"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("it'dve", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("'ow'sat", "'ow's'at"),
    ("shant", "shan't"),
    ("shed've", "she'd've"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shouldve", "should've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"),
    ("somebodyd've", "somebody'd've"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someone'dve", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("there'dve", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("they'dve", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("wed've", "we'd've"),
    ("we'dve", "we'd've"),
    ("weve", "we've"),
    ("werent", "weren't"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("who'dve", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldve", "would've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"),
    ("yall", "y'all"),
    ("yall'll", "y'all'll"),
    ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'all'dve", "y'all'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("you'dve", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// How many periods the official code removes at most (it passes `re.UNICODE`, 32, where
/// `re.sub` takes its count).
const PERIODS_REMOVED: usize = 32;

/// An answer as VQAv2's evaluation compares it.
pub fn normalize(answer: &str) -> String {
    let text = answer.replace(['\n', '\t'], " ");
    let text = text.trim();
    let digit = |c: Option<&char>| c.is_some_and(|c| c.is_numeric());
    // A comma between digits (`1,000`) anywhere makes every punctuation mark vanish rather
    // than become a space, as a mark next to a space does.
    let chars: Vec<char> = text.chars().collect();
    let comma_in_number = (1..chars.len().saturating_sub(1))
        .any(|i| chars[i] == ',' && digit(chars.get(i - 1)) && digit(chars.get(i + 1)));
    let mut out = text.to_string();
    for p in PUNCT {
        let spaced = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        out = out.replace(p, if spaced || comma_in_number { "" } else { " " });
    }
    // A period goes unless a digit is on either side of it (`2.5`, `3.`), the first 32.
    let chars: Vec<char> = out.chars().collect();
    let mut removed = 0;
    let mut kept = String::with_capacity(out.len());
    for (i, &c) in chars.iter().enumerate() {
        let number = (i > 0 && digit(chars.get(i - 1))) || digit(chars.get(i + 1));
        if c == '.' && !number && removed < PERIODS_REMOVED {
            removed += 1;
            continue;
        }
        kept.push(c);
    }
    let lower = kept.to_lowercase();
    let words: Vec<&str> = lower
        .split_whitespace()
        .map(|w| NUMBERS.iter().find(|(k, _)| *k == w).map_or(w, |(_, v)| v))
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(|w| {
            CONTRACTIONS
                .iter()
                .find(|(k, _)| *k == w)
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

/// ANLS of `prediction` against `references`, as VLMEvalKit computes it: per reference the
/// edit distance between the two lowercased, space-collapsed texts over the longer of the
/// two as written; the best reference's 1 − that, or 0 where it falls below 0.5.
pub fn anls(prediction: &str, references: &[String]) -> f64 {
    let clean = |s: &str| -> Vec<char> {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
            .chars()
            .collect()
    };
    let p = clean(prediction);
    let p_len = prediction.to_uppercase().chars().count();
    let best = references
        .iter()
        .map(|r| {
            let longest = p_len.max(r.to_uppercase().chars().count());
            if longest == 0 {
                return 0.0;
            }
            levenshtein(&p, &clean(r)) as f64 / longest as f64
        })
        .fold(f64::INFINITY, f64::min);
    if references.is_empty() || 1.0 - best < 0.5 {
        0.0
    } else {
        1.0 - best
    }
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
        // Exactly half wrong still counts (VLMEvalKit's threshold is on 1 − distance).
        assert_eq!(anls("ab", &refs(&["ax"])), 0.5);
    }

    /// 300 predictions against one, three or ten references, scored by VLMEvalKit's own
    /// VQA evaluation (tools/reference/make_vqa_fixture.py).
    #[test]
    fn the_same_scores_as_vlmevalkit() {
        let cases = crate::eval::reference_cases("vqa.json");
        assert_eq!(cases.len(), 300);
        let mut wrong = Vec::new();
        for c in cases {
            let p = c["prediction"].as_str().expect("prediction");
            let answers: Vec<String> = c["answers"]
                .as_array()
                .expect("answers")
                .iter()
                .map(|a| a.as_str().expect("answer").to_string())
                .collect();
            let normalized = normalize(p);
            if normalized != c["normalized"].as_str().expect("normalized") {
                wrong.push(format!(
                    "normalize({p:?}) = {normalized:?} vs {}",
                    c["normalized"]
                ));
            }
            // One reference: a normalized match here, where VLMEvalKit's leave-one-out
            // formula has no other answer to count and gives 0.
            let expected = c["vqa_score"].as_f64().expect("vqa");
            let got = vqa_accuracy(p, &answers);
            if answers.len() > 1 && (got - expected).abs() > 1e-12 {
                wrong.push(format!("vqa({p:?}, {answers:?}) = {got} vs {expected}"));
            }
            let expected = c["anls"].as_f64().expect("anls");
            let got = anls(p, &answers);
            if (got - expected).abs() > 1e-12 {
                wrong.push(format!("anls({p:?}, {answers:?}) = {got} vs {expected}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} differ:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }
}
