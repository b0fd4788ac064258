//! A multi-turn conversation with pictures: each line of input is a user turn; `/image PATH`
//! attaches a picture to the next turn, `/reset` starts over, `/exit` ends. The answers stay
//! in the conversation, so later turns can refer to earlier ones.
//!
//! ```sh
//! cargo run --release --example chat -- --model DIR [--device …]
//! ```

mod common;

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use nuri::generate::{TurnMedia, user_message};
use serde_json::{Value as Json, json};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    model: common::ModelArgs,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
}

/// Runs the conversation on `lines`, writing each answer to `out`; returns the messages.
fn run(
    args: &Args,
    lines: impl Iterator<Item = String>,
    out: &mut (dyn FnMut(usize, &str) + Send),
) -> Result<Json> {
    let loaded = args.model.load()?;
    let mut messages: Vec<Json> = Vec::new();
    let mut images: Vec<PathBuf> = Vec::new();
    for line in lines {
        let line = line.trim();
        match line
            .split_once(' ')
            .map_or((line, ""), |(a, b)| (a, b.trim()))
        {
            ("/exit", _) => break,
            ("/reset", _) => {
                messages.clear();
                images.clear();
                continue;
            }
            ("/image", path) if !path.is_empty() => {
                images.push(path.into());
                continue;
            }
            _ if line.is_empty() => continue,
            _ => {}
        }
        let media = TurnMedia {
            images: std::mem::take(&mut images),
            ..TurnMedia::default()
        };
        messages.push(user_message(&media, line));
        let answer =
            common::answer(&loaded, &[json!(messages)], args.max_new_tokens, out)?.remove(0);
        out(0, "\n");
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    Ok(json!(messages))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let stdin = std::io::stdin();
    run(
        &args,
        stdin.lock().lines().map_while(Result::ok),
        &mut common::stream_to_stdout,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_accumulate_with_their_pictures_until_reset() {
        let args = Args {
            model: common::model_args(&common::tiny_checkpoint()),
            max_new_tokens: 3,
        };
        let image = common::fixtures().join("images/rgb_odd.png");
        let turns = |lines: &[&str]| {
            let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            run(&args, lines.into_iter(), &mut |_, _| {}).expect("runs")
        };
        let attach = format!("/image {}", image.display());
        let messages = turns(&[&attach, "What is this?", "이건 무슨 색인가요?"]);
        let list = messages.as_array().expect("messages");
        assert_eq!(list.len(), 4, "{messages}");
        assert!(
            list[0]["content"].to_string().contains("rgb_odd.png"),
            "{messages}"
        );
        assert!(
            !list[2]["content"].to_string().contains("rgb_odd.png"),
            "{messages}"
        );
        assert_eq!(list[3]["role"], "assistant");
        // After a reset only what follows is left; nothing after /exit is asked.
        let messages = turns(&[
            &attach,
            "What is this?",
            "/reset",
            "Hello.",
            "/exit",
            "never",
        ]);
        let list = messages.as_array().expect("messages");
        assert_eq!(list.len(), 2, "{messages}");
        let text = list[0]["content"].to_string();
        assert!(
            text.contains("Hello.") && !text.contains("rgb_odd"),
            "{text}"
        );
    }
}
