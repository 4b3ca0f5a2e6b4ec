//! A Space's prompts: inline, from a prompt file (JSON Lines) or expanded
//! from a template and its variables, each with an optional reference
//! answer and a difficulty tier; every error placed at its span.

use judge::files::{SpaceFiles, check_name};
use judge::spec::SpecError;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// Prompts a Space may hold.
pub const MAX_PROMPTS: usize = 100_000;

/// Characters of one prompt.
pub const MAX_PROMPT_CHARS: usize = 8_000;

/// Bytes of all of a Space's prompts and references together.
pub const MAX_PROMPTS_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PromptsFile {
    inline: Option<Spanned<Vec<InlinePrompt>>>,
    file: Option<Spanned<String>>,
    template: Option<Spanned<String>>,
    reference_template: Option<Spanned<String>>,
    variables: Option<Spanned<BTreeMap<String, Vec<String>>>>,
    /// Per template variable, one tier per value; a prompt's tier is the
    /// highest of its values' tiers.
    tiers: Option<Spanned<BTreeMap<String, Vec<u32>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum InlinePrompt {
    Text(String),
    WithReference { prompt: String, reference: Option<String> },
}

/// One prompt with its optional reference answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PromptItem {
    pub prompt: String,
    pub reference: Option<String>,
    /// Difficulty tier, 0 the easiest (GRPO's curriculum opens the tiers
    /// one by one as the agent improves).
    pub tier: u32,
}

/// The highest difficulty tier a prompt may declare.
pub const MAX_TIER: u32 = 15;

pub(super) fn load_prompts(
    p: &Spanned<PromptsFile>,
    files: &SpaceFiles,
    errors: &mut Vec<SpecError>,
) -> Vec<PromptItem> {
    let s = p.get_ref();
    let given = [s.inline.is_some(), s.file.is_some(), s.template.is_some()].iter().filter(|&&g| g).count();
    if given != 1 {
        errors.push(SpecError::new(p.span(), "[prompts] needs exactly one of `inline`, `file`, `template`"));
        return Vec::new();
    }
    if s.template.is_none() && (s.variables.is_some() || s.reference_template.is_some() || s.tiers.is_some()) {
        errors.push(SpecError::new(p.span(), "`variables`, `reference_template` and `tiers` go with `template`"));
    }
    if let (Some(tiers), Some(vars)) = (&s.tiers, &s.variables) {
        for (name, list) in tiers.get_ref() {
            match vars.get_ref().get(name) {
                None => errors.push(SpecError::new(
                    tiers.span(),
                    format!("tiers names `{name}`, which is not a variable of the template"),
                )),
                Some(values) if values.len() != list.len() => errors.push(SpecError::new(
                    tiers.span(),
                    format!("tiers.{name} has {} tiers for the variable's {} values", list.len(), values.len()),
                )),
                Some(_) if list.iter().any(|&t| t > MAX_TIER) => errors.push(SpecError::new(
                    tiers.span(),
                    format!("tiers.{name}: a tier is above the highest, {MAX_TIER}"),
                )),
                Some(_) => {}
            }
        }
    }
    let mut items = Vec::new();
    if let Some(inline) = &s.inline {
        for item in inline.get_ref() {
            items.push(match item {
                InlinePrompt::Text(t) => PromptItem { prompt: t.clone(), reference: None, tier: 0 },
                InlinePrompt::WithReference { prompt, reference } => {
                    PromptItem { prompt: prompt.clone(), reference: reference.clone(), tier: 0 }
                }
            });
        }
        check_items(&items, inline.span(), errors);
    }
    if let Some(file) = &s.file {
        let name = file.get_ref();
        match check_name(name).map(|()| files.get(name)) {
            Err(e) => errors.push(SpecError::new(file.span(), format!("[prompts] file: {e}"))),
            Ok(None) => errors.push(SpecError::new(
                file.span(),
                format!("prompt file {name:?} is not among the Space's files (send it in `files`)"),
            )),
            Ok(Some(text)) => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Line {
                    prompt: String,
                    reference: Option<String>,
                    #[serde(default)]
                    tier: u32,
                }
                for (n, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    match serde_json::from_str::<Line>(line) {
                        Ok(l) if l.tier > MAX_TIER => {
                            errors.push(SpecError::new(
                                file.span(),
                                format!("{name}:{}: tier {} is above the highest, {MAX_TIER}", n + 1, l.tier),
                            ));
                            break;
                        }
                        Ok(l) => items.push(PromptItem { prompt: l.prompt, reference: l.reference, tier: l.tier }),
                        Err(e) => {
                            errors.push(SpecError::new(file.span(), format!("{name}:{}: {e}", n + 1)));
                            break;
                        }
                    }
                }
                check_items(&items, file.span(), errors);
            }
        }
    }
    if let Some(template) = &s.template {
        let vars = s.variables.as_ref().map(|v| v.get_ref().clone()).unwrap_or_default();
        let names = placeholders(template.get_ref());
        for name in &names {
            if !vars.contains_key(name) {
                errors.push(SpecError::new(
                    template.span(),
                    format!("template uses {{{name}}}, which has no values in [prompts.variables]"),
                ));
            }
        }
        if let Some(r) = &s.reference_template {
            for name in placeholders(r.get_ref()) {
                if !vars.contains_key(&name) {
                    errors.push(SpecError::new(
                        r.span(),
                        format!("reference_template uses {{{name}}}, which has no values"),
                    ));
                }
            }
        }
        if let Some(v) = &s.variables
            && let Some((name, _)) = v.get_ref().iter().find(|(_, values)| values.is_empty())
        {
            errors.push(SpecError::new(v.span(), format!("variable {name} has no values")));
        }
        // The count first, without overflow: nothing is built for a
        // product too large.
        let count = names
            .iter()
            .try_fold(1usize, |n, name| n.checked_mul(vars.get(name).map_or(0, Vec::len)))
            .filter(|&n| n <= MAX_PROMPTS);
        match count {
            None => errors.push(SpecError::new(
                template.span(),
                format!("the template makes more than {MAX_PROMPTS} prompts (the product of its variables' counts)"),
            )),
            Some(count) if errors.is_empty() => {
                let tiers = s.tiers.as_ref().map(|t| t.get_ref().clone()).unwrap_or_default();
                let grid = Grid { names: &names, vars: &vars, tiers: &tiers, count };
                expand(template, s.reference_template.as_ref(), grid, &mut items, errors)
            }
            Some(_) => {}
        }
    }
    items
}

/// A template's variables: their names in order, their values, the tiers
/// their values carry, and how many combinations they make.
#[derive(Clone, Copy)]
struct Grid<'a> {
    names: &'a [String],
    vars: &'a BTreeMap<String, Vec<String>>,
    tiers: &'a BTreeMap<String, Vec<u32>>,
    count: usize,
}

/// Builds the template's prompts one combination at a time, in order,
/// stopping at the first one over `MAX_PROMPT_CHARS` or once their total
/// passes `MAX_PROMPTS_BYTES`: what is built never exceeds the caps by
/// more than one prompt.
fn expand(
    template: &Spanned<String>,
    reference: Option<&Spanned<String>>,
    grid: Grid<'_>,
    items: &mut Vec<PromptItem>,
    errors: &mut Vec<SpecError>,
) {
    let Grid { names, vars, tiers, count } = grid;
    let mut total = 0usize;
    for index in 0..count {
        // The index's digits in the mixed radix of the variables' counts,
        // the last variable varying fastest.
        let mut rest = index;
        let mut combo: BTreeMap<&str, &str> = BTreeMap::new();
        let mut tier = 0u32;
        for name in names.iter().rev() {
            let values = &vars[name];
            let at = rest % values.len();
            combo.insert(name.as_str(), values[at].as_str());
            tier = tier.max(tiers.get(name).and_then(|t| t.get(at)).copied().unwrap_or(0));
            rest /= values.len();
        }
        let prompt = fill(template.get_ref(), &combo);
        let reference = reference.map(|r| fill(r.get_ref(), &combo));
        let chars = prompt.chars().count();
        if chars > MAX_PROMPT_CHARS {
            errors.push(SpecError::new(
                template.span(),
                format!("prompt {} of the template is {chars} characters; at most {MAX_PROMPT_CHARS}", index + 1),
            ));
            return;
        }
        total += prompt.len() + reference.as_ref().map_or(0, String::len);
        if total > MAX_PROMPTS_BYTES {
            errors.push(SpecError::new(
                template.span(),
                format!("the template's prompts pass {MAX_PROMPTS_BYTES} bytes in all (at prompt {})", index + 1),
            ));
            return;
        }
        items.push(PromptItem { prompt, reference, tier });
    }
    check_items(items, template.span(), errors);
}

fn check_items(items: &[PromptItem], span: std::ops::Range<usize>, errors: &mut Vec<SpecError>) {
    if items.is_empty() {
        errors.push(SpecError::new(span, "the Space has no prompts"));
    } else if items.len() > MAX_PROMPTS {
        errors.push(SpecError::new(span, format!("{} prompts; at most {MAX_PROMPTS}", items.len())));
    } else if let Some((i, p)) = items
        .iter()
        .enumerate()
        .find(|(_, p)| p.prompt.trim().is_empty() || p.prompt.chars().count() > MAX_PROMPT_CHARS)
    {
        errors.push(SpecError::new(
            span,
            format!(
                "prompt {} is empty or longer than {MAX_PROMPT_CHARS} characters ({} chars)",
                i + 1,
                p.prompt.chars().count()
            ),
        ));
    }
}

/// `{name}` placeholders in order of first use.
fn placeholders(template: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                if !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !out.iter().any(|n| n == name)
                {
                    out.push(name.to_owned());
                }
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

fn fill(template: &str, values: &BTreeMap<&str, &str>) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}
