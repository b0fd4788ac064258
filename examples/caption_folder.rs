//! Every picture in a folder captioned into a JSONL file (`{"image": …, "caption": …}` per
//! line), with a progress bar on stderr. Resumable: pictures already in the output are
//! skipped, so a run that was stopped goes on where it was; each line is written and flushed
//! as its caption is done.
//!
//! ```sh
//! cargo run --release --example caption_folder -- --model DIR --dir photos/ \
//!     --out captions.jsonl [--prompt "Describe this picture in one sentence."] [--batch 4]
//! ```

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{Value as Json, json};

const EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "gif", "bmp"];

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    model: common::ModelArgs,
    /// The folder of pictures (not recursive).
    #[arg(long)]
    dir: PathBuf,
    /// The JSONL file to write (appended to; pictures already in it are skipped).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "Describe this picture in one sentence.")]
    prompt: String,
    /// Pictures captioned together.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
}

/// The pictures of `dir`, sorted by name.
fn pictures(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if path.is_file() && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The pictures already captioned in `out` (a malformed last line — a run killed while
/// writing — is ignored, and its picture captioned again).
fn done(out: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Json>(line).ok())
        .filter_map(|row| row["image"].as_str().map(str::to_string))
        .collect()
}

/// Captions what is not yet in `args.out`; returns how many it captioned.
fn run(args: &Args) -> Result<usize> {
    let all = pictures(&args.dir)?;
    let seen = done(&args.out);
    let todo: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| !seen.contains(&p.display().to_string()))
        .collect();
    eprintln!(
        "{} pictures to caption ({} already in {})",
        todo.len(),
        seen.len(),
        args.out.display()
    );
    if todo.is_empty() {
        return Ok(0);
    }
    let loaded = args.model.load()?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    // A line cut off by a killed run must not swallow the next one.
    let text = std::fs::read_to_string(&args.out).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        writeln!(file)?;
    }
    let started = Instant::now();
    for (i, chunk) in todo.chunks(args.batch.max(1)).enumerate() {
        let conversations: Vec<Json> = chunk
            .iter()
            .map(|p| {
                json!([{"role": "user", "content": [
                    {"type": "image", "image": p.display().to_string()},
                    {"type": "text", "text": args.prompt},
                ]}])
            })
            .collect();
        let captions =
            common::answer(&loaded, &conversations, args.max_new_tokens, &mut |_, _| {})?;
        for (path, caption) in chunk.iter().zip(captions) {
            let row = json!({"image": path.display().to_string(), "caption": caption.trim()});
            writeln!(file, "{row}")?;
        }
        file.flush()?;
        let done = (i * args.batch.max(1) + chunk.len()).min(todo.len());
        let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r[{:<30}] {done}/{} pictures, {rate:.2}/s, ETA {:.0} s",
            "#".repeat(30 * done / todo.len()),
            todo.len(),
            (todo.len() - done) as f64 / rate.max(1e-9)
        );
    }
    eprintln!();
    Ok(todo.len())
}

fn main() -> Result<()> {
    run(&Args::parse()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_a_folder_and_resumes_where_it_stopped() {
        let dir = std::env::temp_dir().join(format!("nuri-caption-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pics = dir.join("pics");
        std::fs::create_dir_all(&pics).expect("dir");
        for name in ["photo.jpg", "rgb_odd.png", "image.webp"] {
            std::fs::copy(
                common::fixtures().join("images").join(name),
                pics.join(name),
            )
            .expect("copy");
        }
        std::fs::write(pics.join("notes.txt"), "not a picture").expect("write");
        let out = dir.join("captions.jsonl");
        let args = Args {
            model: common::model_args(&common::tiny_checkpoint()),
            dir: pics.clone(),
            out: out.clone(),
            prompt: "Describe.".into(),
            batch: 2,
            max_new_tokens: 3,
        };
        assert_eq!(run(&args).expect("runs"), 3);
        let lines: Vec<String> = std::fs::read_to_string(&out)
            .expect("out")
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(lines.len(), 3);
        // A killed run: the last line cut off in the middle. The rerun captions only that one.
        let cut = format!(
            "{}\n{}\n{}",
            lines[0],
            lines[1],
            &lines[2][..lines[2].len() / 2]
        );
        std::fs::write(&out, cut).expect("write");
        assert_eq!(run(&args).expect("resumes"), 1);
        let rows: Vec<Json> = std::fs::read_to_string(&out)
            .expect("out")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let images: HashSet<String> = rows
            .iter()
            .map(|r| r["image"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(images.len(), 3, "{rows:?}");
        // Nothing left: no model is even loaded.
        assert_eq!(run(&args).expect("nothing to do"), 0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
