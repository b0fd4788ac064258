//! Reading the chosen option out of an answer, as VLMEvalKit's exact matching does
//! (`can_infer`, as of its 2026 sources): a letter standing alone among the last words, or
//! after "answer is", then an option's text, then no answer (`Z`).

/// What an answer chose.
pub const NO_ANSWER: char = 'Z';

/// Refusals VLMEvalKit reads as "no answer".
const REFUSALS: [&str; 4] = [
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
];

/// The letter `answer` chose among `options`, or [`NO_ANSWER`].
pub fn choice(answer: &str, options: &[(char, String)]) -> char {
    by_letter(answer, options)
        .or_else(|| by_text(answer, options))
        .unwrap_or(NO_ANSWER)
}

/// A letter: after `.()[],:;!*#{}` become spaces, exactly one option letter is a word of
/// the answer, and its first place is among the last four words; or else the answer says
/// "answer is X" (any case, X one of A–D, possibly in `**`). A refusal, or a lone `Z` and
/// no letter, is no answer.
pub fn by_letter(answer: &str, options: &[(char, String)]) -> Option<char> {
    if REFUSALS.iter().any(|r| answer.contains(r)) {
        return Some(NO_ANSWER);
    }
    let spaced: String = answer
        .chars()
        .map(|c| if ".()[],:;!*#{}".contains(c) { ' ' } else { c })
        .collect();
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let place = |l: char| {
        let mut buf = [0u8; 4];
        let l = &*l.encode_utf8(&mut buf);
        words.iter().position(|w| *w == l)
    };
    let named: Vec<(char, usize)> = options
        .iter()
        .filter_map(|(l, _)| place(*l).map(|p| (*l, p)))
        .collect();
    match named.as_slice() {
        [(l, p)] if *p + 5 > words.len() => return Some(*l),
        [] if place(NO_ANSWER).is_some() => return Some(NO_ANSWER),
        _ => {}
    }
    answer_is(answer).filter(|l| options.iter().any(|(o, _)| o == l))
}

/// The letter of the first "answer is X" (VLMEvalKit's `(?i)(?:correct\s+)?answer\s+is\s+
/// \**([ABCD])\**`: case-insensitive throughout, so "answer is a…" reads as A, as there).
fn answer_is(answer: &str) -> Option<char> {
    let lower = answer.to_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("answer") {
        from += at + "answer".len();
        let rest = &lower[from..];
        let after_space = rest.trim_start();
        if after_space.len() == rest.len() {
            continue;
        }
        let Some(after_is) = after_space.strip_prefix("is") else {
            continue;
        };
        let letter_part = after_is.trim_start();
        if letter_part.len() == after_is.len() {
            continue;
        }
        if let Some(c) = letter_part.trim_start_matches('*').chars().next()
            && matches!(c, 'a'..='d')
        {
            return Some(c.to_ascii_uppercase());
        }
    }
    None
}

/// An option's text: exactly one option's text (lowercased) is in the lowercased answer,
/// and the answer is not more than twice as long as all options together.
pub fn by_text(answer: &str, options: &[(char, String)]) -> Option<char> {
    let answer = answer.to_lowercase();
    let total: usize = options.iter().map(|(_, t)| t.chars().count()).sum();
    if answer.chars().count() > 2 * total {
        return None;
    }
    let found: Vec<char> = options
        .iter()
        .filter(|(_, t)| answer.contains(&t.to_lowercase()))
        .map(|(l, _)| *l)
        .collect();
    match found.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(texts: &[&str]) -> Vec<(char, String)> {
        texts
            .iter()
            .zip('A'..)
            .map(|(t, l)| (l, t.to_string()))
            .collect()
    }

    #[test]
    fn the_rules_one_by_one() {
        let o = opts(&[
            "a red circle",
            "a blue square",
            "a green star",
            "a gray heart",
        ]);
        // A letter standing alone among the last four words, with punctuation around it.
        assert_eq!(choice("B", &o), 'B');
        assert_eq!(choice("(C)", &o), 'C');
        assert_eq!(choice("The answer is D.", &o), 'D');
        assert_eq!(choice("**A**: a red circle", &o), 'A');
        // Earlier than that it does not count, unless "answer is" names it.
        assert_eq!(
            choice("B because the square in the picture is blue", &o),
            'Z'
        );
        assert_eq!(
            choice(
                "The answer is B because the square in the picture is blue",
                &o
            ),
            'B'
        );
        assert_eq!(
            choice("Not A: the correct answer is **C** here, you see", &o),
            'C'
        );
        // Case-insensitive as VLMEvalKit's pattern is: "answer is a…" reads as A.
        assert_eq!(
            choice("I think the answer is a hexagon, honestly speaking", &o),
            'A'
        );
        // Two letters named: not by letter; the text decides when one option's is there.
        assert_eq!(choice("B or C", &o), 'Z');
        assert_eq!(choice("C, a green star; not B", &o), 'C');
        // A letter inside a word is not a letter ("Bird", "CAT").
        assert_eq!(choice("Bird", &o), 'Z');
        // The option's text, any case.
        assert_eq!(choice("It is a Blue Square", &o), 'B');
        // Two options' texts: no answer.
        assert_eq!(choice("a red circle and a blue square", &o), 'Z');
        // Too long to be matched by text.
        let long = format!("{} a green star", "word ".repeat(40));
        assert_eq!(choice(&long, &o), 'Z');
        // Refusals and a lone Z.
        assert_eq!(choice("Cannot determine the answer from this.", &o), 'Z');
        assert_eq!(by_letter("Z", &o), Some('Z'));
        assert_eq!(choice("", &o), 'Z');
        // A letter the question does not have is not an answer (three options here).
        let three = opts(&["yes", "no", "maybe"]);
        assert_eq!(choice("D", &three), 'Z');
        // Korean answers: the letter, or the option's text.
        let ko = opts(&["빨간색", "파란색", "초록색"]);
        assert_eq!(choice("정답은 B 입니다", &ko), 'B');
        assert_eq!(choice("초록색입니다.", &ko), 'C');
    }

    /// 400 answers (English, Korean, letters, option texts, noise, "answer is …") read by
    /// VLMEvalKit's own `can_infer` (tools/reference/make_extraction_fixture.py).
    #[test]
    fn the_same_letters_as_vlmevalkit() {
        let cases = crate::eval::reference_cases("extraction.json");
        assert_eq!(cases.len(), 400);
        let mut wrong = Vec::new();
        for c in cases {
            let options: Vec<(char, String)> = c["options"]
                .as_array()
                .expect("options")
                .iter()
                .map(|o| {
                    let letter = o[0]
                        .as_str()
                        .and_then(|l| l.chars().next())
                        .expect("letter");
                    (letter, o[1].as_str().expect("text").to_string())
                })
                .collect();
            let answer = c["answer"].as_str().expect("answer");
            let expected = c["expected"]
                .as_str()
                .and_then(|l| l.chars().next())
                .expect("letter");
            let got = choice(answer, &options);
            if got != expected {
                wrong.push(format!("{answer:?} {options:?}: {got} vs {expected}"));
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
