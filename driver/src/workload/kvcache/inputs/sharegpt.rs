//! ShareGPT conversations (`--dataset-path FILE.json`, spec §7.2): a JSON
//! list of `{"id": …, "conversations": [{"from": "human", "value": …},
//! {"from": "gpt", "value": …}, …]}`.
//!
//! - Only the first `max_conversations` items are read (default 500).
//! - Messages at positions (0,1), (2,3), … form a turn only when they are
//!   `human` then `gpt`; other pairs are skipped. `turn_number = i/2 + 1`.
//! - Tokenisation: `max(1, characters / 4)` (Unicode scalar values, integer
//!   division), the reference's fallback when tiktoken is not installed.
//!   mlpdrive never uses tiktoken, so counts differ from a reference run
//!   that had it.
//! - The context of a turn is that human message only (not the history);
//!   context is capped at `max_context_tokens` (reference: 16,384, hard-coded)
//!   and generation at `max_generate_tokens` (reference: 2,048).
//!
//! [`requests`] expands conversations into requests for one pass, in a
//! seeded shuffled order; with multi-turn off, every turn is a single-turn
//! request (the reference crashed there).

use std::path::Path;

use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Deserialize;

use super::InputError;

/// The reference's default `--max-conversations`.
pub const DEFAULT_MAX_CONVERSATIONS: usize = 500;
/// The reference's hard-coded caps.
pub const DEFAULT_MAX_CONTEXT_TOKENS: u64 = 16_384;
pub const DEFAULT_MAX_GENERATE_TOKENS: u64 = 2_048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_conversations: usize,
    pub max_context_tokens: u64,
    pub max_generate_tokens: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conversations: DEFAULT_MAX_CONVERSATIONS,
            max_context_tokens: DEFAULT_MAX_CONTEXT_TOKENS,
            max_generate_tokens: DEFAULT_MAX_GENERATE_TOKENS,
        }
    }
}

/// One human → gpt exchange, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// `i / 2 + 1` for the pair starting at message `i`.
    pub turn_number: u32,
    pub context_tokens: u64,
    pub generate_tokens: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The item's `id` (a string, or a number written as text); items
    /// without one are named `conv_<index>`.
    pub id: String,
    /// Valid turns in order (may be empty).
    pub turns: Vec<Turn>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    id: Option<serde_json::Value>,
    conversations: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    from: String,
    value: String,
}

/// The reference's fallback tokeniser: `max(1, characters / 4)`.
pub fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64 / 4).max(1)
}

/// Reads a ShareGPT JSON file.
pub fn load(path: &Path, limits: Limits) -> Result<Vec<Conversation>, InputError> {
    let text = std::fs::read(path).map_err(|e| InputError::new(path, "file", format!("cannot read: {e}")))?;
    parse(path, &text, limits)
}

/// Parses ShareGPT JSON bytes (`path` names it in errors). Errors give the
/// JSON path of the bad value (`[3].conversations[1].value`) and the line
/// and column.
pub fn parse(path: &Path, text: &[u8], limits: Limits) -> Result<Vec<Conversation>, InputError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let items: Vec<serde_json::Value> = Vec::deserialize(&mut de).map_err(|e| {
        InputError::new(
            path,
            format!("line {}, column {}", e.line(), e.column()),
            format!("expected a JSON list of conversations: {e}"),
        )
    })?;
    let mut out = Vec::new();
    for (i, value) in items.into_iter().take(limits.max_conversations).enumerate() {
        let item: Item = serde_path_to_error::deserialize(value)
            .map_err(|e| InputError::new(path, format!("item [{i}].{}", e.path()), e.inner().to_string()))?;
        let id = match item.id {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Number(n)) => n.to_string(),
            None | Some(serde_json::Value::Null) => format!("conv_{i}"),
            Some(other) => {
                return Err(InputError::new(
                    path,
                    format!("item [{i}].id"),
                    format!("expected a string or a number, found {other}"),
                ));
            }
        };
        let turns = item
            .conversations
            .chunks(2)
            .enumerate()
            .filter(|(_, pair)| pair.len() == 2 && pair[0].from == "human" && pair[1].from == "gpt")
            .map(|(k, pair)| Turn {
                turn_number: k as u32 + 1,
                context_tokens: tokens(&pair[0].value).min(limits.max_context_tokens),
                generate_tokens: tokens(&pair[1].value).min(limits.max_generate_tokens),
            })
            .collect();
        out.push(Conversation { id, turns });
    }
    Ok(out)
}

/// One request of a pass over the dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGptRequest {
    /// `Some(conversation id)` with multi-turn on; `None` with it off (each
    /// turn then stands alone and never reloads earlier turns).
    pub conversation_id: Option<String>,
    /// The turn within its conversation with multi-turn on; always 1 with
    /// multi-turn off (a single-turn request).
    pub turn_number: u32,
    /// `{conversation id}_turn_{n}`, the reference's cache key (unique per
    /// turn, with multi-turn on or off).
    pub cache_key: String,
    pub context_tokens: u64,
    pub generate_tokens: u64,
}

/// The requests of pass `pass` (0-based): conversations in a shuffled order
/// drawn from `(seed, pass)`, each turn by turn. Every pass reshuffles, as
/// the reference does when the dataset is exhausted; keys repeat across
/// passes. With `--replay-cycles K`, a workload runs passes `0..K`
/// completely.
pub fn requests(convs: &[Conversation], multi_turn: bool, seed: u64, pass: u64) -> Vec<ShareGptRequest> {
    let mut order: Vec<usize> = (0..convs.len()).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ pass.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // Fisher–Yates.
    for i in (1..order.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut out = Vec::new();
    for &c in &order {
        let conv = &convs[c];
        for t in &conv.turns {
            out.push(ShareGptRequest {
                conversation_id: multi_turn.then(|| conv.id.clone()),
                turn_number: if multi_turn { t.turn_number } else { 1 },
                cache_key: format!("{}_turn_{}", conv.id, t.turn_number),
                context_tokens: t.context_tokens,
                generate_tokens: t.generate_tokens,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str, limits: Limits) -> Result<Vec<Conversation>, InputError> {
        parse(Path::new("s.json"), text.as_bytes(), limits)
    }

    const DATA: &str = r#"[
      {"id": "abc", "conversations": [
        {"from": "human", "value": "12345678"},
        {"from": "gpt", "value": "123"},
        {"from": "gpt", "value": "out of order"},
        {"from": "human", "value": "x"},
        {"from": "human", "value": "ééééééééééééé"},
        {"from": "gpt", "value": "1234567890123456"}
      ]},
      {"id": 7, "conversations": [{"from": "human", "value": "hi"}]},
      {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}
    ]"#;

    #[test]
    fn turns_pair_human_then_gpt_with_the_fallback_tokeniser() {
        let c = p(DATA, Limits::default()).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].id, "abc");
        assert_eq!(
            c[0].turns,
            [
                Turn { turn_number: 1, context_tokens: 2, generate_tokens: 1 },
                // Positions (2,3) are gpt, human: not a turn.
                Turn { turn_number: 3, context_tokens: 3, generate_tokens: 4 },
            ]
        );
        assert_eq!((c[1].id.as_str(), c[1].turns.len()), ("7", 0), "a lone message is no turn");
        assert_eq!(c[2].id, "conv_2");
        let capped = p(DATA, Limits { max_conversations: 1, max_context_tokens: 2, max_generate_tokens: 3 }).unwrap();
        assert_eq!(capped.len(), 1);
        assert_eq!((capped[0].turns[1].context_tokens, capped[0].turns[1].generate_tokens), (2, 3));
    }

    #[test]
    fn multi_turn_off_gives_single_turn_requests_instead_of_crashing() {
        let c = p(DATA, Limits::default()).unwrap();
        let on = requests(&c, true, 42, 0);
        let off = requests(&c, false, 42, 0);
        assert_eq!(on.len(), 3);
        assert_eq!(off.len(), 3);
        assert!(off.iter().all(|r| r.turn_number == 1 && r.conversation_id.is_none()));
        let key3 = on.iter().find(|r| r.cache_key == "abc_turn_3").unwrap();
        assert_eq!((key3.turn_number, key3.conversation_id.as_deref()), (3, Some("abc")));
        assert!(off.iter().any(|r| r.cache_key == "abc_turn_3"), "keys stay unique per turn");
        // Turns of a conversation stay in order; passes reshuffle
        // deterministically.
        let abc: Vec<u32> = on.iter().filter(|r| r.cache_key.starts_with("abc")).map(|r| r.turn_number).collect();
        assert_eq!(abc, [1, 3]);
        assert_eq!(requests(&c, true, 42, 5), requests(&c, true, 42, 5));
        let orders: std::collections::HashSet<Vec<String>> =
            (0..20).map(|pass| requests(&c, true, 42, pass).into_iter().map(|r| r.cache_key).collect()).collect();
        assert!(orders.len() > 1, "passes are reshuffled");
    }

    #[test]
    fn malformed_json_names_the_place() {
        let e = p("[{\"id\": 1, \"conversations\": [}]", Limits::default()).unwrap_err().to_string();
        assert!(e.starts_with("s.json: line 1, column"), "{e}");
        let e = p(r#"[{"id": 1, "conversations": [{"from": "human", "value": 5}]}]"#, Limits::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("item [0].conversations[0].value") && e.contains("invalid type"), "{e}");
        let e = p(r#"[{"id": 1}]"#, Limits::default()).unwrap_err().to_string();
        assert!(e.contains("item [0]") && e.contains("conversations"), "{e}");
        let e = p(r#"{"id": 1}"#, Limits::default()).unwrap_err().to_string();
        assert!(e.contains("expected a JSON list"), "{e}");
        let e = p(r#"[{"id": [1], "conversations": []}]"#, Limits::default()).unwrap_err().to_string();
        assert!(e.contains("item [0].id"), "{e}");
    }
}
