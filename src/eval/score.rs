//! Predictions scored: the chosen letter (multiple choice) or the VQA/ANLS score, per
//! category, per second-level category and overall; with CircularEval, a question counts
//! as right only when every rotation of its options was answered right.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value as Json, json};

use super::extract::{NO_ANSWER, choice};
use super::items::{Item, Task};
use super::vqa::{Metric, anls, vqa_accuracy};

/// One question's result.
#[derive(Debug, Clone)]
pub struct Scored<'a> {
    pub item: &'a Item,
    pub prediction: Option<&'a str>,
    /// The letter read from the answer (multiple choice).
    pub chosen: Option<char>,
    /// 0..=1; `None` when the question has no reference answer.
    pub score: Option<f64>,
    /// The generation's error, when it failed (scored 0).
    pub error: Option<&'a str>,
}

/// Scores every item that has a prediction in `done`.
pub fn score<'a>(
    items: &'a [Item],
    done: &'a HashMap<String, Json>,
    task: Task,
    metric: Metric,
) -> Vec<Scored<'a>> {
    items
        .iter()
        .filter_map(|item| {
            let p = done.get(&item.key)?;
            let prediction = p["prediction"].as_str();
            let error = p["error"].as_str();
            let chosen = (task == Task::MultipleChoice)
                .then(|| prediction.map_or(NO_ANSWER, |a| choice(a, &item.options)));
            let score = (!item.answers.is_empty()).then(|| match (task, prediction) {
                (_, None) => 0.0,
                (Task::MultipleChoice, Some(_)) => f64::from(u8::from(
                    chosen.is_some_and(|c| item.answers[0].starts_with(c)),
                )),
                (Task::Vqa, Some(a)) => match metric {
                    Metric::Vqa => vqa_accuracy(a, &item.answers),
                    Metric::Anls => anls(a, &item.answers),
                },
            });
            Some(Scored {
                item,
                prediction,
                chosen,
                score,
                error,
            })
        })
        .collect()
}

/// A sum of scores over `n` questions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub n: usize,
    pub sum: f64,
}

impl Tally {
    fn add(&mut self, score: f64) {
        self.n += 1;
        self.sum += score;
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    fn json(&self) -> Json {
        json!({"n": self.n, "accuracy": self.mean()})
    }
}

/// Overall and per-category tallies.
#[derive(Debug, Clone, Default)]
pub struct Tallies {
    pub overall: Tally,
    pub categories: BTreeMap<String, Tally>,
    pub l2: BTreeMap<String, Tally>,
}

impl Tallies {
    fn add(&mut self, item: &Item, score: f64) {
        self.overall.add(score);
        let category = item.category.clone().unwrap_or_else(|| "-".into());
        self.categories.entry(category).or_default().add(score);
        if let Some(l2) = &item.l2 {
            self.l2.entry(l2.clone()).or_default().add(score);
        }
    }

    pub fn json(&self) -> Json {
        let map = |m: &BTreeMap<String, Tally>| {
            Json::Object(m.iter().map(|(k, t)| (k.clone(), t.json())).collect())
        };
        json!({
            "n": self.overall.n,
            "accuracy": self.overall.mean(),
            "categories": map(&self.categories),
            "l2_categories": map(&self.l2),
        })
    }
}

/// Results: every question's first asking (`vanilla`: a rotation made here counts only
/// its unrotated form; a file's own circular copies only the original row), and with
/// CircularEval each question right only if all its rotations are (`circular`).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub vanilla: Tallies,
    pub circular: Option<Tallies>,
    pub asked: usize,
    pub failed: usize,
    pub no_answer: usize,
    pub unscored: usize,
}

pub fn summarize(scored: &[Scored], circular: bool) -> Summary {
    let mut s = Summary {
        asked: scored.len(),
        ..Default::default()
    };
    // Per group: its first item and whether all its rotations were right.
    let mut groups: BTreeMap<&str, (&Item, bool)> = BTreeMap::new();
    for r in scored {
        s.failed += usize::from(r.error.is_some());
        // A failed generation is counted as failed, not as an answer with no letter in it.
        s.no_answer += usize::from(r.chosen == Some(NO_ANSWER) && r.error.is_none());
        let Some(score) = r.score else {
            s.unscored += 1;
            continue;
        };
        let first = r.item.first_asking();
        if first {
            s.vanilla.add(r.item, score);
        }
        let g = groups
            .entry(r.item.group.as_str())
            .or_insert((r.item, true));
        if first {
            g.0 = r.item;
        }
        g.1 &= score >= 1.0;
    }
    if circular {
        let mut c = Tallies::default();
        for (item, all_right) in groups.values() {
            c.add(item, f64::from(u8::from(*all_right)));
        }
        s.circular = Some(c);
    }
    s
}

/// The predictions with what was read from them and their scores, one JSON line each.
pub fn lines(scored: &[Scored]) -> String {
    let mut out = String::new();
    for r in scored {
        let line = json!({
            "key": r.item.key,
            "at": r.item.at,
            "category": r.item.category,
            "answer": r.item.answers,
            "prediction": r.prediction,
            "chosen": r.chosen.map(String::from),
            "score": r.score,
            "error": r.error,
        });
        out += &format!("{line}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, group: &str, answer: &str, category: &str) -> Item {
        Item {
            key: key.into(),
            group: group.into(),
            at: "t.tsv:2".into(),
            question: "q".into(),
            hint: None,
            options: ['A', 'B', 'C', 'D']
                .iter()
                .zip(["red", "blue", "green", "gray"])
                .map(|(l, t)| (*l, t.to_string()))
                .collect(),
            answers: vec![answer.into()],
            category: Some(category.into()),
            l2: None,
            media: Vec::new(),
        }
    }

    #[test]
    fn circular_counts_a_question_right_only_when_every_rotation_is() {
        let base = item("7", "7", "B", "color");
        let items: Vec<Item> = std::iter::once(Item {
            key: "7@0".into(),
            ..base.clone()
        })
        .chain((1..4).map(|k| base.rotated(k)))
        .chain(std::iter::once(item("8@0", "8", "A", "shape")))
        .collect();
        // blue moves from B to A, D, C as the options turn.
        let answers: Vec<&str> = items.iter().map(|i| i.answers[0].as_str()).collect();
        assert_eq!(answers, ["B", "A", "D", "C", "A"]);
        assert_eq!(items[1].options[0].1, "blue");
        // A thinking model's reasoning names another letter; its answer is what is read.
        let p = |a: &str| serde_json::json!({"prediction": a, "reasoning": "Maybe D? No."});
        let mut done: HashMap<String, Json> = HashMap::new();
        for (i, a) in ["B", "A", "D", "blue"].iter().enumerate() {
            done.insert(items[i].key.clone(), p(a));
        }
        done.insert("8@0".into(), p("A"));
        let scored = score(&items, &done, Task::MultipleChoice, Metric::Vqa);
        // The fourth rotation's answer names blue by its text, at C.
        assert_eq!(scored[3].chosen, Some('C'));
        let s = summarize(&scored, true);
        assert_eq!(s.vanilla.overall, Tally { n: 2, sum: 2.0 });
        let c = s.circular.as_ref().expect("circular");
        assert_eq!(c.overall, Tally { n: 2, sum: 2.0 });
        // One rotation wrong: the question is wrong under CircularEval, right in vanilla.
        done.insert(items[2].key.clone(), p("B"));
        let s = summarize(
            &score(&items, &done, Task::MultipleChoice, Metric::Vqa),
            true,
        );
        assert_eq!(s.vanilla.overall.sum, 2.0);
        let c = s.circular.expect("circular");
        assert_eq!(c.categories["color"], Tally { n: 1, sum: 0.0 });
        assert_eq!(c.categories["shape"], Tally { n: 1, sum: 1.0 });
    }
}
