//! The questions and answers of the shapes dataset in English and Korean: the same facts,
//! several phrasings per question family and language.

use super::scene::{Color, Kind, Shape, Side};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lang {
    En,
    Ko,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Ko];

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ko => "ko",
        }
    }
}

/// What a question asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Level 1 (one object): its color, with its shape named.
    Color,
    /// Level 1: its shape, with its color named.
    Shape,
    /// Level 1: on which side of the picture it is.
    Position,
    /// Level 1 (clip): which way it moves.
    Direction,
    /// Level 2 (1–3 objects of different shapes): the color of the named shape.
    ColorOfShape,
    /// Level 2 (1–3 objects): how many of a color-and-shape kind there are.
    Count,
    /// Level 2 (clip, 2–3 objects): which one moves.
    Moved,
    /// Level 2 (clip, 2–3 objects appearing one after another): which one came first.
    AppearedFirst,
}

impl Family {
    pub const LEVEL1: [Family; 4] = [
        Family::Color,
        Family::Shape,
        Family::Position,
        Family::Direction,
    ];
    pub const LEVEL2: [Family; 4] = [
        Family::ColorOfShape,
        Family::Count,
        Family::Moved,
        Family::AppearedFirst,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Color => "color",
            Family::Shape => "shape",
            Family::Position => "position",
            Family::Direction => "direction",
            Family::ColorOfShape => "color_of_shape",
            Family::Count => "count",
            Family::Moved => "moved",
            Family::AppearedFirst => "appeared_first",
        }
    }

    pub fn from_name(name: &str) -> Option<Family> {
        Family::LEVEL1
            .into_iter()
            .chain(Family::LEVEL2)
            .find(|f| f.name() == name)
    }

    /// Whether the answer depends on where things are in the picture or when in the clip
    /// (rather than on what they look like).
    pub fn reads_places(self) -> bool {
        matches!(
            self,
            Family::Position | Family::Direction | Family::Moved | Family::AppearedFirst
        )
    }

    pub fn level(self) -> u8 {
        if Family::LEVEL1.contains(&self) { 1 } else { 2 }
    }
}

/// Whether a Hangul syllable ends in a final consonant (받침), which picks the particle.
fn has_batchim(word: &str) -> bool {
    word.chars()
        .last()
        .map(|c| {
            let c = c as u32;
            (0xAC00..=0xD7A3).contains(&c) && !(c - 0xAC00).is_multiple_of(28)
        })
        .unwrap_or(false)
}

/// The topic particle: 은 after a final consonant, 는 otherwise.
fn topic(word: &str) -> String {
    format!("{word}{}", if has_batchim(word) { "은" } else { "는" })
}

/// The subject particle: 이 after a final consonant, 가 otherwise.
fn subject(word: &str) -> String {
    format!("{word}{}", if has_batchim(word) { "이" } else { "가" })
}

pub fn shape_word(shape: Shape, lang: Lang) -> &'static str {
    match (lang, shape) {
        (Lang::En, Shape::Circle) => "circle",
        (Lang::En, Shape::Square) => "square",
        (Lang::En, Shape::Triangle) => "triangle",
        (Lang::En, Shape::Diamond) => "diamond",
        (Lang::En, Shape::Cross) => "cross",
        (Lang::Ko, Shape::Circle) => "원",
        (Lang::Ko, Shape::Square) => "사각형",
        (Lang::Ko, Shape::Triangle) => "삼각형",
        (Lang::Ko, Shape::Diamond) => "마름모",
        (Lang::Ko, Shape::Cross) => "십자가",
    }
}

fn plural(shape: Shape) -> &'static str {
    match shape {
        Shape::Cross => "crosses",
        Shape::Circle => "circles",
        Shape::Square => "squares",
        Shape::Triangle => "triangles",
        Shape::Diamond => "diamonds",
    }
}

/// The color as a modifier ("red circle", "빨간 원").
fn color_modifier(color: Color, lang: Lang) -> &'static str {
    match (lang, color) {
        (Lang::En, c) => color_answer(c, Lang::En),
        (Lang::Ko, Color::Red) => "빨간",
        (Lang::Ko, Color::Green) => "초록색",
        (Lang::Ko, Color::Blue) => "파란",
        (Lang::Ko, Color::Yellow) => "노란",
        (Lang::Ko, Color::Purple) => "보라색",
        (Lang::Ko, Color::Orange) => "주황색",
    }
}

/// The color as an answer ("red", "빨간색").
pub fn color_answer(color: Color, lang: Lang) -> &'static str {
    match (lang, color) {
        (Lang::En, Color::Red) => "red",
        (Lang::En, Color::Green) => "green",
        (Lang::En, Color::Blue) => "blue",
        (Lang::En, Color::Yellow) => "yellow",
        (Lang::En, Color::Purple) => "purple",
        (Lang::En, Color::Orange) => "orange",
        (Lang::Ko, Color::Red) => "빨간색",
        (Lang::Ko, Color::Green) => "초록색",
        (Lang::Ko, Color::Blue) => "파란색",
        (Lang::Ko, Color::Yellow) => "노란색",
        (Lang::Ko, Color::Purple) => "보라색",
        (Lang::Ko, Color::Orange) => "주황색",
    }
}

/// "red circle" / "빨간 원".
pub fn kind_words(kind: Kind, lang: Lang) -> String {
    format!(
        "{} {}",
        color_modifier(kind.color, lang),
        shape_word(kind.shape, lang)
    )
}

/// A side as the answer to "where is it" (`moving = false`) or "which way does it move".
pub fn side_answer(side: Side, lang: Lang, moving: bool) -> &'static str {
    match (lang, side, moving) {
        (Lang::En, Side::Left, _) => "left",
        (Lang::En, Side::Right, _) => "right",
        (Lang::En, Side::Top, false) => "top",
        (Lang::En, Side::Bottom, false) => "bottom",
        (Lang::En, Side::Top, true) => "up",
        (Lang::En, Side::Bottom, true) => "down",
        (Lang::Ko, Side::Left, _) => "왼쪽",
        (Lang::Ko, Side::Right, _) => "오른쪽",
        (Lang::Ko, Side::Top, false) => "위쪽",
        (Lang::Ko, Side::Bottom, false) => "아래쪽",
        (Lang::Ko, Side::Top, true) => "위",
        (Lang::Ko, Side::Bottom, true) => "아래",
    }
}

pub fn count_answer(n: usize, lang: Lang) -> String {
    match lang {
        Lang::En => n.to_string(),
        Lang::Ko => format!("{n}개"),
    }
}

/// How many phrasings each family has per language.
pub const TEMPLATES: usize = 3;

/// Phrasing `t` (0..TEMPLATES) of a question about `kind` (the named object; for
/// `Shape` only its color counts, for `Color`/`ColorOfShape` only its shape). Long because
/// it is a table: three phrasings per family and language, side by side.
pub fn question(family: Family, lang: Lang, kind: Kind, t: usize) -> String {
    let shape = shape_word(kind.shape, lang);
    let both = kind_words(kind, lang);
    let color = color_modifier(kind.color, lang);
    let t = t % TEMPLATES;
    match (family, lang) {
        (Family::Color | Family::ColorOfShape, Lang::En) => [
            format!("What color is the {shape}?"),
            format!("Which color does the {shape} have?"),
            format!("Tell me the color of the {shape}."),
        ][t]
            .clone(),
        (Family::Color | Family::ColorOfShape, Lang::Ko) => [
            format!("{} 무슨 색인가요?", topic(shape)),
            format!("{shape}의 색깔은 무엇인가요?"),
            format!("{} 어떤 색이에요?", topic(shape)),
        ][t]
            .clone(),
        (Family::Shape, Lang::En) => [
            format!("What shape is the {color} object?"),
            format!("What is the shape of the {color} figure?"),
            format!("Which shape is {color}?"),
        ][t]
            .clone(),
        (Family::Shape, Lang::Ko) => [
            format!("{color} 도형은 무슨 모양인가요?"),
            format!("{color} 물체의 모양은 무엇인가요?"),
            format!("어떤 도형이 {}인가요?", color_answer(kind.color, Lang::Ko)),
        ][t]
            .clone(),
        (Family::Position, Lang::En) => [
            format!("Where is the {both}?"),
            format!("In which part of the picture is the {both}?"),
            format!("Is the {both} on the left, right, top or bottom?"),
        ][t]
            .clone(),
        (Family::Position, Lang::Ko) => [
            format!("{} 어디에 있나요?", topic(&both)),
            format!("{} 그림의 어느 쪽에 있나요?", topic(&both)),
            format!("{} 있는 위치는 어디인가요?", subject(&both)),
        ][t]
            .clone(),
        (Family::Direction, Lang::En) => [
            format!("Which way does the {both} move?"),
            format!("In what direction is the {both} moving?"),
            format!("Where does the {both} go?"),
        ][t]
            .clone(),
        (Family::Direction, Lang::Ko) => [
            format!("{} 어느 쪽으로 움직이나요?", topic(&both)),
            format!("{} 어느 방향으로 이동하나요?", topic(&both)),
            format!("{} 움직이는 방향은 어디인가요?", subject(&both)),
        ][t]
            .clone(),
        (Family::Count, Lang::En) => {
            let many = format!("{color} {}", plural(kind.shape));
            [
                format!("How many {many} are there?"),
                format!("Count the {many}."),
                format!("How many {many} can you see?"),
            ][t]
                .clone()
        }
        (Family::Count, Lang::Ko) => [
            format!("{} 몇 개인가요?", topic(&both)),
            format!("{} 몇 개 있나요?", subject(&both)),
            format!("그림에 {} 몇 개 보이나요?", subject(&both)),
        ][t]
            .clone(),
        (Family::Moved, Lang::En) => [
            "Which object moves?",
            "Which shape is moving?",
            "What moves in the video?",
        ][t]
            .to_string(),
        (Family::Moved, Lang::Ko) => [
            "어떤 도형이 움직이나요?",
            "움직이는 것은 무엇인가요?",
            "영상에서 움직이는 물체는 무엇인가요?",
        ][t]
            .to_string(),
        (Family::AppearedFirst, Lang::En) => [
            "Which object appears first?",
            "What shows up first in the video?",
            "Which shape appears first?",
        ][t]
            .to_string(),
        (Family::AppearedFirst, Lang::Ko) => [
            "어떤 도형이 먼저 나타나나요?",
            "가장 먼저 나타나는 것은 무엇인가요?",
            "영상에서 처음 나타나는 물체는 무엇인가요?",
        ][t]
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn korean_particles_follow_the_final_consonant() {
        assert_eq!(topic("원"), "원은");
        assert_eq!(topic("마름모"), "마름모는");
        assert_eq!(subject("빨간 원"), "빨간 원이");
        assert_eq!(subject("노란 십자가"), "노란 십자가가");
        let k = Kind {
            shape: Shape::Circle,
            color: Color::Red,
        };
        assert_eq!(
            question(Family::Count, Lang::Ko, k, 0),
            "빨간 원은 몇 개인가요?"
        );
        assert_eq!(
            question(Family::Count, Lang::En, k, 0),
            "How many red circles are there?"
        );
    }
}
