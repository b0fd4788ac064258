//! `nuri data shapes`: a seeded, bilingual (English/Korean) dataset of pictures and clips of
//! colored shapes, with questions that need seeing (color, shape, count, position) and time
//! (direction of motion, which object moved, which appeared first). Written as real PNG and
//! GIF files plus JSON Lines in the training format (ShareGPT shape with `<image>`/`<video>`).
//!
//! Splits: `train.jsonl` (conversations of several questions about one picture or clip, one
//! language each), `val.jsonl` and `test.jsonl` (one question per line, every question asked
//! in both languages about the same scene), `compositional.jsonl` (the asked-about object's
//! shape-and-color pair never occurs anywhere in training) and `reversed.jsonl` (the test
//! clips of the direction family played backwards, expecting the opposite direction).

mod draw;
pub mod scene;
pub mod text;
pub mod tsv;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nuri_train::data::SplitMix64;
use serde_json::{Value as Json, json};

use draw::{Answer, Pairs, Question, Scene, scene_for};
use scene::{CANVAS, Color, FRAMES, Kind, Shape, palette, pick, render};
use text::{Family, Lang, TEMPLATES, kind_words, question};

/// The shape-color pairs held out of training: one per color, every shape at least once.
pub const HELD_OUT: [(Shape, Color); 6] = [
    (Shape::Circle, Color::Red),
    (Shape::Square, Color::Green),
    (Shape::Triangle, Color::Blue),
    (Shape::Diamond, Color::Yellow),
    (Shape::Cross, Color::Purple),
    (Shape::Circle, Color::Orange),
];

pub fn held_out(kind: Kind) -> bool {
    HELD_OUT.contains(&(kind.shape, kind.color))
}

/// Frames per second of the clips (8 frames = 4 s: sampled at 2 fps, every frame is kept).
pub const CLIP_FPS: u16 = 2;

/// What to generate.
#[derive(clap::Args, Debug, Clone)]
pub struct ShapesOptions {
    #[arg(long, default_value = "data/shapes")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// 1: one object per scene (color, shape, position, direction). 2: adds scenes of 1–3
    /// objects (color of a named shape, count, which moved, which appeared first); level-1
    /// scenes stay in the training mix.
    #[arg(long, default_value_t = 1)]
    pub level: u8,
    /// Training conversations, each about one scene.
    #[arg(long, default_value_t = 20_000)]
    pub train: usize,
    /// Questions per training conversation (1–3). The first is of the family the scene was
    /// drawn for and comes before the picture, like every test question. Later ones only ask
    /// what things look like (color, shape, count): a later question sits at a distance from
    /// the picture that depends on the turns before it, and a small model learns where
    /// things are only from a fixed distance.
    #[arg(long, default_value_t = 1, value_parser = parse_turns)]
    pub turns: usize,
    /// Scenes per family in the validation split (each asked in both languages).
    #[arg(long, default_value_t = 16)]
    pub val: usize,
    /// Scenes per family in the test and compositional splits.
    #[arg(long, default_value_t = 100)]
    pub test: usize,
}

/// `--turns`: questions per training conversation, 1 to 3.
pub fn parse_turns(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ 1..=3) => Ok(n),
        _ => Err(format!(
            "expected 1, 2 or 3 questions per conversation, got `{text}`"
        )),
    }
}

impl ShapesOptions {
    pub fn families(&self) -> Vec<Family> {
        let mut f = Family::LEVEL1.to_vec();
        if self.level >= 2 {
            f.extend(Family::LEVEL2);
        }
        f
    }
}

/// Writes the scene's picture (PNG) or clip (GIF, `CLIP_FPS`), frames reversed if asked.
fn write_media(scene: &Scene, path: &Path, reversed: bool) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if scene.frames == 1 {
        return render(&scene.objects, 0)
            .save(path)
            .with_context(|| format!("writing {}", path.display()));
    }
    let palette = palette();
    let lookup: BTreeMap<[u8; 3], u8> = palette
        .chunks(3)
        .enumerate()
        .map(|(i, c)| ([c[0], c[1], c[2]], i as u8))
        .collect();
    let file = File::create(path).with_context(|| format!("writing {}", path.display()))?;
    let side = CANVAS as u16;
    let mut encoder = gif::Encoder::new(BufWriter::new(file), side, side, &palette)
        .with_context(|| format!("writing {}", path.display()))?;
    encoder.set_repeat(gif::Repeat::Infinite)?;
    let order: Vec<usize> = if reversed {
        (0..scene.frames).rev().collect()
    } else {
        (0..scene.frames).collect()
    };
    for f in order {
        let img = render(&scene.objects, f);
        let indices: Vec<u8> = img.pixels().map(|p| lookup[&p.0]).collect();
        let frame = gif::Frame {
            width: side,
            height: side,
            delay: 100 / CLIP_FPS,
            buffer: std::borrow::Cow::Owned(indices),
            ..Default::default()
        };
        encoder
            .write_frame(&frame)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A JSONL line in the training format.
fn line(
    id: &str,
    media: &str,
    video: bool,
    turns: &[(String, String)],
    meta: serde_json::Map<String, Json>,
) -> Json {
    let tag = if video { "<video>" } else { "<image>" };
    let mut conversations = Vec::new();
    for (i, (q, a)) in turns.iter().enumerate() {
        // The question before the picture: the answer then starts at the same distance
        // from the picture's tokens whatever the question's length, which is what lets the
        // quickstart model learn positions (see `NuriConfig::quickstart`).
        let value = if i == 0 {
            format!("{q}\n{tag}")
        } else {
            q.clone()
        };
        conversations.push(json!({"from": "human", "value": value}));
        conversations.push(json!({"from": "gpt", "value": a}));
    }
    let mut out = serde_json::Map::new();
    out.insert("id".into(), json!(id));
    out.insert((if video { "video" } else { "image" }).into(), json!(media));
    out.extend(meta);
    out.insert("conversations".into(), Json::Array(conversations));
    Json::Object(out)
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct ShapesSummary {
    /// Lines per file name.
    pub lines: BTreeMap<String, usize>,
    pub pictures: usize,
    pub clips: usize,
}

fn writer(path: &Path) -> Result<BufWriter<File>> {
    Ok(BufWriter::new(
        File::create(path).with_context(|| format!("writing {}", path.display()))?,
    ))
}

impl ShapesOptions {
    /// `nuri data shapes`: generates the dataset and prints what it wrote.
    pub fn run(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let summary = generate(self)?;
        println!(
            "wrote {} pictures and {} clips to {} in {:.1} s",
            summary.pictures,
            summary.clips,
            self.out.display(),
            started.elapsed().as_secs_f64()
        );
        for (file, n) in &summary.lines {
            println!("  {file:<20} {n:>6} lines");
        }
        Ok(())
    }
}

/// Generates the dataset into `options.out`.
pub fn generate(options: &ShapesOptions) -> Result<ShapesSummary> {
    if !(1..=2).contains(&options.level) {
        bail!("--level must be 1 or 2, got {}", options.level);
    }
    let out = &options.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut summary = ShapesSummary::default();
    write_train(options, &mut summary)?;
    // Evaluation splits: per family, `n` scenes, the family's question asked in both
    // languages (phrasings drawn independently).
    let eval_splits: [(&str, usize, Pairs, u64); 3] = [
        ("val", options.val, Pairs::Seen, 0x7661_6c00),
        ("test", options.test, Pairs::Seen, 0x7465_7374),
        ("compositional", options.test, Pairs::HeldOut, 0x636f_6d70),
    ];
    for (split, n, pairs, salt) in eval_splits {
        write_eval_split(options, split, n, pairs, salt, &mut summary)?;
    }
    // The test split also as a VLMEvalKit-style multiple-choice TSV (where it is large
    // enough to draw choices from).
    tsv::write_choice_tsv(&out.join("test.jsonl"))?;
    write_info(options, &summary)?;
    Ok(summary)
}

impl ShapesSummary {
    /// Counts a scene's picture or clip.
    fn count_media(&mut self, scene: &Scene) {
        if scene.frames == 1 {
            self.pictures += 1;
        } else {
            self.clips += 1;
        }
    }
}

/// `train.jsonl`: conversations of `turns` questions about one scene, in one language.
fn write_train(options: &ShapesOptions, summary: &mut ShapesSummary) -> Result<()> {
    let out = &options.out;
    let mut rng = SplitMix64(options.seed ^ 0x7472_6169_6e00);
    let mut w = writer(&out.join("train.jsonl"))?;
    for i in 0..options.train {
        // Level 2 keeps a quarter of level-1 scenes in the mix.
        let family = if options.level >= 2 && rng.below(4) != 0 {
            pick(&mut rng, &Family::LEVEL2)
        } else {
            // 20% each for color, shape and position, 40% direction (the slowest to learn).
            match rng.below(5) {
                0 => Family::Color,
                1 => Family::Shape,
                2 => Family::Position,
                _ => Family::Direction,
            }
        };
        let scene = scene_for(&mut rng, family, Pairs::Seen);
        let lang = pick(&mut rng, &Lang::ALL);
        let mut questions = scene.questions.clone();
        rng.shuffle(&mut questions);
        let first = questions
            .iter()
            .position(|q| q.family == family)
            .unwrap_or(0);
        let first = questions.remove(first);
        let questions: Vec<Question> = std::iter::once(first)
            .chain(questions.into_iter().filter(|q| !q.family.reads_places()))
            .take(options.turns.clamp(1, 3))
            .collect();
        let turns: Vec<(String, String)> = questions
            .iter()
            .map(|q| {
                (
                    question(q.family, lang, q.about, rng.below(TEMPLATES)),
                    q.answer.text(lang),
                )
            })
            .collect();
        let video = scene.frames > 1;
        let media = format!("media/train/{i:06}.{}", if video { "gif" } else { "png" });
        write_media(&scene, &out.join(&media), false)?;
        summary.count_media(&scene);
        let mut meta = serde_json::Map::new();
        meta.insert("lang".into(), json!(lang.code()));
        meta.insert(
            "families".into(),
            json!(
                questions
                    .iter()
                    .map(|q| q.family.name())
                    .collect::<Vec<_>>()
            ),
        );
        let record = line(&format!("train-{i:06}"), &media, video, &turns, meta);
        writeln!(w, "{record}")?;
    }
    w.flush()?;
    summary.lines.insert("train.jsonl".into(), options.train);

    Ok(())
}

/// One evaluation split (`val`, `test` or `compositional`; the test split also writes
/// `reversed.jsonl`): `n` scenes per family, each family's question asked in both languages.
fn write_eval_split(
    options: &ShapesOptions,
    split: &str,
    n: usize,
    pairs: Pairs,
    salt: u64,
    summary: &mut ShapesSummary,
) -> Result<()> {
    let out = &options.out;
    let families = options.families();
    let mut rng = SplitMix64(options.seed ^ salt);
    let mut w = writer(&out.join(format!("{split}.jsonl")))?;
    // Validation during training reads the first batches only: its lines are shuffled
    // so that every family is in them.
    let mut held: Vec<Json> = Vec::new();
    let mut reversed = (split == "test")
        .then(|| writer(&out.join("reversed.jsonl")))
        .transpose()?;
    let mut lines = 0;
    for &family in &families {
        for i in 0..n {
            let scene = scene_for(&mut rng, family, pairs);
            let q = *scene
                .questions
                .iter()
                .find(|q| q.family == family)
                .expect("a scene answers its own family");
            let video = scene.frames > 1;
            let stem = format!("{}-{i:04}", family.name());
            let ext = if video { "gif" } else { "png" };
            let media = format!("media/{split}/{stem}.{ext}");
            write_media(&scene, &out.join(&media), false)?;
            summary.count_media(&scene);
            for lang in Lang::ALL {
                let asked = question(family, lang, q.about, rng.below(TEMPLATES));
                let meta = |answer: Answer| {
                    let mut m = serde_json::Map::new();
                    m.insert("family".into(), json!(family.name()));
                    m.insert("lang".into(), json!(lang.code()));
                    m.insert("level".into(), json!(family.level()));
                    m.insert("chance".into(), json!(1.0 / q.options as f64));
                    m.insert("answer".into(), json!(answer.text(lang)));
                    m
                };
                let turns = [(asked.clone(), q.answer.text(lang))];
                let id = format!("{split}-{stem}-{}", lang.code());
                let record = line(&id, &media, video, &turns, meta(q.answer));
                if split == "val" {
                    held.push(record);
                } else {
                    writeln!(w, "{record}")?;
                }
                lines += 1;
                if let (Some(rw), Answer::Side(side, true)) = (reversed.as_mut(), q.answer) {
                    // The same clip backwards: the opposite direction is expected; the
                    // forward answer is kept for the report.
                    let back = format!("media/reversed/{stem}.gif");
                    if lang == Lang::En {
                        write_media(&scene, &out.join(&back), true)?;
                    }
                    let flipped = Answer::Side(side.opposite(), true);
                    let mut m = meta(flipped);
                    m.insert("forward_answer".into(), json!(q.answer.text(lang)));
                    let turns = [(asked, flipped.text(lang))];
                    let id = format!("reversed-{stem}-{}", lang.code());
                    writeln!(rw, "{}", line(&id, &back, true, &turns, m))?;
                    *summary.lines.entry("reversed.jsonl".into()).or_default() += 1;
                }
            }
        }
    }
    rng.shuffle(&mut held);
    for record in held {
        writeln!(w, "{record}")?;
    }
    w.flush()?;
    if let Some(mut rw) = reversed {
        rw.flush()?;
    }
    summary.lines.insert(format!("{split}.jsonl"), lines);
    Ok(())
}

/// `info.json`: how the dataset was made and what it holds.
fn write_info(options: &ShapesOptions, summary: &ShapesSummary) -> Result<()> {
    let out = &options.out;
    let families = options.families();
    let info = json!({
        "generator": "nuri data shapes",
        "seed": options.seed,
        "level": options.level,
        "families": families.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "canvas": CANVAS,
        "frames": FRAMES,
        "clip_fps": CLIP_FPS,
        "held_out_pairs": HELD_OUT.iter().map(|(s, c)| kind_words(Kind { shape: *s, color: *c }, Lang::En)).collect::<Vec<_>>(),
        "lines": summary.lines,
        "pictures": summary.pictures,
        "clips": summary.clips,
    });
    std::fs::write(out.join("info.json"), serde_json::to_string_pretty(&info)?)
        .with_context(|| format!("writing {}", out.join("info.json").display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first question comes before the picture; where-and-when questions are only asked
    /// first (a later turn sits at a varying distance from the picture).
    #[test]
    fn training_conversations_ask_where_and_when_only_first() {
        for turns in [1, 3] {
            let out = std::env::temp_dir()
                .join(format!("nuri-shapes-turns-{turns}-{}", std::process::id()));
            let options = ShapesOptions {
                out: out.clone(),
                seed: 5,
                level: 2,
                train: 120,
                turns,
                val: 1,
                test: 1,
            };
            generate(&options).expect("generates");
            let text = std::fs::read_to_string(out.join("train.jsonl")).expect("written");
            let mut follow_ups = 0;
            for line in text.lines() {
                let record: Json = serde_json::from_str(line).expect("JSON");
                let families: Vec<Family> = record["families"]
                    .as_array()
                    .expect("families")
                    .iter()
                    .map(|f| Family::from_name(f.as_str().unwrap_or("")).expect("a family"))
                    .collect();
                assert!((1..=turns).contains(&families.len()), "{line}");
                assert!(families[1..].iter().all(|f| !f.reads_places()), "{line}");
                follow_ups += families.len() - 1;
                let first = record["conversations"][0]["value"].as_str().expect("text");
                assert!(
                    first.ends_with("\n<image>") || first.ends_with("\n<video>"),
                    "{first}"
                );
            }
            assert_eq!(follow_ups > 0, turns > 1);
            std::fs::remove_dir_all(&out).ok();
        }
    }

    #[test]
    fn scenes_answer_their_questions() {
        let mut rng = SplitMix64(7);
        for _ in 0..50 {
            for family in Family::LEVEL1.into_iter().chain(Family::LEVEL2) {
                let s = scene_for(&mut rng, family, Pairs::Seen);
                assert!(s.objects.iter().all(|o| !held_out(o.kind)));
                let q = s.questions.iter().find(|q| q.family == family).unwrap();
                match q.answer {
                    Answer::Count(n) => {
                        let c = s.objects.iter().filter(|o| o.kind == q.about).count();
                        assert_eq!(c, n);
                    }
                    Answer::Kind(k) if family == Family::Moved => {
                        let movers: Vec<_> = s
                            .objects
                            .iter()
                            .filter(|o| o.track.first() != o.track.last())
                            .collect();
                        assert_eq!(movers.len(), 1);
                        assert_eq!(movers[0].kind, k);
                    }
                    Answer::Kind(k) => {
                        let first = s
                            .objects
                            .iter()
                            .min_by_key(|o| o.track.iter().position(Option::is_some))
                            .unwrap();
                        assert_eq!(first.kind, k);
                    }
                    _ => {}
                }
                let h = s.questions[0].about;
                let c = scene_for(&mut rng, family, Pairs::HeldOut);
                assert!(held_out(c.questions[0].about), "{h:?}");
            }
        }
    }
}
