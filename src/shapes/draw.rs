//! The scenes a question is asked about: for each family, objects placed (and moved, or
//! made to appear one after another) so that the family's question has one right answer,
//! and every question the scene can answer with its expected answer.

use super::scene::{
    Color, FRAMES, Kind, Object, RADII, Shape, Side, anywhere, clear_of, moving, on_side, pick,
    uniform,
};
use super::text::{self, Family, Lang, color_answer, count_answer, kind_words, shape_word};
use super::{HELD_OUT, held_out};
use nuri_train::data::SplitMix64;

/// The expected answer of a question.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Answer {
    Color(Color),
    Shape(Shape),
    Side(Side, bool),
    Count(usize),
    Kind(Kind),
}

impl Answer {
    pub(super) fn text(self, lang: Lang) -> String {
        match self {
            Answer::Color(c) => color_answer(c, lang).into(),
            Answer::Shape(s) => shape_word(s, lang).into(),
            Answer::Side(s, moving) => text::side_answer(s, lang, moving).into(),
            Answer::Count(n) => count_answer(n, lang),
            Answer::Kind(k) => kind_words(k, lang),
        }
    }
}

/// One question about a scene, in neither language yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Question {
    pub(super) family: Family,
    pub(super) about: Kind,
    pub(super) answer: Answer,
    /// How many answers a guesser would choose among (for the chance level).
    pub(super) options: usize,
}

/// A picture (one frame) or a clip, and the questions it can answer.
pub(super) struct Scene {
    pub(super) objects: Vec<Object>,
    pub(super) frames: usize,
    pub(super) questions: Vec<Question>,
}

/// Draws kinds: in training never a held-out pair; for the compositional split the first
/// (asked-about) object always is one.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Pairs {
    Seen,
    HeldOut,
}

pub(super) fn any_kind(rng: &mut SplitMix64, pairs: Pairs) -> Kind {
    match pairs {
        Pairs::HeldOut => {
            let (shape, color) = pick(rng, &HELD_OUT);
            Kind { shape, color }
        }
        Pairs::Seen => loop {
            let k = Kind {
                shape: pick(rng, &Shape::ALL),
                color: pick(rng, &Color::ALL),
            };
            if !held_out(k) {
                return k;
            }
        },
    }
}

/// `n` kinds, all different in `distinct` (shape, or shape-and-color), the first drawn with
/// `first`, the others never held out unless `first` is.
pub(super) fn kinds(
    rng: &mut SplitMix64,
    n: usize,
    first: Pairs,
    same: impl Fn(&Kind, &Kind) -> bool,
) -> Vec<Kind> {
    let mut out = vec![any_kind(rng, first)];
    while out.len() < n {
        let k = any_kind(rng, Pairs::Seen);
        if !out.iter().any(|o| same(o, &k)) {
            out.push(k);
        }
    }
    out
}

/// Places still objects at random where they keep clear of each other.
pub(super) fn place_still(
    rng: &mut SplitMix64,
    kinds: &[Kind],
    frames: usize,
) -> Option<Vec<Object>> {
    let mut objects: Vec<Object> = Vec::new();
    for &kind in kinds {
        let radius = pick(rng, &RADII);
        let mut placed = false;
        for _ in 0..100 {
            let at = anywhere(rng, radius);
            let track = vec![Some(at); frames];
            if clear_of(&objects, &track, radius) {
                objects.push(Object {
                    kind,
                    radius,
                    track,
                });
                placed = true;
                break;
            }
        }
        if !placed {
            return None;
        }
    }
    Some(objects)
}

pub(super) fn scene_for(rng: &mut SplitMix64, family: Family, pairs: Pairs) -> Scene {
    loop {
        if let Some(s) = try_scene(rng, family, pairs) {
            return s;
        }
    }
}

pub(super) fn try_scene(rng: &mut SplitMix64, family: Family, pairs: Pairs) -> Option<Scene> {
    match family {
        Family::Color | Family::Shape | Family::Position => lone_still(rng, pairs),
        Family::Direction => lone_moving(rng, pairs),
        Family::ColorOfShape => color_of_shape(rng, pairs),
        Family::Count => count(rng, pairs),
        Family::Moved => moved(rng, pairs),
        Family::AppearedFirst => appeared_first(rng, pairs),
    }
}

/// A question about `about`, with its answer among `options` possible ones.
fn q(family: Family, about: Kind, answer: Answer, options: usize) -> Question {
    Question {
        family,
        about,
        answer,
        options,
    }
}

/// One still object anywhere on one side: its color, shape and side.
fn lone_still(rng: &mut SplitMix64, pairs: Pairs) -> Option<Scene> {
    let kind = any_kind(rng, pairs);
    let side = pick(rng, &Side::ALL);
    let radius = pick(rng, &RADII);
    let at = on_side(rng, side, radius);
    Some(Scene {
        objects: vec![Object::still(kind, radius, at, 1)],
        frames: 1,
        questions: vec![
            q(Family::Color, kind, Answer::Color(kind.color), 6),
            q(Family::Shape, kind, Answer::Shape(kind.shape), 5),
            q(Family::Position, kind, Answer::Side(side, false), 4),
        ],
    })
}

/// One object moving towards one side: its direction, color and shape.
fn lone_moving(rng: &mut SplitMix64, pairs: Pairs) -> Option<Scene> {
    let kind = any_kind(rng, pairs);
    let side = pick(rng, &Side::ALL);
    let radius = pick(rng, &RADII);
    let distance = uniform(rng, 20.0, 30.0);
    Some(Scene {
        objects: vec![Object {
            kind,
            radius,
            track: moving(rng, side, radius, distance, FRAMES),
        }],
        frames: FRAMES,
        questions: vec![
            q(Family::Direction, kind, Answer::Side(side, true), 4),
            q(Family::Color, kind, Answer::Color(kind.color), 6),
            q(Family::Shape, kind, Answer::Shape(kind.shape), 5),
        ],
    })
}

/// 1–3 still objects of different shapes: the color of each.
fn color_of_shape(rng: &mut SplitMix64, pairs: Pairs) -> Option<Scene> {
    let n = 1 + rng.below(3);
    let ks = kinds(rng, n, pairs, |a, b| a.shape == b.shape);
    let objects = place_still(rng, &ks, 1)?;
    let questions = ks
        .iter()
        .map(|&k| q(Family::ColorOfShape, k, Answer::Color(k.color), 6))
        .collect();
    Some(Scene {
        objects,
        frames: 1,
        questions,
    })
}

/// 1–3 objects of one kind among up to two others: how many.
fn count(rng: &mut SplitMix64, pairs: Pairs) -> Option<Scene> {
    let count = 1 + rng.below(3);
    let target = any_kind(rng, pairs);
    let distractors = rng.below(3 - count + 1);
    let mut ks = vec![target; count];
    ks.extend(kinds(rng, distractors + 1, Pairs::Seen, |a, b| a == b)[1..].iter());
    // The distractors must differ from the target too.
    if ks[count..].contains(&target) {
        return None;
    }
    let objects = place_still(rng, &ks, 1)?;
    Some(Scene {
        objects,
        frames: 1,
        questions: vec![q(Family::Count, target, Answer::Count(count), 3)],
    })
}

/// 2–3 objects, one of them moving: which one.
fn moved(rng: &mut SplitMix64, pairs: Pairs) -> Option<Scene> {
    let n = 2 + rng.below(2);
    let ks = kinds(rng, n, pairs, |a, b| a == b);
    // The first kind moves (only it is held out in the compositional split); the
    // objects are stored in a random order so that the mover is not always first.
    let side = pick(rng, &Side::ALL);
    let radius = pick(rng, &RADII);
    let distance = uniform(rng, 18.0, 28.0);
    let mover = Object {
        kind: ks[0],
        radius,
        track: moving(rng, side, radius, distance, FRAMES),
    };
    let mut objects = place_still(rng, &ks[1..], FRAMES)?;
    if !clear_of(&objects, &mover.track, radius) {
        return None;
    }
    let at = rng.below(objects.len() + 1);
    objects.insert(at, mover);
    Some(Scene {
        objects,
        frames: FRAMES,
        questions: vec![q(Family::Moved, ks[0], Answer::Kind(ks[0]), n)],
    })
}

/// 2–3 objects appearing one after another (the first sometimes leaving): which came first.
fn appeared_first(rng: &mut SplitMix64, pairs: Pairs) -> Option<Scene> {
    let n = 2 + rng.below(2);
    let ks = kinds(rng, n, pairs, |a, b| a == b);
    let mut objects = place_still(rng, &ks, FRAMES)?;
    // Appearance frames on tubelet boundaries (pairs of frames), all different; the
    // first kind appears first. Sometimes the first one leaves before the end.
    let mut starts: Vec<usize> = vec![2, 4, 6];
    rng.shuffle(&mut starts);
    let mut starts = starts[..n - 1].to_vec();
    starts.sort();
    let first = 2 * rng.below(starts[0] / 2);
    let leaves = (rng.below(3) == 0).then(|| first + 4 + 2 * rng.below(2));
    for (i, o) in objects.iter_mut().enumerate() {
        let from = if i == 0 { first } else { starts[i - 1] };
        for (f, at) in o.track.iter_mut().enumerate() {
            let gone = i == 0 && leaves.is_some_and(|l| f >= l);
            if f < from || gone {
                *at = None;
            }
        }
    }
    // Drawing order is random too.
    rng.shuffle(&mut objects);
    Some(Scene {
        objects,
        frames: FRAMES,
        questions: vec![q(Family::AppearedFirst, ks[0], Answer::Kind(ks[0]), n)],
    })
}
