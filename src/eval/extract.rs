//! Reading the chosen option out of an answer, as VLMEvalKit's exact matching does
//! (`can_infer`): a letter standing alone among the words, then an option's text, then
//! no answer (`Z`).

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
/// the answer. A refusal, or a lone `Z`, is no answer.
pub fn by_letter(answer: &str, options: &[(char, String)]) -> Option<char> {
    if REFUSALS.iter().any(|r| answer.contains(r)) {
        return Some(NO_ANSWER);
    }
    let spaced: String = answer
        .chars()
        .map(|c| if ".()[],:;!*#{}".contains(c) { ' ' } else { c })
        .collect();
    let words: Vec<&str> = spaced.split_whitespace().collect();
    let is_word = |l: char| {
        let mut buf = [0u8; 4];
        let l = &*l.encode_utf8(&mut buf);
        words.contains(&l)
    };
    let named: Vec<char> = options
        .iter()
        .map(|(l, _)| *l)
        .filter(|l| is_word(*l))
        .collect();
    match named.as_slice() {
        [one] => Some(*one),
        [] if is_word(NO_ANSWER) => Some(NO_ANSWER),
        _ => None,
    }
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
        // A letter standing alone, with punctuation around it.
        assert_eq!(choice("B", &o), 'B');
        assert_eq!(choice("(C)", &o), 'C');
        assert_eq!(choice("The answer is D.", &o), 'D');
        assert_eq!(choice("**A**: a red circle", &o), 'A');
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
}
