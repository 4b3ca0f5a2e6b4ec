//! A designer's referee as a Rhai script. The script defines
//!
//! ```text
//! fn init(seats, prompt)      // the starting state (any value; a map is usual)
//! fn to_move(state)           // the seat to answer next (round-robin order)
//! fn view(state, seat)        // the text that seat is shown
//! fn play(state, seat, answer)
//!     // #{ state: next, legal: bool, note: "…",
//!     //    scores: () or [one number per seat], reason: "…" }
//! fn pass(state, seat)        // optional: the state after a voided move
//! fn outcome(state)           // optional: at the turn limit, () or
//!                             // #{ scores: [...], reason: "…" }
//! ```
//!
//! Every call runs on a fresh engine, on a script thread of [`sandbox`],
//! with hard limits: operations ([`Limits::max_operations`]), wall time
//! ([`Limits::max_ms`]), memory ([`sandbox::MAX_CALL_BYTES`] where the
//! program meters it), string bytes, array and map sizes (nested values
//! count toward them), call and expression depth; what it returns is
//! refused past [`sandbox::MAX_DEPTH`] levels or [`MAX_STATE_BYTES`], and
//! notes and reasons are cut to [`MAX_NOTE_CHARS`]. There is no I/O: no modules (so no `import` of
//! files), no `eval`, `print` and `debug` go nowhere. A script that breaks
//! a limit, throws, returns the wrong shape or panics the interpreter gives
//! a [`RefereeError::Script`] naming the function and the reason.

use crate::sandbox::{self, MAX_DEPTH};
use crate::{Move, RefereeError};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Map, Scope};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of one script.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// The highest operation limit a Space may set for one call.
pub const MAX_OPERATIONS: u64 = 2_000_000;
/// The longest a Space may let one call run.
pub const MAX_MS: u64 = 1_000;
/// Bytes of any string a script builds (all strings inside one value
/// count together).
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// Elements of any array (nested arrays count toward it).
pub const MAX_ARRAY: usize = 10_000;
/// Entries of any object map.
pub const MAX_MAP: usize = 1_000;

/// A script's limits per call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_operations: u64,
    pub max_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_operations: 200_000, max_ms: 200 }
    }
}

/// A compiled referee script.
#[derive(Clone)]
pub struct Script {
    pub name: String,
    ast: Arc<AST>,
    pub limits: Limits,
    has_pass: bool,
    has_outcome: bool,
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script").field("name", &self.name).field("limits", &self.limits).finish()
    }
}

fn engine(limits: Limits) -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(limits.max_operations);
    engine.set_max_string_size(MAX_STRING_BYTES);
    engine.set_max_array_size(MAX_ARRAY);
    engine.set_max_map_size(MAX_MAP);
    engine.set_max_call_levels(32);
    engine.set_max_expr_depths(64, 32);
    engine.disable_symbol("eval");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    let deadline = Instant::now() + Duration::from_millis(limits.max_ms);
    engine.on_progress(move |ops| {
        if sandbox::over_budget() {
            Some(Dynamic::from(MEMORY_LIMIT))
        } else if ops % 32 == 0 && Instant::now() > deadline {
            Some(Dynamic::from(TIME_LIMIT))
        } else {
            None
        }
    });
    engine
}

const MEMORY_LIMIT: &str = "memory limit";
const TIME_LIMIT: &str = "time limit";

/// Bytes of a game state a script returns, as JSON.
pub const MAX_STATE_BYTES: usize = 256 * 1024;
/// Characters kept of a note or a reason a script returns.
pub const MAX_NOTE_CHARS: usize = 1_000;

/// The script's error in words.
fn describe(err: &EvalAltResult, limits: Limits) -> String {
    match err {
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("it ran more than {} operations", limits.max_operations)
        }
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == MEMORY_LIMIT => {
            format!("it used more than {} MiB of memory", sandbox::MAX_CALL_BYTES >> 20)
        }
        EvalAltResult::ErrorTerminated(_, _) => format!("it ran longer than {} ms", limits.max_ms),
        EvalAltResult::ErrorDataTooLarge(what, _) => format!("it built a value too large ({what})"),
        other => other.to_string(),
    }
}

/// Whether `value` nests at most `left` levels of arrays and maps. Stops at
/// the first level too deep, so it recurses at most `left` times itself.
fn within_depth(value: &Dynamic, left: usize) -> bool {
    if value.is_array() {
        left > 0 && value.as_array_ref().is_ok_and(|a| a.iter().all(|v| within_depth(v, left - 1)))
    } else if value.is_map() {
        left > 0 && value.as_map_ref().is_ok_and(|m| m.values().all(|v| within_depth(v, left - 1)))
    } else {
        true
    }
}

/// `text` cut to [`MAX_NOTE_CHARS`] characters.
fn capped(text: String) -> String {
    match text.char_indices().nth(MAX_NOTE_CHARS) {
        Some((at, _)) => text[..at].to_owned(),
        None => text,
    }
}

impl Script {
    /// Compiles a script and checks that it defines the functions a referee
    /// needs (with their numbers of parameters).
    pub fn compile(name: &str, source: &str, limits: Limits) -> Result<Script, String> {
        if source.len() > MAX_SCRIPT_BYTES {
            return Err(format!("{name} is {} bytes; at most {MAX_SCRIPT_BYTES}", source.len()));
        }
        if limits.max_operations == 0 || limits.max_operations > MAX_OPERATIONS {
            return Err(format!("max_operations must be 1..={MAX_OPERATIONS}"));
        }
        if limits.max_ms == 0 || limits.max_ms > MAX_MS {
            return Err(format!("max_ms must be 1..={MAX_MS}"));
        }
        let ast = engine(limits).compile(source).map_err(|e| {
            let pos = e.1;
            match (pos.line(), pos.position()) {
                (Some(line), Some(col)) => format!("{name}:{line}:{col}: {}", e.0),
                _ => format!("{name}: {}", e.0),
            }
        })?;
        let defined: Vec<(String, usize)> = ast.iter_functions().map(|f| (f.name.to_owned(), f.params.len())).collect();
        let has = |n: &str, arity: usize| defined.iter().any(|(d, a)| d == n && *a == arity);
        let mut missing = Vec::new();
        for (n, arity) in [("init", 2), ("to_move", 1), ("view", 2), ("play", 3)] {
            if !has(n, arity) {
                missing.push(format!("fn {n} with {arity} parameters"));
            }
        }
        if !missing.is_empty() {
            return Err(format!("{name} does not define {}", missing.join(", ")));
        }
        Ok(Script {
            name: name.to_owned(),
            has_pass: has("pass", 2),
            has_outcome: has("outcome", 1),
            ast: Arc::new(ast),
            limits,
        })
    }

    fn error(&self, text: impl std::fmt::Display) -> RefereeError {
        RefereeError::Script(format!("{}: {text}", self.name))
    }

    /// Calls `function` on a script thread (see [`sandbox`]): the state
    /// goes in as a Rhai value there, the result is checked for depth and
    /// read by `read` there too, so nothing a script builds is walked,
    /// converted or dropped on the caller's stack.
    fn call<T: Send + 'static>(
        &self,
        function: &'static str,
        state: Option<&Value>,
        args: Vec<Dynamic>,
        read: impl FnOnce(&Script, Dynamic) -> Result<T, RefereeError> + Send + 'static,
    ) -> Result<T, RefereeError> {
        let script = self.clone();
        let state = state.cloned();
        let run = move || {
            let mut all = Vec::with_capacity(args.len() + 1);
            if let Some(state) = &state {
                all.push(rhai::serde::to_dynamic(state).map_err(|e| script.error(format!("state: {e}")))?);
            }
            all.extend(args);
            let engine = engine(script.limits);
            let mut scope = Scope::new();
            let value = engine
                .call_fn::<Dynamic>(&mut scope, &script.ast, function, all)
                .map_err(|err| script.error(format!("{function}: {}", describe(&err, script.limits))))?;
            if !within_depth(&value, MAX_DEPTH) {
                return Err(script.error(format!("{function} returned a value nested deeper than {MAX_DEPTH} levels")));
            }
            read(&script, value)
        };
        match sandbox::run(run) {
            Ok(out) => out,
            Err(panic) => Err(self.error(format!("{function}: the interpreter panicked ({panic})"))),
        }
    }

    /// A value a script returned, as data: within [`MAX_STATE_BYTES`].
    fn data_of(&self, function: &str, value: &Dynamic) -> Result<Value, RefereeError> {
        let data = rhai::serde::from_dynamic::<Value>(value)
            .map_err(|e| self.error(format!("{function} returned a value that is not data: {e}")))?;
        let bytes = serde_json::to_vec(&data).map(|v| v.len()).unwrap_or(usize::MAX);
        if bytes > MAX_STATE_BYTES {
            return Err(
                self.error(format!("{function} returned a state of {bytes} bytes as JSON; at most {MAX_STATE_BYTES}"))
            );
        }
        Ok(data)
    }

    pub fn init(&self, seats: usize, prompt: &str) -> Result<Value, RefereeError> {
        let args = vec![Dynamic::from(seats as i64), Dynamic::from(prompt.to_owned())];
        self.call("init", None, args, |s, state| s.data_of("init", &state))
    }

    pub fn to_move(&self, state: &Value, seats: usize) -> Result<usize, RefereeError> {
        self.call("to_move", Some(state), Vec::new(), move |s, seat| match seat.as_int() {
            Ok(n) if (0..seats as i64).contains(&n) => Ok(n as usize),
            _ => Err(s.error(format!("to_move returned {seat}, not a seat 0..{seats}"))),
        })
    }

    pub fn view(&self, state: &Value, seat: usize) -> Result<String, RefereeError> {
        self.call("view", Some(state), vec![Dynamic::from(seat as i64)], |s, text| {
            text.into_string().map_err(|t| s.error(format!("view returned a {t}, not a string")))
        })
    }

    fn scores(&self, function: &str, value: &Dynamic) -> Result<Option<Vec<f64>>, RefereeError> {
        if value.is_unit() {
            return Ok(None);
        }
        let bad = || self.error(format!("{function}: scores must be an array of numbers"));
        let array = value.clone().into_array().map_err(|_| bad())?;
        array
            .iter()
            .map(|v| {
                v.as_float()
                    .ok()
                    .or_else(|| v.as_int().ok().map(|i| i as f64))
                    .filter(|f| f.is_finite())
                    .ok_or_else(bad)
            })
            .collect::<Result<Vec<f64>, _>>()
            .map(Some)
    }

    pub fn apply(&self, state: &mut Value, seat: usize, text: &str) -> Result<Move, RefereeError> {
        let args = vec![Dynamic::from(seat as i64), Dynamic::from(text.to_owned())];
        let (mv, next) = self.call("play", Some(state), args, |s, result| {
            let map: Map =
                result.try_cast::<Map>().ok_or_else(|| s.error("play must return a map #{ state, legal, … }"))?;
            let legal = map
                .get("legal")
                .and_then(|v| v.as_bool().ok())
                .ok_or_else(|| s.error("play's result has no boolean `legal`"))?;
            let note = capped(map.get("note").map(|v| v.to_string()).unwrap_or_default());
            let mut mv = if legal { Move::legal(note) } else { Move::illegal(note) };
            let mut next = None;
            if legal {
                let state = map.get("state").ok_or_else(|| s.error("play's result has no `state`"))?;
                next = Some(s.data_of("play", state)?);
                if let Some(scores) = map.get("scores").map(|v| s.scores("play", v)).transpose()?.flatten() {
                    let reason = map
                        .get("reason")
                        .map(|v| capped(v.to_string()))
                        .unwrap_or_else(|| "the referee ended the game".into());
                    mv.end = Some((scores, reason));
                }
            }
            Ok((mv, next))
        })?;
        if let Some(next) = next {
            *state = next;
        }
        Ok(mv)
    }

    pub fn pass(&self, state: &mut Value, seat: usize) -> Result<(), RefereeError> {
        if self.has_pass {
            *state =
                self.call("pass", Some(state), vec![Dynamic::from(seat as i64)], |s, next| s.data_of("pass", &next))?;
        }
        Ok(())
    }

    /// The script's outcome at the turn limit, if it defines one.
    pub fn outcome(&self, state: &Value, seats: usize) -> Result<Option<(Vec<f64>, String)>, RefereeError> {
        if !self.has_outcome {
            return Ok(None);
        }
        self.call("outcome", Some(state), Vec::new(), move |s, result| {
            if result.is_unit() {
                return Ok(None);
            }
            let map: Map =
                result.try_cast::<Map>().ok_or_else(|| s.error("outcome must return () or #{ scores, reason }"))?;
            let scores = map.get("scores").map(|v| s.scores("outcome", v)).transpose()?.flatten();
            match scores {
                Some(scores) if scores.len() == seats => {
                    Ok(Some((scores, capped(map.get("reason").map(|v| v.to_string()).unwrap_or_default()))))
                }
                _ => Err(s.error("outcome's scores must have one number per seat")),
            }
        })
    }

    /// Checks a score list's length against the seats (a script's `play`).
    pub fn check_scores(&self, scores: &[f64], seats: usize) -> Result<(), RefereeError> {
        if scores.len() == seats {
            Ok(())
        } else {
            Err(RefereeError::Script(format!("{}: {} scores for {seats} seats", self.name, scores.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNT_TO_TEN: &str = r#"
        fn init(seats, prompt) { #{ total: 0, seats: seats } }
        fn to_move(state) { state.total % state.seats }
        fn view(state, seat) { `The total is ${state.total}. Add 1, 2 or 3.` }
        fn play(state, seat, answer) {
            let t = answer;
            t.trim();
            if !(t == "1" || t == "2" || t == "3") { return #{ legal: false, note: "add 1, 2 or 3" }; }
            let n = parse_int(t);
            state.total += n;
            if state.total >= 10 {
                let scores = [];
                for s in 0..state.seats { scores.push(if s == seat { 1.0 } else { 0.0 }); }
                return #{ state: state, legal: true, note: `+${n}`, scores: scores, reason: "reached ten" };
            }
            #{ state: state, legal: true, note: `+${n}` }
        }
    "#;

    #[test]
    fn a_script_runs_a_game() {
        let s = Script::compile("count.rhai", COUNT_TO_TEN, Limits::default()).expect("compiles");
        let mut state = s.init(2, "").expect("init");
        assert_eq!(s.to_move(&state, 2).expect("seat"), 0);
        assert!(s.view(&state, 0).expect("view").contains("total is 0"));
        let bad = s.apply(&mut state, 0, "7").expect("runs");
        assert!(!bad.legal && bad.note.contains("1, 2 or 3"));
        for k in 0..3 {
            assert!(s.apply(&mut state, k % 2, "3").expect("runs").end.is_none());
        }
        let end = s.apply(&mut state, 1, "1").expect("runs").end.expect("ten");
        assert_eq!(end.0, vec![0.0, 1.0]);
    }

    #[test]
    fn missing_functions_and_syntax_errors_are_named() {
        let err = Script::compile("x.rhai", "fn init(a, b) { 1 }", Limits::default()).expect_err("incomplete");
        assert!(err.contains("fn to_move with 1 parameters") && err.contains("fn play with 3"), "{err}");
        let err = Script::compile("x.rhai", "fn init(a, b) { 1 +", Limits::default()).expect_err("syntax");
        assert!(err.starts_with("x.rhai:1:"), "{err}");
        let err = Script::compile("x.rhai", &"x".repeat(MAX_SCRIPT_BYTES + 1), Limits::default()).expect_err("big");
        assert!(err.contains("bytes"), "{err}");
    }

    fn runaway(body: &str) -> RefereeError {
        let source = format!(
            "fn deep(n) {{ deep(n + 1) }} fn init(seats, prompt) {{ {body} }} fn to_move(s) {{ 0 }} fn view(s, seat) {{ \"\" }} fn play(s, seat, a) {{ #{{}} }}"
        );
        let s = Script::compile("runaway.rhai", &source, Limits { max_operations: 1_000_000, max_ms: 300 })
            .expect("compiles");
        let started = Instant::now();
        let err = s.init(2, "").expect_err("stopped");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
        err
    }

    #[test]
    fn runaway_scripts_are_stopped_by_their_limits() {
        // Growth stops at a size limit where Rhai checks one, and at the
        // operation or time limit where it does not (a map grown key by key):
        // either way the script ends, and memory is bounded by what that
        // many operations can build.
        let limit = |e: &RefereeError| {
            let t = e.to_string();
            t.contains("operations") || t.contains("longer than") || t.contains("too large")
        };
        for body in [
            "loop { }",
            "let s = \"x\"; loop { s += s; }",
            "let a = []; loop { a.push([1, 2, 3, 4]); }",
            "let a = []; loop { a += [[1, 2, 3, 4]]; }",
            "let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }",
        ] {
            let err = runaway(body);
            assert!(limit(&err), "{body}: {err}");
        }
        assert!(runaway("let s = \"x\"; loop { s += s; }").to_string().contains("too large"));
        let err = runaway("deep(0)");
        assert!(matches!(err, RefereeError::Script(_)), "{err}");
    }

    fn init_with(body: &str, limits: Limits) -> (Result<Value, RefereeError>, Duration) {
        let source = format!(
            "fn init(seats, prompt) {{ {body} }} fn to_move(s) {{ 0 }} fn view(s, seat) {{ \"\" }} fn play(s, seat, a) {{ #{{}} }}"
        );
        let s = Script::compile("hostile.rhai", &source, limits).expect("compiles");
        let started = Instant::now();
        let out = s.init(2, "");
        (out, started.elapsed())
    }

    #[test]
    fn deeply_nested_values_are_refused_not_a_stack_overflow() {
        // Nine thousand arrays in one another: before the script threads,
        // walking this value overflowed a tokio worker's stack and aborted
        // the process. Now the call ends with an error (the value is too
        // deep, or the building ran out of time) and the caller's thread is
        // a small one, as an async worker's is.
        let caller = std::thread::Builder::new().stack_size(256 * 1024);
        let handle = caller
            .spawn(|| {
                let limits = Limits { max_operations: MAX_OPERATIONS, max_ms: MAX_MS };
                let deep = init_with("let a = []; for i in 0..9000 { a = [a]; } a", limits).0;
                let maps = init_with("let m = #{}; for i in 0..900 { m = #{ x: m }; } m", limits).0;
                let shallow = init_with("let a = []; for i in 0..20 { a = [a]; } a", limits).0;
                (deep, maps, shallow)
            })
            .expect("thread");
        let (deep, maps, shallow) = handle.join().expect("no overflow");
        assert!(deep.is_err(), "{deep:?}");
        let maps = maps.expect_err("900 maps deep");
        assert!(maps.to_string().contains("nested deeper than 32"), "{maps}");
        assert!(shallow.is_ok(), "{shallow:?}");
    }

    #[test]
    fn a_call_that_allocates_past_its_budget_is_stopped() {
        assert!(sandbox::metering(), "the tests install the metered allocator");
        // Map keys do not count toward Rhai's size limits: 60 KB keys, one
        // per entry, grow memory without breaking any of them.
        let limits = Limits { max_operations: MAX_OPERATIONS, max_ms: MAX_MS };
        let keys = r#"let s = "x"; while s.len() < 60000 { s += s; } let all = []; let i = 0;
                      loop { let m = #{}; for j in 0..900 { m[s + i + "-" + j] = j; } all.push(m.keys().len()); i += 1; }"#;
        let (out, _) = init_with(keys, limits);
        let err = out.expect_err("stopped");
        assert!(err.to_string().contains("MiB of memory") || err.to_string().contains("too large"), "{err}");
        // Big maps held at every level of a recursion, each under the limits.
        let source = r#"fn grow(s, n) { let m = #{}; for j in 0..900 { m[s + n + "-" + j] = j; } if n > 0 { grow(s, n - 1) } else { loop { } } }
                        fn init(seats, prompt) { let s = "x"; while s.len() < 30000 { s += s; } grow(s, 30) }
                        fn to_move(s) { 0 } fn view(s, seat) { "" } fn play(s, seat, a) { #{} }"#;
        let script = Script::compile("deep-maps.rhai", source, limits).expect("compiles");
        let err = script.init(2, "").expect_err("stopped");
        assert!(err.to_string().contains("MiB of memory"), "{err}");
    }

    #[test]
    fn the_deadline_is_kept_within_twice_the_time_limit() {
        for body in
            ["loop { }", r#"let s = "ab"; while s.len() < 60000 { s += s; } loop { let t = s; t.replace("a", "c"); }"#]
        {
            let (out, took) = init_with(body, Limits { max_operations: MAX_OPERATIONS, max_ms: 100 });
            let err = out.expect_err("stopped").to_string();
            assert!(err.contains("longer than 100 ms") || err.contains("operations"), "{body}: {err}");
            assert!(took < Duration::from_millis(200), "{body}: took {took:?}");
        }
    }

    #[test]
    fn notes_are_capped_before_they_are_kept() {
        let source = r#"fn init(seats, prompt) { #{} } fn to_move(s) { 0 } fn view(s, seat) { "" }
                        fn play(s, seat, a) { let n = "n"; while n.len() < 20000 { n += n; } #{ state: s, legal: true, note: n } }"#;
        let s = Script::compile("note.rhai", source, Limits::default()).expect("compiles");
        let mut state = s.init(2, "").expect("init");
        let mv = s.apply(&mut state, 0, "x").expect("plays");
        assert_eq!(mv.note.chars().count(), MAX_NOTE_CHARS);
    }

    #[test]
    fn scripts_have_no_io() {
        for body in ["import \"/etc/passwd\" as p; 1", "eval(\"1\")", "open_file(\"/etc/passwd\")"] {
            let source = format!(
                "fn init(seats, prompt) {{ {body} }} fn to_move(s) {{ 0 }} fn view(s, seat) {{ \"\" }} fn play(s, seat, a) {{ #{{}} }}"
            );
            let failed = match Script::compile("io.rhai", &source, Limits::default()) {
                Err(_) => true,
                Ok(s) => s.init(2, "").is_err(),
            };
            assert!(failed, "{body} ran");
        }
    }

    #[test]
    fn wrong_shapes_are_script_errors() {
        let source =
            "fn init(seats, prompt) { 1 } fn to_move(s) { 9 } fn view(s, seat) { 3 } fn play(s, seat, a) { 5 }";
        let s = Script::compile("shape.rhai", source, Limits::default()).expect("compiles");
        let mut state = s.init(2, "").expect("init");
        assert!(s.to_move(&state, 2).expect_err("seat 9").to_string().contains("not a seat"));
        assert!(s.view(&state, 0).is_err());
        assert!(s.apply(&mut state, 0, "x").expect_err("shape").to_string().contains("must return a map"));
    }
}
