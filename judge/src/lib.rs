//! The judge: rule verifiers and the AI judge turn a match's outputs into a
//! ranking, scores, a confidence and preference pairs.
//!
//! It uses the model through `agent-runtime`'s request/response interface and
//! does no networking of its own; the arena server wires it to Redis. Nothing
//! is implemented yet.
